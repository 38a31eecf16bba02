# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""EmoLA on Idefics3 (and SmolVLM, whose checkpoints are Idefics3): the facial-prior token right after each
image's closing `<fake_token_around_image>`.

The binding only names classes: the facial-prior delta is `modeling_facial_prior.py` (model),
`configuration_facial_prior.py` and `processing_facial_prior.py`. Idefics3's own forward then runs unchanged and
finds its image placeholders in the embeddings, as for any `inputs_embeds` call. With image splitting, the prior
follows the global image, which closes the image's tiles.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.models.idefics3.configuration_idefics3 import Idefics3Config
from transformers.models.idefics3.modeling_idefics3 import Idefics3ForConditionalGeneration, Idefics3Model
from transformers.models.idefics3.processing_idefics3 import Idefics3Processor

from .configuration_facial_prior import FacialPriorConfigMixin
from .modeling_facial_prior import FacialPriorForConditionalGenerationMixin, FacialPriorModelMixin
from .processing_facial_prior import FacialPriorProcessorMixin


@strict
class EmolaIdefics3Config(FacialPriorConfigMixin, Idefics3Config):
    r"""
    An Idefics3 / SmolVLM configuration plus the facial prior (see `FacialPriorConfigMixin` for its settings).

    Example:

    ```python
    >>> from transformers_emola import EmolaIdefics3Config
    >>> config = EmolaIdefics3Config(facial_prior_token_id=49190, facial_prior_dim=136)
    >>> config.model_type, config.facial_prior_dim
    ('emola_idefics3', 136)

    ```"""

    model_type = "emola_idefics3"


class EmolaIdefics3Model(FacialPriorModelMixin, Idefics3Model):
    """Idefics3's backbone whose `<facial_prior>` placeholders receive the projected landmark vectors."""

    config_class = EmolaIdefics3Config


class EmolaIdefics3ForConditionalGeneration(FacialPriorForConditionalGenerationMixin, Idefics3ForConditionalGeneration):
    r"""
    Idefics3 / SmolVLM with EmoLA's facial prior: `forward` and `generate` take Idefics3's arguments plus
    `facial_priors` (`(num_images, facial_prior_dim)`) and return its outputs plus `facial_prior_hidden_states`.
    Build one from an Idefics3 model with `transformers_emola.add_facial_prior`.
    """

    config_class = EmolaIdefics3Config
    facial_prior_model_class = EmolaIdefics3Model


class EmolaIdefics3Processor(FacialPriorProcessorMixin, Idefics3Processor):
    r"""
    Idefics3's processor plus one `<facial_prior>` token after each image's closing `<fake_token_around_image>` and
    `facial_priors` in its output. Build one with `add_facial_prior_token`.
    """

    facial_prior_follows = "<fake_token_around_image>"

    def __init__(
        self,
        image_processor,
        tokenizer=None,
        image_seq_len: int = 169,
        chat_template=None,
        facial_prior_token="<facial_prior>",
        use_facial_prior=True,
        facial_prior_extractor=None,
        **kwargs,
    ):
        super().__init__(
            image_processor,
            tokenizer,
            image_seq_len=image_seq_len,
            chat_template=chat_template,
            facial_prior_token=facial_prior_token,
            use_facial_prior=use_facial_prior,
            facial_prior_extractor=facial_prior_extractor,
            **kwargs,
        )


__all__ = [
    "EmolaIdefics3Config",
    "EmolaIdefics3ForConditionalGeneration",
    "EmolaIdefics3Model",
    "EmolaIdefics3Processor",
]
