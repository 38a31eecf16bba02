"""The model to fine-tune: an EmoLA checkpoint, or EmoLA built on an HF LLaVA-1.5 checkpoint (the paper's start)."""

from __future__ import annotations

import os

import torch

from ..configuration_emola import EmolaConfig
from ..modeling_emola import EmolaForConditionalGeneration
from ..processing_emola import EmolaProcessor
from .trainer import PROJECTOR_MODULES

__all__ = ["LLAVA_LEGACY_KEY_MAPPING", "emola_processor_from_llava", "load_model_and_processor"]

# llava-hf checkpoints saved before transformers 4.52 (llava-hf/llava-1.5-7b-hf among them) use these key prefixes.
LLAVA_LEGACY_KEY_MAPPING = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}


def emola_processor_from_llava(
    llava_processor_or_path,
    use_facial_prior: bool = True,
    pad_to_square: bool = True,
    facial_prior_token: str = "<facial_prior>",
    **from_pretrained_kwargs,
) -> EmolaProcessor:
    """An `EmolaProcessor` from an HF LLaVA-1.5 processor: same CLIP preprocessing and tokenizer, plus the
    `<facial_prior>` token (added when missing; id 32002 for llava-hf/llava-1.5-7b-hf) and EmoLA's chat template."""
    if isinstance(llava_processor_or_path, (str, os.PathLike)):
        from transformers import AutoProcessor

        llava_processor = AutoProcessor.from_pretrained(llava_processor_or_path, **from_pretrained_kwargs)
    else:
        llava_processor = llava_processor_or_path
    tokenizer = llava_processor.tokenizer
    if use_facial_prior and facial_prior_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [facial_prior_token]},
                                     replace_extra_special_tokens=False)
    return EmolaProcessor(
        image_processor=llava_processor.image_processor,
        tokenizer=tokenizer,
        patch_size=llava_processor.patch_size,
        vision_feature_select_strategy=llava_processor.vision_feature_select_strategy,
        num_additional_image_tokens=llava_processor.num_additional_image_tokens,
        image_token=llava_processor.image_token,
        facial_prior_token=facial_prior_token,
        use_facial_prior=use_facial_prior,
        pad_to_square=pad_to_square,
    )


def load_model_and_processor(
    model_name_or_path: str,
    *,
    use_facial_prior: bool = True,
    facial_prior_dim: int | None = None,
    facial_prior_backend: str = "insightface_2d106",
    dtype: str | torch.dtype | None = None,
    quantization_config=None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    direct_llava_load: bool | None = None,
) -> tuple[EmolaForConditionalGeneration, EmolaProcessor]:
    """The model to fine-tune and its processor, from an EmoLA checkpoint or an HF LLaVA-1.5 checkpoint
    (`from_llava`: EmoLA's starting point, with a fresh prior projector of `facial_prior_dim`).

    `direct_llava_load` (default: when quantizing or under DeepSpeed ZeRO-3) loads a LLaVA checkpoint straight
    into `EmolaForConditionalGeneration.from_pretrained` instead of `from_llava`; the weights are the same.
    """
    from transformers import AutoConfig, AutoProcessor

    if isinstance(dtype, str) and dtype not in ("auto", None):
        dtype = getattr(torch, dtype)
    load_kwargs = {"revision": revision} if revision else {}
    model_kwargs = dict(load_kwargs, dtype=dtype if dtype is not None else "auto")
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        # The projectors are trained in full and CLIP stays exact: keep them out of the 4/8-bit layers.
        skip = list(getattr(quantization_config, "llm_int8_skip_modules", None) or [])
        quantization_config.llm_int8_skip_modules = sorted(set(skip) | {"lm_head", "vision_tower", *PROJECTOR_MODULES})
        model_kwargs["quantization_config"] = quantization_config
    config = AutoConfig.from_pretrained(model_name_or_path, **load_kwargs)
    if config.model_type == "emola":
        if config.use_facial_prior != use_facial_prior:
            raise ValueError(f"{model_name_or_path} was built with use_facial_prior={config.use_facial_prior}; "
                             f"--use_facial_prior {use_facial_prior} needs a matching checkpoint (or a LLaVA one)")
        if facial_prior_dim is not None and use_facial_prior and config.facial_prior_dim != facial_prior_dim:
            raise ValueError(f"{model_name_or_path} takes {config.facial_prior_dim}-d facial priors but the data "
                             f"holds {facial_prior_dim}-d ones (backend {config.facial_prior_backend!r})")
        model = EmolaForConditionalGeneration.from_pretrained(model_name_or_path, **model_kwargs)
        processor = AutoProcessor.from_pretrained(model_name_or_path, **load_kwargs)
        return model, processor
    if config.model_type != "llava":
        raise ValueError(f"{model_name_or_path} is a {config.model_type!r} model; expected an EmoLA or an HF "
                         "LLaVA-1.5 checkpoint (e.g. llava-hf/llava-1.5-7b-hf)")
    processor = emola_processor_from_llava(model_name_or_path, use_facial_prior=use_facial_prior, **load_kwargs)
    emola_kwargs = {
        "facial_prior_dim": facial_prior_dim or 212,
        "facial_prior_backend": facial_prior_backend,
        "use_facial_prior": use_facial_prior,
        "facial_prior_token_id": processor.facial_prior_token_id if use_facial_prior else config.image_token_id + 2,
    }
    from transformers.integrations import is_deepspeed_zero3_enabled

    if direct_llava_load is None:
        direct_llava_load = quantization_config is not None or is_deepspeed_zero3_enabled()
    if direct_llava_load:
        # Loading the LLaVA weights straight into EmoLA lets transformers quantize or shard them on the way in;
        # from_llava would first hold a full LLaVA copy. The renamings turn the legacy llava-hf layout into ours.
        model = EmolaForConditionalGeneration.from_pretrained(
            model_name_or_path, config=EmolaConfig.from_llava_config(config, **emola_kwargs),
            key_mapping=LLAVA_LEGACY_KEY_MAPPING, **model_kwargs
        )
    else:
        model = EmolaForConditionalGeneration.from_llava(model_name_or_path, **emola_kwargs, **model_kwargs)
    model.name_or_path = model_name_or_path  # recorded as the adapter's base model
    return model, processor
