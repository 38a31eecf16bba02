# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""The facial-prior delta on a VLM processor: one `<facial_prior>` token after each image, and the priors themselves.

Every transformers VLM processor expands each image placeholder of the prompt into that image's visual tokens
(`ProcessorMixin.get_text_with_replacements`). EmoLA adds one step: right after an image's block, one
`<facial_prior>` token, whose embedding the model replaces with the projected landmark vector. Where the block
ends is the one thing a family states (`facial_prior_follows`): the token that closes an image in that family's
prompt format (`<|vision_end|>` for Qwen2.5-VL, `<fake_token_around_image>` for Idefics3, `<end_of_image>` for
Gemma 3), or `None` where the visual tokens simply stop (LLaVA). The priors come with the call (`facial_priors=`)
or from a `FacialPriorExtractor` configured on the processor and saved with it.

A family opts in with `class EmolaQwen2_5_VLProcessor(FacialPriorProcessorMixin, Qwen2_5_VLProcessor)` and an
`__init__` that lists its own settings (transformers saves a processor's `__init__` arguments).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.image_utils import make_flat_list_of_images

from .facial_prior.priors import as_prior_array


class FacialPriorProcessorMixin:
    """Places `<facial_prior>` after each image's visual tokens and returns `facial_priors` (one row per image)."""

    #: The token that closes an image's block in this family's prompt format; `None`: the visual tokens end it.
    facial_prior_follows: str | None = None

    def __init__(
        self,
        *args,
        facial_prior_token: str = "<facial_prior>",
        use_facial_prior: bool = True,
        facial_prior_extractor=None,
        **kwargs,
    ):
        self.facial_prior_token = facial_prior_token
        self.use_facial_prior = use_facial_prior
        self._facial_prior_extractor = None
        if facial_prior_extractor is not None and not isinstance(facial_prior_extractor, dict):
            self._facial_prior_extractor = facial_prior_extractor
            facial_prior_extractor = facial_prior_extractor.to_dict()
        self.facial_prior_extractor = facial_prior_extractor
        super().__init__(*args, **kwargs)
        tokenizer = self.tokenizer
        self.facial_prior_token_id = tokenizer.convert_tokens_to_ids(facial_prior_token)
        if use_facial_prior and self.facial_prior_token_id in (None, tokenizer.unk_token_id):
            raise ValueError(
                f"The tokenizer has no {facial_prior_token!r} token; add it with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{facial_prior_token!r}]}}) or build "
                "the processor with transformers_emola.add_facial_prior_token(processor)"
            )

    def _adjust_assistant_masks_indices(self, processed_dict, generation_indices):
        """Upstream's answer-mask step, on lists: it compares token offsets one by one, which on the tensors that
        `return_tensors="pt"` gives costs most of a training batch's collation time on CPU."""
        offsets = processed_dict.get("offset_mapping")
        if isinstance(offsets, torch.Tensor):
            processed_dict["offset_mapping"] = offsets.tolist()
        return super()._adjust_assistant_masks_indices(processed_dict, generation_indices)

    # ---- facial priors -------------------------------------------------------------------------------------------
    def get_facial_prior_extractor(self):
        """The extractor used when `facial_priors` is not given, built once from the saved configuration."""
        if self._facial_prior_extractor is None and self.facial_prior_extractor is not None:
            from .facial_prior.extractor import FacialPriorExtractor

            self._facial_prior_extractor = FacialPriorExtractor.from_dict(self.facial_prior_extractor)
        return self._facial_prior_extractor

    def set_facial_prior_extractor(self, extractor) -> None:
        """Use `extractor` (a `FacialPriorExtractor`) for images given without priors, and save its settings."""
        self._facial_prior_extractor = extractor
        self.facial_prior_extractor = extractor.to_dict() if extractor is not None else None

    def _prepare_facial_priors(self, images: list, facial_priors) -> torch.Tensor:
        if facial_priors is None:
            extractor = self.get_facial_prior_extractor()
            if extractor is None:
                raise ValueError(
                    "facial_priors were not given and this processor has no facial_prior_extractor; pass "
                    "facial_priors=(num_images, dim) or configure one with processor.set_facial_prior_extractor()"
                )
            facial_priors = extractor(images)
        return torch.from_numpy(as_prior_array(facial_priors, num_images=len(images)))

    # ---- the placeholder -----------------------------------------------------------------------------------------
    def _facial_prior_position(self, sample: str, start: int, end: int) -> int:
        """Where the prior goes for the image expanded at `sample[start:end]`: after the token closing its block."""
        closing = self.facial_prior_follows
        if closing:
            inside = sample.rfind(closing, start, end)
            if inside >= 0:
                return inside + len(closing)
            if sample.startswith(closing, end):
                return end + len(closing)
        return end

    def get_text_with_replacements(self, text, images_replacements=(), *args, **kwargs):
        """The base expansion, then one `<facial_prior>` after each image.

        In the returned offsets an image's expansion ends with its prior token (for Qwen2.5-VL its placeholder
        then also covers the `<|vision_end|>` the prior follows), so that what is computed from them (the
        assistant-token masks of `apply_chat_template`) accounts for the inserted tokens.
        """
        text, batch_offsets = super().get_text_with_replacements(text, images_replacements, *args, **kwargs)
        if not self.use_facial_prior:
            return text, batch_offsets
        token = self.facial_prior_token
        for index, offsets in enumerate(batch_offsets):
            shift = 0
            for offset in offsets:
                start, end = (position + shift for position in offset["new_span"])
                offset["new_span"] = (start, end)
                if offset["type"] != "image":
                    continue
                position = self._facial_prior_position(text[index], start, end)
                text[index] = text[index][:position] + token + text[index][position:]
                if position > end:  # the closing token after the replacement becomes part of the placeholder
                    closing = text[index][end:position]
                    offset["span"] = (offset["span"][0], offset["span"][1] + len(closing))
                    offset["text"] += closing
                offset["new_span"] = (start, max(position, end) + len(token))
                offset["replacement"] = text[index][start : offset["new_span"][1]]
                shift += len(token)
        return text, batch_offsets

    # ---- the call ------------------------------------------------------------------------------------------------
    def __call__(self, images=None, text=None, *args, facial_priors=None, **kwargs):
        r"""
        The base processor's call, plus:

        facial_priors (`np.ndarray`, `torch.Tensor` or nested lists of shape `(num_images, dim)`, *optional*):
            One landmark vector per image, in the order the images appear in the text. When omitted and the
            processor uses the prior, they are extracted from the images with the configured `FacialPriorExtractor`.
        """
        flat_images = None
        if images is not None:
            images = self.image_processor.fetch_images(images)
            flat_images = make_flat_list_of_images(images)
        if facial_priors is not None and not self.use_facial_prior:
            raise ValueError("facial_priors were given to a processor with use_facial_prior=False")
        priors = None
        if self.use_facial_prior and flat_images is not None:
            priors = self._prepare_facial_priors(flat_images, facial_priors)
        elif facial_priors is not None:
            raise ValueError("facial_priors were given without images; pass one prior per image")
        outputs = super().__call__(images, text, *args, **kwargs)
        if priors is not None:
            return_tensors = kwargs.get("return_tensors")
            if return_tensors == "pt":
                outputs["facial_priors"] = priors
            elif return_tensors == "np":
                outputs["facial_priors"] = priors.numpy()
            else:
                outputs["facial_priors"] = priors.tolist()
        return outputs

    @property
    def model_input_names(self) -> list[str]:
        names = list(super().model_input_names)
        return names + (["facial_priors"] if self.use_facial_prior else [])

    def parse_affect(self, text: str, task: str = "both", au_set: str = "faba"):
        """AUs (number, name, supporting sentence), emotion and parser flags of a generated answer, read with the
        strict REGE parsers (see `transformers_emola.metrics.parse_affect`)."""
        from .metrics.parsing import parse_affect

        return parse_affect(text, task=task, au_set=au_set)

    def to_dict(self) -> dict[str, Any]:
        # The live extractor (model weights, detectors) is rebuilt from its settings, never serialised.
        extractor = self.__dict__.pop("_facial_prior_extractor", None)
        try:
            return super().to_dict()
        finally:
            self._facial_prior_extractor = extractor


__all__ = ["FacialPriorProcessorMixin"]
