"""The model to fine-tune: an EmoLA checkpoint of any family, EmoLA built on an HF LLaVA-1.5 checkpoint (the paper's
start), or, with `add_facial_prior`, EmoLA built on a Qwen2.5-VL, Idefics3/SmolVLM or Gemma 3 checkpoint."""

from __future__ import annotations

import os

import torch

from ..configuration_emola import EmolaConfig
from ..configuration_facial_prior import FacialPriorConfigMixin
from .. import families
from ..families import FACIAL_PRIOR_PROJECTOR, _add_token, facial_prior_family
from ..modeling_emola import EmolaForConditionalGeneration
from ..processing_emola import EmolaProcessor

__all__ = [
    "LLAVA_LEGACY_KEY_MAPPING",
    "emola_processor_from_base",
    "emola_processor_from_llava",
    "load_model_and_processor",
    "quantization_skip_modules",
]

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


def emola_processor_from_base(
    base_path: str | os.PathLike,
    use_facial_prior: bool = True,
    facial_prior_token: str = "<facial_prior>",
    **from_pretrained_kwargs,
):
    """The EmoLA processor of a base checkpoint of a supported family (Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3): the
    checkpoint's image processor, tokenizer (plus `<facial_prior>`), chat template and settings, as
    `add_facial_prior_token(AutoProcessor.from_pretrained(base_path))` gives them.

    Loaded straight into the family's EmoLA processor class, so the parts EmoLA does not carry are never loaded
    (Qwen2.5-VL's video processor, which needs torchvision). `use_facial_prior=False` gives the same processor without
    the token (the no-prior baseline).
    """
    from transformers import AutoConfig, AutoTokenizer

    family = facial_prior_family(AutoConfig.from_pretrained(base_path, **from_pretrained_kwargs))
    if family.name == "llava":
        return emola_processor_from_llava(base_path, use_facial_prior=use_facial_prior,
                                          facial_prior_token=facial_prior_token, **from_pretrained_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(base_path, **from_pretrained_kwargs)
    if use_facial_prior:
        _add_token(tokenizer, facial_prior_token)
    return family.processor_class.from_pretrained(
        base_path, tokenizer=tokenizer, facial_prior_token=facial_prior_token, use_facial_prior=use_facial_prior,
        **from_pretrained_kwargs,
    )


def quantization_skip_modules(config) -> list[str]:
    """The modules kept out of 4/8-bit layers: `lm_head`, the vision tower and the projectors trained in full (by
    the names of `config`'s family)."""
    family = facial_prior_family(config)
    leaves = {path.rsplit(".", 1)[-1] for path in (family.vision_tower, family.projector, FACIAL_PRIOR_PROJECTOR)}
    return sorted(leaves | {"lm_head"})


def load_model_and_processor(
    model_name_or_path: str,
    *,
    use_facial_prior: bool = True,
    add_facial_prior: bool = False,
    facial_prior_dim: int | None = None,
    facial_prior_backend: str = "insightface_2d106",
    dtype: str | torch.dtype | None = None,
    quantization_config=None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    direct_llava_load: bool | None = None,
):
    """The model to fine-tune and its processor, from

    - an EmoLA checkpoint of any family (LLaVA's `emola`, `emola_qwen2_5_vl`, ...): loaded as it is;
    - an HF LLaVA-1.5 checkpoint (`from_llava`: EmoLA's starting point, with a fresh prior projector of
      `facial_prior_dim`);
    - with `add_facial_prior=True`, a base checkpoint of the other families (Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3):
      `add_facial_prior` turns it into its EmoLA variant (new `<facial_prior>` token, fresh prior projector) and
      `emola_processor_from_base` its processor. With `use_facial_prior=False` such a base is trained as it is (the
      no-prior baseline of the ablations).

    `direct_llava_load` (default: when quantizing or under DeepSpeed ZeRO-3) loads a LLaVA checkpoint straight
    into `EmolaForConditionalGeneration.from_pretrained` instead of `from_llava`; the weights are the same.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if isinstance(dtype, str) and dtype not in ("auto", None):
        dtype = getattr(torch, dtype)
    load_kwargs = {"revision": revision} if revision else {}
    model_kwargs = dict(load_kwargs, dtype=dtype if dtype is not None else "auto")
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    config = AutoConfig.from_pretrained(model_name_or_path, **load_kwargs)
    try:
        family = facial_prior_family(config)
    except ValueError as error:
        raise ValueError(f"{model_name_or_path} is a {config.model_type!r} model: {error}") from None
    if quantization_config is not None:
        # The projectors are trained in full and the vision tower stays exact: keep them out of the 4/8-bit layers.
        skip = list(getattr(quantization_config, "llm_int8_skip_modules", None) or [])
        quantization_config.llm_int8_skip_modules = sorted(set(skip) | set(quantization_skip_modules(config)))
        model_kwargs["quantization_config"] = quantization_config
    if isinstance(config, FacialPriorConfigMixin):
        if config.use_facial_prior != use_facial_prior:
            raise ValueError(f"{model_name_or_path} was built with use_facial_prior={config.use_facial_prior}; "
                             f"--use_facial_prior {use_facial_prior} needs a matching checkpoint (or a base one)")
        if facial_prior_dim is not None and use_facial_prior and config.facial_prior_dim != facial_prior_dim:
            raise ValueError(f"{model_name_or_path} takes {config.facial_prior_dim}-d facial priors but the data "
                             f"holds {facial_prior_dim}-d ones (backend {config.facial_prior_backend!r})")
        model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, **model_kwargs)
        processor = AutoProcessor.from_pretrained(model_name_or_path, **load_kwargs)
        return model, processor
    if family.name != "llava":
        return _from_base(model_name_or_path, family, use_facial_prior, add_facial_prior, facial_prior_dim,
                          facial_prior_backend, load_kwargs, model_kwargs)
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


def _from_base(path, family, use_facial_prior, add_prior, facial_prior_dim, facial_prior_backend, load_kwargs,
               model_kwargs):
    """A Qwen2.5-VL / Idefics3 / Gemma 3 base checkpoint, turned into its EmoLA variant (or, without the prior, kept
    as it is) with its EmoLA processor."""
    from transformers import AutoModelForImageTextToText

    if use_facial_prior and not add_prior:
        raise ValueError(f"{path} is a {family.name} base model without the facial prior: pass --add_facial_prior "
                         "true to turn it into its EmoLA variant (or --use_facial_prior false to train it as it is)")
    processor = emola_processor_from_base(path, use_facial_prior=use_facial_prior, **load_kwargs)
    model = AutoModelForImageTextToText.from_pretrained(path, **model_kwargs)
    if use_facial_prior:
        model = families.add_facial_prior(model, facial_prior_dim or 212, facial_prior_backend=facial_prior_backend,
                                          processor=processor)
    model.name_or_path = path  # recorded as the adapter's base model
    return model, processor
