"""The base VLM families that carry EmoLA's facial prior, and how a base model or processor becomes its EmoLA variant.

`add_facial_prior(model, facial_prior_dim, ...)` turns a loaded LLaVA, Qwen2.5-VL, Idefics3/SmolVLM or Gemma 3 model
into its registered EmoLA class; `add_facial_prior_token(processor, ...)` does the same for its processor. Each
family is one row of `FAMILIES`: the base classes it is recognised by, its EmoLA classes (thin bindings in
`modeling_emola*.py`), and where its language model, vision tower and projector sit, which a fine-tuning recipe
needs for LoRA targets and trainable modules.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.configuration_utils import PreTrainedConfig
from transformers.models.gemma3.configuration_gemma3 import Gemma3Config
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor
from transformers.models.idefics3.configuration_idefics3 import Idefics3Config
from transformers.models.idefics3.processing_idefics3 import Idefics3Processor
from transformers.models.llava.configuration_llava import LlavaConfig
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from .configuration_emola import FACIAL_PRIOR_DIMS, EmolaConfig
from .configuration_facial_prior import FacialPriorConfigMixin
from .modeling_emola import EmolaForConditionalGeneration, EmolaModel
from .modeling_emola_gemma3 import (
    EmolaGemma3Config,
    EmolaGemma3ForConditionalGeneration,
    EmolaGemma3Model,
    EmolaGemma3Processor,
)
from .modeling_emola_idefics3 import (
    EmolaIdefics3Config,
    EmolaIdefics3ForConditionalGeneration,
    EmolaIdefics3Model,
    EmolaIdefics3Processor,
)
from .modeling_emola_qwen2_5_vl import (
    EmolaQwen2_5_VLConfig,
    EmolaQwen2_5_VLForConditionalGeneration,
    EmolaQwen2_5_VLModel,
    EmolaQwen2_5_VLProcessor,
)
from .modeling_facial_prior import EmolaFacialPriorProjector
from .processing_emola import EmolaProcessor

FACIAL_PRIOR_PROJECTOR = "model.facial_prior_projector"


@dataclass(frozen=True)
class FacialPriorFamily:
    """One base family: the classes it is recognised by, its EmoLA classes, and where its parts sit.

    Module paths are relative to the image-text-to-text model (`model.get_submodule(family.projector)`).
    """

    name: str
    base_config_class: type
    base_processor_class: type
    config_class: type
    model_class: type
    for_conditional_generation_class: type
    processor_class: type
    language_model: str  # LoRA goes on its linear layers
    vision_tower: str  # frozen in EmoLA's recipe
    projector: str  # the family's own vision-to-language projector, trained in full like the prior's

    @property
    def trainable_projectors(self) -> tuple[str, str]:
        """The family's projector and the facial-prior projector: the modules EmoLA trains in full."""
        return (self.projector, FACIAL_PRIOR_PROJECTOR)

    def register(self) -> None:
        """Make the Auto classes load this family's EmoLA checkpoints (no `trust_remote_code`)."""
        AutoConfig.register(self.config_class.model_type, self.config_class, exist_ok=True)
        AutoModel.register(self.config_class, self.model_class, exist_ok=True)
        AutoModelForImageTextToText.register(self.config_class, self.for_conditional_generation_class, exist_ok=True)
        AutoProcessor.register(self.config_class, self.processor_class, exist_ok=True)


FAMILIES = (
    FacialPriorFamily(
        "llava", LlavaConfig, LlavaProcessor, EmolaConfig, EmolaModel, EmolaForConditionalGeneration, EmolaProcessor,
        language_model="model.language_model", vision_tower="model.vision_tower",
        projector="model.multi_modal_projector",
    ),
    FacialPriorFamily(
        "qwen2_5_vl", Qwen2_5_VLConfig, Qwen2_5_VLProcessor, EmolaQwen2_5_VLConfig, EmolaQwen2_5_VLModel,
        EmolaQwen2_5_VLForConditionalGeneration, EmolaQwen2_5_VLProcessor,
        language_model="model.language_model", vision_tower="model.visual", projector="model.visual.merger",
    ),
    FacialPriorFamily(
        "idefics3", Idefics3Config, Idefics3Processor, EmolaIdefics3Config, EmolaIdefics3Model,
        EmolaIdefics3ForConditionalGeneration, EmolaIdefics3Processor,
        language_model="model.text_model", vision_tower="model.vision_model", projector="model.connector",
    ),
    FacialPriorFamily(
        "gemma3", Gemma3Config, Gemma3Processor, EmolaGemma3Config, EmolaGemma3Model,
        EmolaGemma3ForConditionalGeneration, EmolaGemma3Processor,
        language_model="model.language_model", vision_tower="model.vision_tower",
        projector="model.multi_modal_projector",
    ),
)


def register_families() -> None:
    """Register every family's EmoLA classes with the Auto classes (done on `import transformers_emola`)."""
    for family in FAMILIES:
        family.register()


def facial_prior_family(model_config_or_processor) -> FacialPriorFamily:
    """The family of a model, a configuration or a processor (base or EmoLA), by class."""
    obj = model_config_or_processor
    config = obj.config if hasattr(obj, "config") and isinstance(obj.config, PreTrainedConfig) else obj
    for cls in type(config).__mro__:
        for family in FAMILIES:
            if cls in (family.base_config_class, family.base_processor_class):
                return family
    supported = ", ".join(family.name for family in FAMILIES)
    raise ValueError(
        f"{type(obj).__name__} is not of a family that carries the facial prior; supported: {supported}"
    )


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _add_token(tokenizer, token: str) -> int:
    """The id of `token`, added to `tokenizer` (in place) as a special token when it is missing."""
    if token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(token)


def _facial_prior_backend(facial_prior_dim: int, facial_prior_backend: str | None) -> str:
    if facial_prior_backend is None:
        matching = [name for name, size in FACIAL_PRIOR_DIMS.items() if size == facial_prior_dim]
        if not matching:
            raise ValueError(
                f"no landmark backend gives {facial_prior_dim} numbers ({FACIAL_PRIOR_DIMS}); pass "
                "facial_prior_backend= to name the extractor your priors come from"
            )
        return matching[0]
    expected = FACIAL_PRIOR_DIMS.get(facial_prior_backend)
    if expected is not None and expected != facial_prior_dim:
        raise ValueError(
            f"facial_prior_backend={facial_prior_backend!r} gives {expected} numbers, not facial_prior_dim="
            f"{facial_prior_dim}"
        )
    return facial_prior_backend


def _take_over_modules(source: nn.Module, target: nn.Module) -> None:
    """Give `target` (built on the meta device, same structure) the very parameters, buffers and submodules of
    `source`.

    Where `target` holds EmoLA's subclass of `source`'s module (the levels the facial-prior mixins extend), descend
    instead, so that EmoLA's additions (the prior projector) stay. Handing over whole modules keeps their tensors,
    devices, hooks and tied weights exactly as they are.
    """
    target._parameters.update(source._parameters)
    target._buffers.update(source._buffers)
    for name, child in source._modules.items():
        own = target._modules.get(name)
        if child is not None and own is not None and type(own) is not type(child) and isinstance(own, type(child)):
            _take_over_modules(child, own)
        else:
            target._modules[name] = child


def _config_pairs(base_config: PreTrainedConfig, config: PreTrainedConfig):
    yield base_config, config
    for key in base_config.sub_configs:
        base_sub, sub = getattr(base_config, key, None), getattr(config, key, None)
        if isinstance(base_sub, PreTrainedConfig) and isinstance(sub, PreTrainedConfig):
            yield from _config_pairs(base_sub, sub)


def _adopt_configs(base_config: PreTrainedConfig, model: nn.Module) -> None:
    """Point the taken-over modules at the EmoLA configuration (and sub-configurations) that replace the base's,
    with the base's attention implementation, so that `set_attn_implementation` and friends reach every layer."""
    pairs = list(_config_pairs(base_config, model.config))
    for base, own in pairs:
        own._attn_implementation = base._attn_implementation
    replacement = {id(base): own for base, own in pairs}
    for module in model.modules():
        config = module.__dict__.get("config")
        if config is not None and id(config) in replacement:
            module.config = replacement[id(config)]


def add_facial_prior(
    model,
    facial_prior_dim: int,
    facial_prior_token_id: int | None = None,
    facial_prior_backend: str | None = None,
    *,
    processor=None,
    facial_prior_token: str = "<facial_prior>",
    **from_pretrained_kwargs,
):
    r"""
    The EmoLA variant of an image-text-to-text model of a supported family (see `FAMILIES`).

    The returned model is the family's registered EmoLA class (`EmolaForConditionalGeneration` for LLaVA,
    `EmolaQwen2_5_VLForConditionalGeneration`, `EmolaIdefics3ForConditionalGeneration`,
    `EmolaGemma3ForConditionalGeneration`): the base model's modules, taken over as they are (nothing is copied,
    so a 7B base needs no second copy in memory; use the returned model from then on), plus a freshly initialised
    facial-prior projector. Its forward and `generate` take `facial_priors`; it saves and loads with
    `AutoModelForImageTextToText` after `import transformers_emola`.

    Args:
        model: a loaded model, or a path / Hub id (loaded with `AutoModelForImageTextToText.from_pretrained` and
            `from_pretrained_kwargs`).
        facial_prior_dim (`int`): length of the landmark vector (136 for 68 points, 212 for InsightFace 2d106).
        facial_prior_token_id (`int`, *optional*): id of an existing `<facial_prior>` token. When omitted,
            `facial_prior_token` is added to `processor`'s tokenizer (in place) and the embeddings are resized
            when the id falls outside them.
        facial_prior_backend (`str`, *optional*): the `FacialPriorExtractor` backend the priors come from; by
            default the one whose output has `facial_prior_dim` numbers (`face_alignment` for 136).
        processor: the base model's processor (or tokenizer); needed when `facial_prior_token_id` is omitted.

    Example:

    ```python
    >>> import transformers_emola
    >>> from transformers_emola.testing_utils import build_tiny_vlm
    >>> base, processor = build_tiny_vlm("idefics3")
    >>> model = transformers_emola.add_facial_prior(base, facial_prior_dim=136, processor=processor)
    >>> type(model).__name__, model.config.facial_prior_token_id == processor.tokenizer.convert_tokens_to_ids(
    ...     "<facial_prior>")
    ('EmolaIdefics3ForConditionalGeneration', True)

    ```"""
    if _is_path(model):
        model = AutoModelForImageTextToText.from_pretrained(model, **from_pretrained_kwargs)
    elif from_pretrained_kwargs:
        raise TypeError(f"unexpected arguments {sorted(from_pretrained_kwargs)} (only used to load a model path)")
    family = facial_prior_family(model)
    if isinstance(model.config, FacialPriorConfigMixin):
        raise ValueError(f"{type(model).__name__} already carries the facial prior")
    if not issubclass(family.for_conditional_generation_class, type(model)):
        raise ValueError(
            f"add_facial_prior takes the image-text-to-text model of the {family.name} family (the base of "
            f"{family.for_conditional_generation_class.__name__}), got {type(model).__name__}"
        )
    facial_prior_backend = _facial_prior_backend(facial_prior_dim, facial_prior_backend)
    rows = model.get_input_embeddings().num_embeddings
    if facial_prior_token_id is None:
        if processor is None:
            raise ValueError(
                "facial_prior_token_id is None: pass processor= (its tokenizer gets the <facial_prior> token) or "
                "the id of an existing token"
            )
        tokenizer = getattr(processor, "tokenizer", processor)
        facial_prior_token_id = _add_token(tokenizer, facial_prior_token)
        rows = max(rows, len(tokenizer), facial_prior_token_id + 1)
    elif facial_prior_token_id >= rows:
        raise ValueError(
            f"facial_prior_token_id {facial_prior_token_id} does not fit the vocabulary ({rows} embeddings); omit it "
            "and pass processor= so the token is added and the embeddings resized"
        )

    config = family.config_class.from_base_config(
        model.config,
        facial_prior_token_id=facial_prior_token_id,
        facial_prior_dim=facial_prior_dim,
        facial_prior_backend=facial_prior_backend,
        use_facial_prior=True,
    )
    with torch.device("meta"):
        emola = family.for_conditional_generation_class(config)
    _take_over_modules(model, emola)
    _adopt_configs(model.config, emola)

    embeddings = emola.get_input_embeddings().weight
    dtype = embeddings.dtype if embeddings.is_floating_point() else torch.float32
    projector = EmolaFacialPriorProjector(config).to(device=embeddings.device, dtype=dtype)
    for module in projector.modules():
        emola._init_weights(module)
    emola.model.facial_prior_projector = projector
    on_meta = [name for name, tensor in [*emola.named_parameters(), *emola.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"{type(model).__name__} does not have the structure of its family: {on_meta[:5]} missing")

    emola.generation_config = copy.deepcopy(model.generation_config)
    emola.suppress_placeholder_tokens([config.image_token_id, facial_prior_token_id])
    if rows > emola.get_input_embeddings().num_embeddings:
        _resize_deterministically(emola, rows)
    return emola.train(model.training)


def _resize_deterministically(model: nn.Module, rows: int) -> None:
    """Resize the embeddings (and an untied LM head) to `rows`, the new rows set to the mean of the old ones.

    The new input row is never read (the prior replaces its embedding), but an untied LM head's new row is: it
    gives the `<facial_prior>` logit (suppressed in generation, part of the softmax in training). Random rows would
    make a base converted twice differ there, so a LoRA adapter trained on one conversion would not reproduce its
    logits on another (`merge_adapter_checkpoint` converts the base again); the mean is the same every time.
    """
    old_rows = model.get_input_embeddings().num_embeddings
    model.resize_token_embeddings(rows, mean_resizing=False)
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    with torch.no_grad():
        for layer in {id(layer.weight): layer for layer in layers if layer is not None}.values():
            layer.weight[old_rows:] = layer.weight[:old_rows].mean(0)
            if getattr(layer, "bias", None) is not None:
                layer.bias[old_rows:] = layer.bias[:old_rows].mean()


def add_facial_prior_token(
    processor,
    facial_prior_extractor=None,
    facial_prior_token: str = "<facial_prior>",
    **from_pretrained_kwargs,
):
    r"""
    The EmoLA processor of a supported family: `processor`'s image processor, tokenizer (with `facial_prior_token`
    added in place), chat template and settings, plus one `<facial_prior>` token after each image's visual tokens
    and `facial_priors` in its output (given, or computed by `facial_prior_extractor`). It saves and loads with
    `AutoProcessor`, and `pipeline("image-text-to-text")` and `pipeline("facial-affect-analysis")` take it.

    Args:
        processor: a base processor (LLaVA, Qwen2.5-VL, Idefics3/SmolVLM, Gemma 3), or a path / Hub id.
        facial_prior_extractor (`FacialPriorExtractor` or `dict`, *optional*): computes priors for images given
            without them; saved with the processor.
        facial_prior_token (`str`, defaults to `"<facial_prior>"`): the placeholder.

    Example:

    ```python
    >>> import torch
    >>> from PIL import Image
    >>> import transformers_emola
    >>> from transformers_emola.testing_utils import build_tiny_vlm
    >>> _, base_processor = build_tiny_vlm("idefics3")
    >>> processor = transformers_emola.add_facial_prior_token(base_processor)
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> face = Image.new("RGB", (32, 32))
    >>> inputs = processor(images=face, text=prompt, facial_priors=torch.zeros(1, 136), return_tensors="pt")
    >>> tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    >>> tokens[tokens.index("<facial_prior>") - 1], tuple(inputs["facial_priors"].shape)
    ('<fake_token_around_image>', (1, 136))

    ```"""
    if _is_path(processor):
        processor = AutoProcessor.from_pretrained(processor, **from_pretrained_kwargs)
    elif from_pretrained_kwargs:
        raise TypeError(f"unexpected arguments {sorted(from_pretrained_kwargs)} (only used to load a processor path)")
    family = facial_prior_family(processor)
    _add_token(processor.tokenizer, facial_prior_token)
    own = {"image_processor", "tokenizer", "chat_template", "facial_prior_token", "facial_prior_extractor"}
    accepted = inspect.signature(family.processor_class.__init__).parameters
    settings = {key: value for key, value in processor.to_dict().items() if key in accepted and key not in own}
    if facial_prior_extractor is None and hasattr(processor, "get_facial_prior_extractor"):
        facial_prior_extractor = processor.get_facial_prior_extractor()
    return family.processor_class(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        chat_template=processor.chat_template,
        facial_prior_token=facial_prior_token,
        facial_prior_extractor=facial_prior_extractor,
        **settings,
    )


__all__ = [
    "FAMILIES",
    "FacialPriorFamily",
    "add_facial_prior",
    "add_facial_prior_token",
    "facial_prior_family",
    "register_families",
]
