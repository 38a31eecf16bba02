# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""EmoLA on Gemma 3: the facial-prior token right after each image's `<end_of_image>`.

The binding only names classes: the facial-prior delta is `modeling_facial_prior.py` (model),
`configuration_facial_prior.py` and `processing_facial_prior.py`. Gemma 3's own forward then runs unchanged: it
finds its image placeholders in the embeddings, and its bidirectional attention inside an image block reads
`token_type_ids`, where the prior is text (0), so image tokens never attend to it.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.models.gemma3.configuration_gemma3 import Gemma3Config
from transformers.models.gemma3.modeling_gemma3 import Gemma3ForConditionalGeneration, Gemma3Model
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

from .configuration_facial_prior import FacialPriorConfigMixin
from .modeling_facial_prior import FacialPriorForConditionalGenerationMixin, FacialPriorModelMixin
from .processing_facial_prior import FacialPriorProcessorMixin


@strict
class EmolaGemma3Config(FacialPriorConfigMixin, Gemma3Config):
    r"""
    A Gemma 3 configuration plus the facial prior (see `FacialPriorConfigMixin` for its settings).

    Example:

    ```python
    >>> from transformers_emola import EmolaGemma3Config
    >>> config = EmolaGemma3Config(facial_prior_token_id=262145, facial_prior_dim=136)
    >>> config.model_type, config.facial_prior_dim
    ('emola_gemma3', 136)

    ```"""

    model_type = "emola_gemma3"


class EmolaGemma3Model(FacialPriorModelMixin, Gemma3Model):
    """Gemma 3's backbone whose `<facial_prior>` placeholders receive the projected landmark vectors."""

    config_class = EmolaGemma3Config


class EmolaGemma3ForConditionalGeneration(FacialPriorForConditionalGenerationMixin, Gemma3ForConditionalGeneration):
    r"""
    Gemma 3 with EmoLA's facial prior: `forward` and `generate` take Gemma 3's arguments plus `facial_priors`
    (`(num_images, facial_prior_dim)`) and return its outputs plus `facial_prior_hidden_states`. Build one from a
    Gemma 3 model with `transformers_emola.add_facial_prior`.
    """

    config_class = EmolaGemma3Config
    facial_prior_model_class = EmolaGemma3Model


class EmolaGemma3Processor(FacialPriorProcessorMixin, Gemma3Processor):
    r"""
    Gemma 3's processor plus one `<facial_prior>` token after each image's `<end_of_image>` (with pan-and-scan, after
    the last crop's) and `facial_priors` in its output. Build one with `add_facial_prior_token`.
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        chat_template=None,
        image_seq_length: int = 256,
        facial_prior_token="<facial_prior>",
        use_facial_prior=True,
        facial_prior_extractor=None,
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            chat_template=chat_template,
            image_seq_length=image_seq_length,
            facial_prior_token=facial_prior_token,
            use_facial_prior=use_facial_prior,
            facial_prior_extractor=facial_prior_extractor,
            **kwargs,
        )

    @property
    def facial_prior_follows(self) -> str:
        return self.tokenizer.eoi_token


__all__ = [
    "EmolaGemma3Config",
    "EmolaGemma3ForConditionalGeneration",
    "EmolaGemma3Model",
    "EmolaGemma3Processor",
]
