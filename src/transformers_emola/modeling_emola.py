# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""PyTorch EmoLA: LLaVA-1.5 plus one facial-prior token.

The whole delta on `transformers`' LLaVA is in `modeling_facial_prior.py` (a second `mlp2x_gelu` projector, the
`<facial_prior>` placeholder mask, the swap into the input embeddings, the checks and the generate plumbing); the
classes here bind it to LLaVA. LLaVA's own forward, image handling and output objects run unchanged, and the vision
tower, multimodal projector, language model and LM head are LLaVA's modules, so LLaVA-1.5 checkpoints load into
EmoLA key for key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.generation import GenerationMixin
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)

from .configuration_emola import EmolaConfig
from .modeling_facial_prior import (
    EmolaFacialPriorProjector,
    FacialPriorForConditionalGenerationMixin,
    FacialPriorModelMixin,
    register_facial_prior_output,
)


@dataclass
class EmolaModelOutputWithPast(LlavaModelOutputWithPast):
    r"""
    facial_prior_hidden_states (`torch.Tensor` of shape `(num_images, hidden_size)`, *optional*):
        The projected facial-prior embeddings that were placed at the `<facial_prior>` tokens.
    """

    facial_prior_hidden_states: torch.Tensor | None = None


@dataclass
class EmolaCausalLMOutputWithPast(LlavaCausalLMOutputWithPast):
    r"""
    facial_prior_hidden_states (`torch.Tensor` of shape `(num_images, hidden_size)`, *optional*):
        The projected facial-prior embeddings that were placed at the `<facial_prior>` tokens.
    """

    facial_prior_hidden_states: torch.Tensor | None = None


register_facial_prior_output(LlavaModelOutputWithPast, EmolaModelOutputWithPast)
register_facial_prior_output(LlavaCausalLMOutputWithPast, EmolaCausalLMOutputWithPast)


class EmolaPreTrainedModel(LlavaPreTrainedModel):
    config: EmolaConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]


class EmolaModel(FacialPriorModelMixin, LlavaModel):
    """LLaVA-1.5 backbone whose `<facial_prior>` placeholders receive the projected landmark vectors.

    The prior is handled here as well as in the LM-head wrapper because TRL, PEFT and `generate` call this inner
    model directly.
    """

    config_class = EmolaConfig


class EmolaForConditionalGeneration(
    FacialPriorForConditionalGenerationMixin, EmolaPreTrainedModel, LlavaForConditionalGeneration, GenerationMixin
):
    r"""
    EmoLA: LLaVA-1.5 with a facial prior expert, for facial action unit and emotion description.

    `forward` and `generate` take LLaVA's arguments plus `facial_priors` (`(num_images, facial_prior_dim)`), and
    return LLaVA's outputs plus `facial_prior_hidden_states`.

    Example (a tiny random model, so the text is noise; load a real checkpoint with `from_pretrained`):

    ```python
    >>> import torch
    >>> from transformers_emola import build_tiny_emola
    >>> model, processor = build_tiny_emola()
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What AUs are conveyed by this face?"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> from PIL import Image
    >>> image = Image.new("RGB", (32, 32), (200, 150, 120))
    >>> inputs = processor(images=image, text=prompt, facial_priors=torch.zeros(1, 136), return_tensors="pt")
    >>> output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    >>> output.shape[1] <= inputs["input_ids"].shape[1] + 5
    True

    ```"""

    config_class = EmolaConfig

    def __init__(self, config: EmolaConfig):
        # LLaVA's own __init__ would build a LlavaModel; EmoLA's inner model is the one with the prior projector.
        EmolaPreTrainedModel.__init__(self, config)
        self.model = EmolaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        placeholders = [config.image_token_id] + ([config.facial_prior_token_id] if config.use_facial_prior else [])
        self.suppress_placeholder_tokens(placeholders)

    @classmethod
    def from_llava(
        cls,
        llava_model_or_path,
        facial_prior_dim: int = 212,
        facial_prior_backend: str = "insightface_2d106",
        facial_prior_token_id: int | None = None,
        use_facial_prior: bool = True,
        **from_pretrained_kwargs,
    ) -> "EmolaForConditionalGeneration":
        """Build EmoLA from an HF LLaVA-1.5 model (llava-hf layout), the paper's starting point.

        Every LLaVA weight is copied exactly; only the facial-prior projector is freshly initialised. The
        `<facial_prior>` id defaults to the first id after the LLaVA tokenizer's `<image>` and `<pad>` (32002 for
        llava-hf/llava-1.5-7b-hf), which fits in its padded 32064-row embedding without resizing.
        """
        if isinstance(llava_model_or_path, (str, bytes)) or hasattr(llava_model_or_path, "__fspath__"):
            llava = LlavaForConditionalGeneration.from_pretrained(llava_model_or_path, **from_pretrained_kwargs)
        else:
            llava = llava_model_or_path
        if facial_prior_token_id is None:
            facial_prior_token_id = llava.config.image_token_id + 2
        vocab_size = llava.config.text_config.vocab_size
        if use_facial_prior and facial_prior_token_id >= vocab_size:
            raise ValueError(
                f"facial_prior_token_id {facial_prior_token_id} does not fit the LLaVA vocabulary ({vocab_size}); "
                "add the token to the tokenizer and call resize_token_embeddings first"
            )
        config = EmolaConfig.from_llava_config(
            llava.config,
            facial_prior_dim=facial_prior_dim,
            facial_prior_backend=facial_prior_backend,
            facial_prior_token_id=facial_prior_token_id,
            use_facial_prior=use_facial_prior,
        )
        model = cls(config).to(dtype=llava.dtype)
        missing, unexpected = model.load_state_dict(llava.state_dict(), strict=False)
        not_prior = [key for key in missing if "facial_prior_projector" not in key]
        if not_prior or unexpected:
            raise ValueError(f"LLaVA weights did not map onto EmoLA: missing {not_prior}, unexpected {unexpected}")
        return model


__all__ = [
    "EmolaCausalLMOutputWithPast",
    "EmolaFacialPriorProjector",
    "EmolaModelOutputWithPast",
    "EmolaForConditionalGeneration",
    "EmolaModel",
    "EmolaPreTrainedModel",
]
