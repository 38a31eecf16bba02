# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""EmoLA model configuration: a LLaVA-1.5 configuration plus the facial-prior token."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.llava.configuration_llava import LlavaConfig

from .configuration_facial_prior import FacialPriorConfigMixin
from .faba import FACIAL_PRIOR_DIMS  # re-exported: the prior length of each backend (212 for the released models)


@strict
class EmolaConfig(FacialPriorConfigMixin, LlavaConfig):
    r"""
    Configuration of an EmoLA model: LLaVA-1.5 (CLIP ViT-L/14-336 + `mlp2x_gelu` projector + Vicuna) with a facial
    prior expert whose landmark vector becomes one extra token right after the image tokens.

    Defaults reproduce EmoLA-7B of the paper (InsightFace 2d106 landmarks, 212 numbers).

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*): the vision tower (default CLIP ViT-L/14-336).
        text_config (`dict` or `PreTrainedConfig`, *optional*): the language model (default Llama/Vicuna-7B).
        image_token_index (`int`, *optional*, defaults to 32000): id of the `<image>` placeholder.
        facial_prior_token_id (`int`, *optional*, defaults to 32002): id of the `<facial_prior>` placeholder.
        facial_prior_dim (`int`, *optional*, defaults to 212): length of the landmark vector (136 for 68 points).
        facial_prior_backend (`str`, *optional*, defaults to `"insightface_2d106"`): extractor that produced the
            features the model was trained on.
        use_facial_prior (`bool`, *optional*, defaults to `True`): `False` gives a plain LLaVA-1.5 (ablations).

    Example:

    ```python
    >>> from transformers_emola import EmolaConfig
    >>> config = EmolaConfig(facial_prior_dim=136, facial_prior_backend="face_alignment")
    >>> config.facial_prior_dim, config.text_config.hidden_size
    (136, 4096)

    ```"""

    model_type = "emola"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "intermediate_size": 4096,
                "hidden_size": 1024,
                "patch_size": 14,
                "image_size": 336,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "vocab_size": 32000,
                "projection_dim": 768,
            },
        ),
        # llava-hf/llava-1.5-7b-hf pads Vicuna's vocabulary to 32064: <image>=32000, <pad>=32001.
        "text_config": SubConfigSpec(
            config_class=AutoConfig, model_type="llama", init_kwargs={"vocab_size": 32064, "pad_token_id": 32001}
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_index: int = 32000
    image_seq_length: int = 576
    facial_prior_token_id: int = 32002
    facial_prior_dim: int = 212
    facial_prior_backend: str = "insightface_2d106"
    use_facial_prior: bool = True

    @classmethod
    def from_llava_config(cls, llava_config: LlavaConfig, **emola_kwargs) -> "EmolaConfig":
        """The EmoLA configuration of a LLaVA-1.5 model plus the facial-prior settings in `emola_kwargs`."""
        return cls.from_base_config(llava_config, **emola_kwargs)


__all__ = ["EmolaConfig", "FACIAL_PRIOR_DIMS"]
