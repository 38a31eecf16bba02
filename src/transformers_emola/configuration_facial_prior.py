# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""The facial-prior settings a VLM configuration carries, shared by EmoLA on every base family.

A family's EmoLA configuration is its base configuration plus these four fields and its own `model_type`
(`class EmolaQwen2_5_VLConfig(FacialPriorConfigMixin, Qwen2_5_VLConfig)`), so a saved checkpoint names the family
and the prior, and loads through the Auto classes once `transformers_emola` is imported.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class FacialPriorConfigMixin(PreTrainedConfig):
    r"""
    Args:
        facial_prior_token_id (`int`, *optional*): id of the `<facial_prior>` placeholder; required when
            `use_facial_prior` (`add_facial_prior` sets it).
        facial_prior_dim (`int`, *optional*, defaults to 136): length of the landmark vector (212 for InsightFace
            2d106, 136 for 68 points).
        facial_prior_backend (`str`, *optional*, defaults to `"face_alignment"`): the `FacialPriorExtractor` backend
            whose features the model was trained on.
        use_facial_prior (`bool`, *optional*, defaults to `True`): `False` gives the plain base model (ablations).
    """

    facial_prior_token_id: int | None = None
    facial_prior_dim: int = 136
    facial_prior_backend: str = "face_alignment"
    use_facial_prior: bool = True

    @classmethod
    def from_base_config(cls, base_config: PreTrainedConfig, **facial_prior_kwargs) -> FacialPriorConfigMixin:
        """This family's EmoLA configuration: every setting of `base_config` plus the prior settings given."""
        values = base_config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            values.pop(key, None)
        return cls(**values, **facial_prior_kwargs)

    def validate_facial_prior(self):
        """Part of `@strict` validation: the prior placeholder must be a real, distinct token."""
        if self.facial_prior_dim <= 0:
            raise ValueError(f"facial_prior_dim must be positive, got {self.facial_prior_dim}")
        image_token_id = getattr(self, "image_token_id", None)
        token_id = self.facial_prior_token_id
        if self.use_facial_prior and token_id is not None and token_id == image_token_id:
            raise ValueError(
                f"facial_prior_token_id ({self.facial_prior_token_id}) must differ from the image token id"
            )


__all__ = ["FacialPriorConfigMixin"]
