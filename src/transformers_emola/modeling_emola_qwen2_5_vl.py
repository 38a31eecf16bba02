# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""EmoLA on Qwen2.5-VL: the facial-prior token right after each image's `<|vision_end|>`.

The binding only names classes: the facial-prior delta is `modeling_facial_prior.py` (model),
`configuration_facial_prior.py` and `processing_facial_prior.py`. Qwen2.5-VL's own forward then runs unchanged,
M-RoPE included: it reads the ids next to the embeddings to place its image tokens and their 3-D positions, so the
prior is handed over with the ids (`facial_prior_keeps_input_ids`). The prior token is text to M-RoPE, one
position after the image block.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from .configuration_facial_prior import FacialPriorConfigMixin
from .modeling_facial_prior import FacialPriorForConditionalGenerationMixin, FacialPriorModelMixin
from .processing_facial_prior import FacialPriorProcessorMixin


@strict
class EmolaQwen2_5_VLConfig(FacialPriorConfigMixin, Qwen2_5_VLConfig):
    r"""
    A Qwen2.5-VL configuration plus the facial prior (see `FacialPriorConfigMixin` for the four prior settings).

    Example:

    ```python
    >>> from transformers_emola import EmolaQwen2_5_VLConfig
    >>> config = EmolaQwen2_5_VLConfig(facial_prior_token_id=151665, facial_prior_dim=136)
    >>> config.model_type, config.facial_prior_dim, config.image_token_id
    ('emola_qwen2_5_vl', 136, 151655)

    ```"""

    model_type = "emola_qwen2_5_vl"


class EmolaQwen2_5_VLModel(FacialPriorModelMixin, Qwen2_5_VLModel):
    """Qwen2.5-VL's backbone whose `<facial_prior>` placeholders receive the projected landmark vectors."""

    config_class = EmolaQwen2_5_VLConfig
    facial_prior_keeps_input_ids = True  # image placeholders and M-RoPE positions are read from the ids


class EmolaQwen2_5_VLForConditionalGeneration(
    FacialPriorForConditionalGenerationMixin, Qwen2_5_VLForConditionalGeneration
):
    r"""
    Qwen2.5-VL with EmoLA's facial prior: `forward` and `generate` take Qwen2.5-VL's arguments plus `facial_priors`
    (`(num_images, facial_prior_dim)`) and return its outputs plus `facial_prior_hidden_states`. Build one from a
    Qwen2.5-VL model with `transformers_emola.add_facial_prior`.
    """

    config_class = EmolaQwen2_5_VLConfig
    facial_prior_model_class = EmolaQwen2_5_VLModel


class EmolaQwen2_5_VLProcessor(FacialPriorProcessorMixin, Qwen2_5_VLProcessor):
    r"""
    Qwen2.5-VL's processor plus one `<facial_prior>` token after each image's `<|vision_start|>...<|vision_end|>`
    block and `facial_priors` in its output. Images only: the prior is one landmark vector per image, so no video
    processor is carried (which also keeps torchvision optional). Build one with `add_facial_prior_token`.
    """

    facial_prior_follows = "<|vision_end|>"

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        facial_prior_token="<facial_prior>",
        use_facial_prior=True,
        facial_prior_extractor=None,
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            chat_template=chat_template,
            facial_prior_token=facial_prior_token,
            use_facial_prior=use_facial_prior,
            facial_prior_extractor=facial_prior_extractor,
            **kwargs,
        )


__all__ = [
    "EmolaQwen2_5_VLConfig",
    "EmolaQwen2_5_VLForConditionalGeneration",
    "EmolaQwen2_5_VLModel",
    "EmolaQwen2_5_VLProcessor",
]
