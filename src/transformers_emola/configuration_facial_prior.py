# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""The facial-prior settings a VLM configuration carries, shared by EmoLA on every base family.

A family's EmoLA configuration is its base configuration plus these fields and its own `model_type`
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
        facial_prior_mean (`list[float]`, *optional*): per-dimension mean subtracted from each prior before its
            projector; `None` (the released checkpoints) leaves the priors as extracted.
        facial_prior_std (`list[float]`, *optional*): per-dimension scale the (centred) priors are divided by;
            `None` leaves them unscaled. Training with `--facial_prior_normalization standardize` stores both,
            computed from the training priors, so that a saved model normalises its inputs itself.
    """

    facial_prior_token_id: int | None = None
    facial_prior_dim: int = 136
    facial_prior_backend: str = "face_alignment"
    use_facial_prior: bool = True
    facial_prior_mean: list[float] | None = None
    facial_prior_std: list[float] | None = None

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
        for name in ("facial_prior_mean", "facial_prior_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.facial_prior_dim:
                raise ValueError(f"{name} must have facial_prior_dim={self.facial_prior_dim} entries, got {len(values)}")
        if self.facial_prior_std is not None and min(self.facial_prior_std) <= 0:
            raise ValueError("facial_prior_std must be positive in every dimension (it divides the priors)")


__all__ = ["FacialPriorConfigMixin"]
