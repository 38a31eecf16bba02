"""PyTorch EmoLA: LLaVA-1.5 plus one facial-prior token.

Everything here is the delta on `transformers`' LLaVA: a second `mlp2x_gelu` projector that turns a landmark vector
into one embedding, a placeholder mask for that embedding (the `<facial_prior>` token that the processor puts right
after the image tokens), and the `facial_priors` argument threaded through forward and `generate`. The vision
tower, the multimodal projector, the language model and the LM head are LLaVA's own modules, so LLaVA-1.5
checkpoints load into EmoLA key for key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)
from transformers.utils.generic import can_return_tuple

from .configuration_emola import EmolaConfig


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


class EmolaFacialPriorProjector(nn.Module):
    """`mlp2x_gelu` from the landmark vector to the LLM width: EmoLA's g_theta, trained from scratch."""

    def __init__(self, config: EmolaConfig):
        super().__init__()
        hidden_size = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.facial_prior_dim, hidden_size, bias=config.multimodal_projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden_size, hidden_size, bias=config.multimodal_projector_bias)

    def forward(self, facial_priors: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(facial_priors)))


class EmolaPreTrainedModel(LlavaPreTrainedModel):
    config: EmolaConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]


class EmolaModel(LlavaModel):
    """LLaVA-1.5 backbone whose `<facial_prior>` placeholders receive the projected landmark vectors.

    The logic lives here rather than in the LM-head wrapper because TRL, PEFT and `generate` call this inner model.
    """

    config_class = EmolaConfig

    def __init__(self, config: EmolaConfig):
        super().__init__(config)
        self.facial_prior_projector = EmolaFacialPriorProjector(config) if config.use_facial_prior else None
        self.post_init()

    def get_facial_prior_features(self, facial_priors: torch.Tensor) -> torch.Tensor:
        """Project `(num_images, facial_prior_dim)` landmark vectors to `(num_images, hidden_size)` embeddings."""
        if self.facial_prior_projector is None:
            raise ValueError(
                "facial_priors were given, but this model was built with use_facial_prior=False (a plain LLaVA); "
                "drop the facial_priors argument or use a model trained with the facial prior"
            )
        if facial_priors.ndim != 2 or facial_priors.shape[-1] != self.config.facial_prior_dim:
            raise ValueError(
                f"facial_priors must have shape (num_images, {self.config.facial_prior_dim}) for this model "
                f"(facial_prior_backend={self.config.facial_prior_backend!r}), got {tuple(facial_priors.shape)}"
            )
        weight = self.facial_prior_projector.linear_1.weight
        return self.facial_prior_projector(facial_priors.to(weight.device, weight.dtype))

    def _placeholder_mask(self, token_id: int, input_ids, inputs_embeds) -> torch.Tensor:
        if input_ids is not None:
            return input_ids == token_id
        token_embedding = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == token_embedding).all(-1)

    def tokens_per_image(self, pixel_values: torch.Tensor) -> int:
        """Image tokens one image occupies: its patches, plus the CLS token unless the strategy drops it."""
        patch_size = self.config.vision_config.patch_size
        num_patches = (pixel_values.shape[-2] // patch_size) * (pixel_values.shape[-1] // patch_size)
        return num_patches + (0 if self.config.vision_feature_select_strategy == "default" else 1)

    def _check_image_inputs(self, input_ids, inputs_embeds, pixel_values, mm_encoder_outputs) -> None:
        has_images = pixel_values is not None or (mm_encoder_outputs or {}).get("image") is not None
        if has_images:
            if pixel_values is not None and input_ids is not None:
                num_tokens = int(self._placeholder_mask(self.config.image_token_id, input_ids, inputs_embeds).sum())
                per_image = self.tokens_per_image(pixel_values)
                if num_tokens != pixel_values.shape[0] * per_image:
                    raise ValueError(
                        f"Got {pixel_values.shape[0]} images but {num_tokens} image tokens in input_ids; each image "
                        f"needs {per_image} (use EmolaProcessor to expand every <image>)"
                    )
            return
        if input_ids is not None and bool((input_ids == self.config.image_token_id).any()):
            raise ValueError(
                "input_ids contain <image> placeholders but pixel_values is missing; pass the images' pixel_values"
            )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        facial_priors: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> tuple | EmolaModelOutputWithPast:
        r"""
        facial_priors (`torch.FloatTensor` of shape `(num_images, config.facial_prior_dim)`, *optional*):
            One landmark vector per image (see `FacialPriorExtractor`), placed at the `<facial_prior>` tokens.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        # Placeholders are checked where the prompt is read; a cached decoding step has no images or priors.
        is_prefill = past_key_values is None or past_key_values.get_seq_length() == 0
        if is_prefill:
            self._check_image_inputs(input_ids, inputs_embeds, pixel_values, mm_encoder_outputs)
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_features = None
        mm_encoder_outputs = dict(mm_encoder_outputs) if mm_encoder_outputs is not None else {}
        if mm_encoder_outputs.get("image") is None and pixel_values is not None:
            mm_encoder_outputs["image"] = self.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                image_sizes=image_sizes,
                return_dict=True,
            )
        if mm_encoder_outputs.get("image") is not None:
            image_features = torch.cat(list(mm_encoder_outputs["image"].pooler_output), dim=0)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, image_features=image_features)
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)

        # EmoLA's one addition: the landmark embedding goes where the <facial_prior> placeholder sits.
        prior_features = None
        prior_mask = None
        if self.config.use_facial_prior and (facial_priors is not None or is_prefill):
            prior_mask = self._placeholder_mask(self.config.facial_prior_token_id, input_ids, inputs_embeds)
        if facial_priors is not None:
            prior_features = self.get_facial_prior_features(facial_priors).to(inputs_embeds.device, inputs_embeds.dtype)
            num_placeholders = int(prior_mask.sum())
            if num_placeholders != prior_features.shape[0]:
                raise ValueError(
                    f"Got {prior_features.shape[0]} facial_priors but {num_placeholders} <facial_prior> tokens in "
                    "the input; pass exactly one prior per image"
                )
            inputs_embeds = inputs_embeds.masked_scatter(prior_mask.unsqueeze(-1), prior_features)
        elif is_prefill and prior_mask is not None and bool(prior_mask.any()):
            raise ValueError(
                f"The input has {int(prior_mask.sum())} <facial_prior> tokens but facial_priors is missing; pass "
                "facial_priors (one landmark vector per image) or let EmolaProcessor extract them"
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return EmolaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            facial_prior_hidden_states=prior_features,
        )


class EmolaForConditionalGeneration(EmolaPreTrainedModel, LlavaForConditionalGeneration):
    r"""
    EmoLA: LLaVA-1.5 with a facial prior expert, for facial action unit and emotion description.

    Example (a tiny random model, so the text is noise; load a real checkpoint with `from_pretrained`):

    ```python
    >>> import torch
    >>> from transformers_emola.testing_utils import build_tiny_emola
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
        EmolaPreTrainedModel.__init__(self, config)
        self.model = EmolaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        # Placeholders are inputs only: a generated <image>/<facial_prior> would ask for features nobody has.
        placeholders = [config.image_token_id] + ([config.facial_prior_token_id] if config.use_facial_prior else [])
        suppressed = list(self.generation_config.suppress_tokens or [])
        self.generation_config.suppress_tokens = suppressed + [t for t in placeholders if t not in suppressed]

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        facial_priors: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> tuple | EmolaCausalLMOutputWithPast:
        r"""
        facial_priors (`torch.FloatTensor` of shape `(num_images, config.facial_prior_dim)`, *optional*):
            One landmark vector per image, placed at the `<facial_prior>` tokens.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Language-modelling labels; -100 marks positions without loss (prompt, image and prior tokens).
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            facial_priors=facial_priors,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs[0], logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return EmolaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            facial_prior_hidden_states=outputs.facial_prior_hidden_states,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """The prior, like the pixels, is consumed at prefill; cached decoding steps carry no placeholder."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            model_inputs.pop("facial_priors", None)
        return model_inputs

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.LongTensor | None = None, **model_kwargs):
        """Repeat each sample's group of priors, in the order the expanded samples' placeholders appear."""
        facial_priors = model_kwargs.pop("facial_priors", None)
        expanded_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        if facial_priors is not None and expand_size > 1 and input_ids is not None:
            per_sample = (input_ids == self.config.facial_prior_token_id).sum(-1).tolist()
            groups = torch.split(facial_priors, per_sample)
            facial_priors = torch.cat([group for group in groups for _ in range(expand_size)], dim=0)
        if facial_priors is not None:
            model_kwargs["facial_priors"] = facial_priors
        return expanded_ids, model_kwargs

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
    "EmolaFacialPriorProjector",
    "EmolaForConditionalGeneration",
    "EmolaModel",
    "EmolaPreTrainedModel",
]
