"""Convert a released EmoLA checkpoint into a single `EmolaForConditionalGeneration` folder.

The official EmoLA-AU / EmoLA-Emotion releases are not models on their own: they are a PEFT LoRA adapter, a
`non_lora_trainables.bin` (the fine-tuned visual projector) and a `landmark_feature_projector.bin` (the facial-prior
projector), applied by the research fork's loader (`emollava/model/builder.py`) on top of `liuhaotian/llava-v1.5-7b`
and a separately loaded CLIP tower. This module does what that loader does, once, and writes the result as an
ordinary transformers checkpoint (sharded safetensors + config + processor), so `from_pretrained`, `pipeline` and
`push_to_hub` work without the fork:

1. base LLaVA-1.5 weights (original `LlavaLlamaForCausalLM` layout or `llava-hf` layout) + CLIP tower;
2. `non_lora_trainables.bin` overrides, with the loader's `base_model.` / `model.` prefix stripping;
3. LoRA merged into the weights: `W += (alpha / r) * B @ A` (computed in float32);
4. the prior projector from `landmark_feature_projector.bin`;
5. `<image>`, `<pad>` and `<facial_prior>` added to the tokenizer when missing (ids 32000-32002 for both base
   layouts, as in `llava-hf/llava-1.5-7b-hf`), embeddings padded to a multiple of 64.

Unlike the original loader, nothing is silently skipped: unknown or missing keys, a missing projector file or a
shape mismatch raise a `ConversionError` that names the file and the keys. Pickled files are read with
`torch.load(weights_only=True)` only.

Usage:

```bash
emola convert --base liuhaotian/llava-v1.5-7b --emola Checkpoints-AU/llava-v1.5-7b-lora-emola-au \\
    --vision-tower openai/clip-vit-large-patch14-336 --output emola-7b-au
```
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_emola import EmolaConfig
from .faba import FACIAL_PRIOR_BACKENDS, FACIAL_PRIOR_DIMS

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

NON_LORA_FILE = "non_lora_trainables.bin"
LANDMARK_PROJECTOR_FILE = "landmark_feature_projector.bin"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")

# Placeholders, in the order llava-hf/llava-1.5-7b-hf numbers them (<image>=32000, <pad>=32001), then ours.
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
FACIAL_PRIOR_TOKEN = "<facial_prior>"
VOCAB_PAD_MULTIPLE = 64

# Key prefixes of our model (EmolaForConditionalGeneration, same as transformers' LLaVA).
LM_PREFIX = "model.language_model."
PROJECTOR_PREFIX = "model.multi_modal_projector."
VISION_PREFIX = "model.vision_tower."
PRIOR_PROJECTOR_PREFIX = "model.facial_prior_projector."
EMBED_KEY = LM_PREFIX + "embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"

# Original `nn.Sequential(Linear, GELU, Linear)` indices -> our named layers.
_MLP_LAYERS = {"0": "linear_1", "2": "linear_2"}
# Llama fields a flat LLaVA / EmoLA `config.json` carries (the rest are mm_* and training settings).
_LLAMA_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "rope_theta", "rope_scaling", "rope_parameters", "attention_bias", "mlp_bias", "pretraining_tp",
    "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip


class ConversionError(ValueError):
    """An input checkpoint does not have the expected files, keys or shapes."""


@dataclass
class ConversionSummary:
    """What `build_emola_from_original` did, for logs and tests."""

    base_layout: str
    merged_lora_modules: list[str] = field(default_factory=list)
    non_lora_keys: list[str] = field(default_factory=list)
    added_tokens: list[str] = field(default_factory=list)
    vocab_size: int = 0
    lora_scale: float | dict[str, float] = 0.0


# ---- reading files -----------------------------------------------------------------------------------------------
def load_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file, or a pickled `.bin`/`.pt` with `torch.load(weights_only=True)` (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(os.fspath(path))
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickles with code objects are refused by weights_only=True
        raise ConversionError(f"{path} could not be read with torch.load(weights_only=True): {error}") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConversionError(f"{path} does not hold a flat {{name: tensor}} state dict")
    return state


def load_checkpoint_folder(folder: PathLike) -> dict[str, torch.Tensor]:
    """All weights of a transformers-style folder: single or sharded, safetensors or `pytorch_model*.bin`."""
    folder = Path(folder)
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).is_file():
            return load_weights_file(folder / single)
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text())["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_weights_file(folder / shard))
            missing = sorted(set(weight_map) - set(state))
            if missing:
                raise ConversionError(f"{folder / index} lists keys that no shard holds: {missing[:10]}")
            return state
    raise ConversionError(
        f"No weights in {folder}: expected model.safetensors, pytorch_model.bin or a sharded index of either"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"Missing file: {path}") from None
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error


def _resolve_folder(path: PathLike, what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ConversionError(
            f"{what} must be a local folder, got {os.fspath(path)!r} (download it first, e.g. with "
            "`hf download <repo> --local-dir <folder>`)"
        )
    return folder


# ---- key mapping -------------------------------------------------------------------------------------------------
def original_key_to_hf(key: str) -> str | None:
    """Name of an original-layout (`LlavaLlamaForCausalLM` / EmoLA) weight in `EmolaForConditionalGeneration`.

    Returns None for keys the conversion deliberately drops (rotary `inv_freq` buffers, and the vision tower that
    liuhaotian checkpoints may embed: the original loads the tower from the CLIP folder, as we do). Keys already in
    our layout, or in the legacy llava-hf layout, are mapped too, so adapters trained on either base resolve.
    Raises `KeyError` for anything unknown.

    ```python
    >>> from transformers_emola.convert_emola_original_to_hf import original_key_to_hf
    >>> original_key_to_hf("model.mm_projector.2.weight")
    'model.multi_modal_projector.linear_2.weight'
    >>> original_key_to_hf("model.layers.0.self_attn.q_proj.weight")
    'model.language_model.layers.0.self_attn.q_proj.weight'

    ```
    """
    if key.endswith("rotary_emb.inv_freq") or key.startswith("model.vision_tower.vision_tower."):
        return None
    if key == LM_HEAD_KEY or key.startswith((LM_PREFIX, PROJECTOR_PREFIX, PRIOR_PROJECTOR_PREFIX)):
        return key  # already ours
    if key.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")):
        return LM_PREFIX + key[len("model.") :]
    if key.startswith("language_model.model."):  # legacy llava-hf
        return LM_PREFIX + key[len("language_model.model.") :]
    if key == "language_model.lm_head.weight":
        return LM_HEAD_KEY
    if key.startswith("multi_modal_projector."):
        return "model." + key
    for original, ours in (("model.mm_projector.", PROJECTOR_PREFIX),
                           ("model.landmark_feature_projector.", PRIOR_PROJECTOR_PREFIX)):  # fmt: skip
        index, _, param = key[len(original) :].partition(".") if key.startswith(original) else ("", "", "")
        if index in _MLP_LAYERS and param in ("weight", "bias"):
            return f"{ours}{_MLP_LAYERS[index]}.{param}"
    raise KeyError(key)


def strip_non_lora_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original loader's renaming of `non_lora_trainables.bin`: drop `base_model.`, then `model.` when the keys
    still start with `model.model.` (PEFT wraps the LLaVA model)."""
    state = {(key[len("base_model.") :] if key.startswith("base_model.") else key): value
             for key, value in state_dict.items()}  # fmt: skip
    if any(key.startswith("model.model.") for key in state):
        state = {(key[len("model.") :] if key.startswith("model.") else key): value for key, value in state.items()}
    return state


def landmark_projector_state(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """`landmark_feature_projector.bin` -> our `facial_prior_projector` keys.

    Accepts any prefix before `landmark_feature_projector.` (`base_model.model.model.`, `model.`, none), as the
    original `get_w` does, but requires exactly the two Linear layers of `mlp2x_gelu` and nothing else.
    """
    marker = "landmark_feature_projector."
    found: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in state_dict.items():
        rest = key.split(marker, 1)[1] if marker in key else None
        index, _, param = (rest or "").partition(".")
        if rest is None or index not in _MLP_LAYERS or param not in ("weight", "bias"):
            unexpected.append(key)
            continue
        target = f"{PRIOR_PROJECTOR_PREFIX}{_MLP_LAYERS[index]}.{param}"
        if target in found:
            raise ConversionError(f"{source}: several keys give {marker}{rest} (e.g. {key!r})")
        found[target] = value
    expected = {f"{PRIOR_PROJECTOR_PREFIX}{layer}.{param}" for layer in _MLP_LAYERS.values()
                for param in ("weight", "bias")}  # fmt: skip
    missing = sorted(expected - set(found))
    if unexpected or missing:
        raise ConversionError(
            f"{source} is not an mlp2x_gelu landmark_feature_projector: unexpected keys {sorted(unexpected)}, "
            f"missing {[key.replace(PRIOR_PROJECTOR_PREFIX, marker) for key in missing]}"
        )
    return found


# ---- LoRA --------------------------------------------------------------------------------------------------------
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.(?P<adapter>[^.]+))?\.weight$")


def lora_scales(adapter_config: dict[str, Any], ranks: dict[str, int], source: str) -> dict[str, float]:
    """Per-module scale `alpha / r` (`alpha / sqrt(r)` with rsLoRA); `r` is read from the weights' shape."""
    if adapter_config.get("use_dora"):
        raise ConversionError(f"{source}: DoRA adapters (use_dora=true) are not supported")
    if adapter_config.get("alpha_pattern"):
        raise ConversionError(f"{source}: per-module alpha_pattern is not supported")
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise ConversionError(f"{source}: expected a LoRA adapter, got peft_type={adapter_config.get('peft_type')!r}")
    if "lora_alpha" not in adapter_config:
        raise ConversionError(f"{source} has no lora_alpha")
    alpha = float(adapter_config["lora_alpha"])
    root = math.sqrt if adapter_config.get("use_rslora") else float
    return {module: alpha / root(rank) for module, rank in ranks.items()}


def merge_lora(
    weights: dict[str, torch.Tensor],
    adapter_state: dict[str, torch.Tensor],
    adapter_config: dict[str, Any],
    source: str = "adapter",
) -> dict[str, float]:
    """Merge a PEFT LoRA adapter into `weights` (our key layout) in place: `W += scale * B @ A` in float32.

    Adapter keys may be in the original EmoLA layout (`base_model.model.model.layers.0.self_attn.q_proj.lora_A
    .weight`), the llava-hf layout or ours. Returns `{target weight: scale}`.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unexpected = []
    for key, value in adapter_state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            unexpected.append(key)
            continue
        module = match["module"]
        module = module[len("base_model.model.") :] if module.startswith("base_model.model.") else module
        pairs.setdefault(module, {})[match["which"]] = value
    if unexpected:
        raise ConversionError(f"{source}: keys that are not LoRA A/B weights: {sorted(unexpected)}")
    if not pairs:
        raise ConversionError(f"{source} holds no LoRA weights")
    incomplete = sorted(module for module, pair in pairs.items() if set(pair) != {"A", "B"})
    if incomplete:
        raise ConversionError(f"{source}: modules with only one of lora_A / lora_B: {incomplete}")

    targets, unknown = {}, []
    for module in pairs:
        try:
            target = original_key_to_hf(module + ".weight")
        except KeyError:
            target = None
        if target is None or target not in weights:
            unknown.append(module)
        else:
            targets[module] = target
    if unknown:
        raise ConversionError(f"{source}: LoRA targets that are not weights of the base model: {sorted(unknown)}")

    ranks = {module: pair["A"].shape[0] for module, pair in pairs.items()}
    scales = lora_scales(adapter_config, ranks, source)
    fan_in_fan_out = bool(adapter_config.get("fan_in_fan_out", False))
    merged = {}
    for module, pair in pairs.items():
        target = targets[module]
        lora_a, lora_b = pair["A"].float(), pair["B"].float()
        delta = lora_b @ lora_a
        if fan_in_fan_out:
            delta = delta.T
        weight = weights[target]
        if lora_a.shape[0] != lora_b.shape[1] or delta.shape != weight.shape:
            raise ConversionError(
                f"{source}: LoRA of {module} has A {tuple(lora_a.shape)} and B {tuple(lora_b.shape)}, which do not "
                f"fit the base weight {target} {tuple(weight.shape)}"
            )
        weights[target] = (weight.float() + scales[module] * delta).to(weight.dtype)
        merged[target] = scales[module]
    return merged


# ---- configs -----------------------------------------------------------------------------------------------------
def detect_base_layout(base_path: PathLike) -> str:
    """`"original"` (liuhaotian `LlavaLlamaForCausalLM`) or `"llava-hf"` (`LlavaForConditionalGeneration`)."""
    config = _read_json(Path(base_path) / "config.json")
    architectures = config.get("architectures") or []
    if "text_config" in config or "LlavaForConditionalGeneration" in architectures:
        return "llava-hf"
    if "LlavaLlamaForCausalLM" in architectures or "mm_projector_type" in config or "mm_vision_tower" in config:
        return "original"
    raise ConversionError(
        f"{Path(base_path) / 'config.json'} is neither an original LLaVA-1.5 config (LlavaLlamaForCausalLM, "
        f"mm_* fields) nor a llava-hf LlavaForConditionalGeneration config; architectures={architectures}"
    )


def llama_config_from_original(config: dict[str, Any]):
    """The Llama part of a flat LLaVA / EmoLA `config.json`."""
    from transformers import LlamaConfig

    return LlamaConfig(**{key: config[key] for key in _LLAMA_FIELDS if key in config}, tie_word_embeddings=False)


def _check_original_multimodal_config(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The LLaVA settings EmoLA was trained with, checked against what `EmolaForConditionalGeneration` implements."""
    projector = config.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise ConversionError(f"{source}: mm_projector_type={projector!r}; only 'mlp2x_gelu' (LLaVA-1.5) is supported")
    for flag in ("mm_use_im_start_end", "mm_use_im_patch_token"):
        if config.get(flag):
            raise ConversionError(f"{source}: {flag}=true is not supported (LLaVA-1.5 and EmoLA use false)")
    select_feature = config.get("mm_vision_select_feature", "patch")
    strategies = {"patch": "default", "cls_patch": "full"}
    if select_feature not in strategies:
        raise ConversionError(f"{source}: unknown mm_vision_select_feature={select_feature!r}")
    settings = {
        "vision_feature_layer": config.get("mm_vision_select_layer", -2),
        "vision_feature_select_strategy": strategies[select_feature],
    }
    if "landmark_feature_hidden_size" in config:
        settings["facial_prior_dim"] = int(config["landmark_feature_hidden_size"])
    return settings


# ---- tokenizer ---------------------------------------------------------------------------------------------------
def add_placeholder_tokens(tokenizer) -> list[str]:
    """Add `<image>`, `<pad>` (when the tokenizer has no pad token or pads with `<unk>`, as LLaVA-1.5 does) and
    `<facial_prior>` if missing, in llava-hf's order. Returns the tokens added."""
    from tokenizers import AddedToken

    def has(token: str) -> bool:
        return token in tokenizer.get_vocab()

    added = []
    if not has(IMAGE_TOKEN):
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(IMAGE_TOKEN)
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
        if not has(PAD_TOKEN):
            added.append(PAD_TOKEN)
        tokenizer.add_special_tokens({"pad_token": AddedToken(PAD_TOKEN, special=True, normalized=False)})
    if not has(FACIAL_PRIOR_TOKEN):
        tokenizer.add_tokens([AddedToken(FACIAL_PRIOR_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(FACIAL_PRIOR_TOKEN)
    return added


def _resize_rows(weight: torch.Tensor, rows: int, fill: str) -> torch.Tensor:
    """Grow a vocabulary matrix. New rows never reach an output: placeholder embeddings are replaced by image and
    prior features, `<pad>` is masked, and generation suppresses these ids; embeddings get the mean row (harmless if
    someone fine-tunes them), the LM head zeros."""
    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    if fill == "mean":
        new = weight.float().mean(0, keepdim=True).to(weight.dtype).expand(extra, -1)
    else:
        new = weight.new_zeros(extra, weight.shape[1])
    return torch.cat([weight, new], dim=0)


def _eval_image_processor(vision_tower_path: Path | None, base_path: Path, image_size: int):
    """CLIP preprocessing of the official evaluation: resize the short side, centre crop, CLIP mean/std; no padding
    to a square (the processor is saved with pad_to_square=False)."""
    from transformers import CLIPImageProcessorPil

    for folder in (vision_tower_path, base_path):
        if folder is not None and (folder / "preprocessor_config.json").is_file():
            processor = CLIPImageProcessorPil.from_pretrained(folder)
            break
    else:
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    crop = processor.crop_size
    if (crop["height"], crop["width"]) != (image_size, image_size):
        raise ConversionError(
            f"The image processor crops to {crop['height']}x{crop['width']} but the vision tower expects "
            f"{image_size}x{image_size}"
        )
    return processor


# ---- the conversion ----------------------------------------------------------------------------------------------
def _load_base(base_path: Path, layout: str, vision_tower_path: Path | None, dtype: torch.dtype):
    """-> (weights in our layout, text config, vision config or None, multimodal settings)."""
    if layout == "llava-hf":
        from transformers import LlavaForConditionalGeneration

        llava, info = LlavaForConditionalGeneration.from_pretrained(base_path, dtype=dtype, output_loading_info=True)
        if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
            raise ConversionError(
                f"{base_path} did not load as LlavaForConditionalGeneration: missing {sorted(info['missing_keys'])}, "
                f"unexpected {sorted(info['unexpected_keys'])}, mismatched {info.get('mismatched_keys')}"
            )
        weights = dict(llava.state_dict())
        config = llava.config
        settings = {
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
        }
        if config.projector_hidden_act != "gelu" or not config.multimodal_projector_bias:
            raise ConversionError(f"{base_path}: expected LLaVA-1.5's GELU projector with biases")
        return weights, config.text_config, config.vision_config, settings

    if vision_tower_path is None:
        raise ConversionError(
            f"{base_path} is an original LLaVA-1.5 checkpoint, which does not include the CLIP tower: pass "
            "vision_tower_path (a local copy of openai/clip-vit-large-patch14-336)"
        )
    original_config = _read_json(base_path / "config.json")
    settings = _check_original_multimodal_config(original_config, f"{base_path / 'config.json'}")
    state = load_checkpoint_folder(base_path)
    weights, unexpected = {}, []
    for key, value in state.items():
        try:
            target = original_key_to_hf(key)
        except KeyError:
            unexpected.append(key)
            continue
        if target is not None:
            weights[target] = value.to(dtype)
    if unexpected:
        raise ConversionError(f"Unexpected keys in the base model {base_path}: {sorted(unexpected)}")
    return weights, llama_config_from_original(original_config), None, settings


def _load_vision_tower(path: Path, dtype: torch.dtype):
    from transformers import CLIPVisionModel

    tower, info = CLIPVisionModel.from_pretrained(path, dtype=dtype, output_loading_info=True)
    if info["missing_keys"]:
        raise ConversionError(f"Vision tower {path} lacks weights: {sorted(info['missing_keys'])}")
    # CLIPModel checkpoints (openai/clip-vit-large-patch14-336) also hold the text tower: unexpected and unused.
    return {VISION_PREFIX + key: value for key, value in tower.state_dict().items()}, tower.config


def build_emola_from_original(
    base_model_path: PathLike,
    emola_path: PathLike,
    vision_tower_path: PathLike | None = None,
    tokenizer_path: PathLike | None = None,
    dtype: str | torch.dtype = "float16",
    facial_prior_backend: str = "insightface_2d106",
):
    """Build the converted model and processor in memory (see `convert_emola_checkpoint`).

    Returns `(model, processor, summary)`: an `EmolaForConditionalGeneration` in eval mode, an `EmolaProcessor` and a
    `ConversionSummary`.
    """
    from accelerate import init_empty_weights
    from transformers import AutoTokenizer, GenerationConfig

    from .modeling_emola import EmolaForConditionalGeneration
    from .processing_emola import EmolaProcessor

    if facial_prior_backend not in FACIAL_PRIOR_DIMS:
        raise ConversionError(
            f"Unknown facial_prior_backend {facial_prior_backend!r}; choose one of {sorted(FACIAL_PRIOR_DIMS)}"
        )
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConversionError(f"dtype must be a floating-point torch dtype such as 'float16', got {dtype!r}")
    base_path = _resolve_folder(base_model_path, "base_model_path")
    emola_dir = _resolve_folder(emola_path, "emola_path")
    tower_path = _resolve_folder(vision_tower_path, "vision_tower_path") if vision_tower_path is not None else None

    # Required EmoLA files, all checked before any heavy loading.
    adapter_config_path = emola_dir / ADAPTER_CONFIG_FILE
    adapter_weights_path = next((emola_dir / name for name in ADAPTER_WEIGHT_FILES if (emola_dir / name).is_file()),
                                None)  # fmt: skip
    missing_files = [str(path) for path in (adapter_config_path, emola_dir / NON_LORA_FILE,
                                            emola_dir / LANDMARK_PROJECTOR_FILE) if not path.is_file()]  # fmt: skip
    if adapter_weights_path is None:
        missing_files.append(str(emola_dir / " or ".join(ADAPTER_WEIGHT_FILES)))
    if missing_files:
        note = (" (the original loader would silently use a random facial-prior projector; we refuse)"
                if not (emola_dir / LANDMARK_PROJECTOR_FILE).is_file() else "")  # fmt: skip
        raise ConversionError(f"The EmoLA checkpoint {emola_dir} is incomplete, missing: {missing_files}{note}")

    # The small EmoLA files are read and checked first, so a bad release fails before the 7B base is loaded.
    # The EmoLA folder's config.json is the configuration the original loader builds the model with.
    emola_config_path = emola_dir / "config.json"
    emola_config = _read_json(emola_config_path) if emola_config_path.is_file() else None
    emola_settings = _check_original_multimodal_config(emola_config, str(emola_config_path)) if emola_config else {}
    prior_state = landmark_projector_state(load_weights_file(emola_dir / LANDMARK_PROJECTOR_FILE),
                                           str(emola_dir / LANDMARK_PROJECTOR_FILE))  # fmt: skip
    prior_dim = prior_state[PRIOR_PROJECTOR_PREFIX + "linear_1.weight"].shape[1]
    if emola_settings.get("facial_prior_dim", prior_dim) != prior_dim:
        raise ConversionError(f"{emola_config_path}: landmark_feature_hidden_size={emola_settings['facial_prior_dim']}"
                              f" but {LANDMARK_PROJECTOR_FILE} takes {prior_dim}-d inputs")  # fmt: skip
    if FACIAL_PRIOR_DIMS[facial_prior_backend] != prior_dim:
        raise ConversionError(f"facial_prior_backend={facial_prior_backend!r} gives "
                              f"{FACIAL_PRIOR_DIMS[facial_prior_backend]}-d priors but the prior projector takes "
                              f"{prior_dim}-d inputs")  # fmt: skip
    adapter_config = _read_json(adapter_config_path)
    adapter_state = load_weights_file(adapter_weights_path)
    non_lora = strip_non_lora_prefixes(load_weights_file(emola_dir / NON_LORA_FILE))

    layout = detect_base_layout(base_path)
    weights, text_config, vision_config, settings = _load_base(base_path, layout, tower_path, dtype)
    if tower_path is not None:
        weights = {key: value for key, value in weights.items() if not key.startswith(VISION_PREFIX)}
        tower_weights, vision_config = _load_vision_tower(tower_path, dtype)
        weights.update(tower_weights)
    settings.update(emola_settings)
    if emola_config and layout == "original":
        text_config = llama_config_from_original(emola_config)
    summary = ConversionSummary(base_layout=layout)

    # 1. non_lora_trainables.bin, as the original loader renames it; the landmark keys it may also hold are ignored
    #    there (the projector does not exist yet) and taken from landmark_feature_projector.bin instead.
    unexpected = []
    for key, value in non_lora.items():
        if "landmark_feature_projector." in key:
            continue
        try:
            target = original_key_to_hf(key)
        except KeyError:
            target = None
        if target is None or target not in weights:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(weights[target].shape):
            raise ConversionError(f"{emola_dir / NON_LORA_FILE}: {key} has shape {tuple(value.shape)}, the base "
                                  f"weight {target} has {tuple(weights[target].shape)}")
        else:
            weights[target] = value.to(dtype)
            summary.non_lora_keys.append(target)
    if unexpected:
        raise ConversionError(f"Unexpected keys in {emola_dir / NON_LORA_FILE}: {sorted(unexpected)}")

    # 2. LoRA, merged.
    scales = merge_lora(weights, adapter_state, adapter_config, str(adapter_weights_path))
    del adapter_state
    summary.merged_lora_modules = sorted(scales)
    distinct = set(scales.values())
    summary.lora_scale = distinct.pop() if len(distinct) == 1 else scales

    # 3. The facial-prior projector.
    weights.update({key: value.to(dtype) for key, value in prior_state.items()})

    # 4. Tokenizer placeholders and vocabulary rows.
    tokenizer = AutoTokenizer.from_pretrained(  # left padding for batched generation (saved with the tokenizer)
        tokenizer_path if tokenizer_path is not None else base_path, padding_side="left"
    )
    summary.added_tokens = add_placeholder_tokens(tokenizer)
    rows = weights[EMBED_KEY].shape[0]
    if len(tokenizer) > rows:
        rows = math.ceil(len(tokenizer) / VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE
        weights[EMBED_KEY] = _resize_rows(weights[EMBED_KEY], rows, "mean")
        weights[LM_HEAD_KEY] = _resize_rows(weights[LM_HEAD_KEY], rows, "zeros")
    summary.vocab_size = rows
    text_config.vocab_size = rows
    text_config.pad_token_id = tokenizer.pad_token_id
    text_config.bos_token_id = tokenizer.bos_token_id
    text_config.eos_token_id = tokenizer.eos_token_id

    image_size, patch_size = vision_config.image_size, vision_config.patch_size
    config = EmolaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        facial_prior_token_id=tokenizer.convert_tokens_to_ids(FACIAL_PRIOR_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=settings["vision_feature_layer"],
        vision_feature_select_strategy=settings["vision_feature_select_strategy"],
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        facial_prior_dim=prior_dim,
        facial_prior_backend=facial_prior_backend,
        tie_word_embeddings=False,
    )

    # 5. Load every weight into an empty model; anything missing, left over or misshapen is an error.
    with init_empty_weights(include_buffers=False):
        model = EmolaForConditionalGeneration(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    mismatched = sorted(f"{key}: {tuple(weights[key].shape)} vs {shape}" for key, shape in expected.items()
                        if key in weights and tuple(weights[key].shape) != shape)  # fmt: skip
    if missing or extra or mismatched:
        raise ConversionError(
            f"The converted weights do not match EmolaForConditionalGeneration: missing {missing}, unexpected "
            f"{extra}, shape mismatches {mismatched}"
        )
    model.load_state_dict({key: value.to(dtype).contiguous() for key, value in weights.items()}, assign=True)
    model.eval()

    # Placeholders, padding and unused rows did not exist in the original vocabulary: never generate them.
    suppress = {config.image_token_index, config.facial_prior_token_id, tokenizer.pad_token_id}
    suppress.update(range(len(tokenizer), rows))
    suppress -= {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id, None}
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,  # the official evaluation samples at temperature 0.01, top_p 0.5: effectively greedy
        max_new_tokens=1024,
        suppress_tokens=sorted(suppress),
    )

    image_processor = _eval_image_processor(tower_path, base_path, image_size)
    landmark_backends = [name for name in FACIAL_PRIOR_BACKENDS if name != "precomputed"]
    processor = EmolaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        use_facial_prior=True,
        pad_to_square=False,  # as the official evaluation (training pads; see the model card)
        facial_prior_extractor={"backend": facial_prior_backend} if facial_prior_backend in landmark_backends else None,
    )
    return model, processor, summary


def convert_emola_checkpoint(
    base_model_path: PathLike,
    emola_path: PathLike,
    output_dir: PathLike,
    vision_tower_path: PathLike | None = None,
    tokenizer_path: PathLike | None = None,
    dtype: str | torch.dtype = "float16",
    max_shard_size: str | int = "5GB",
    facial_prior_backend: str = "insightface_2d106",
) -> ConversionSummary:
    """Convert an original EmoLA release to an `EmolaForConditionalGeneration` folder.

    Args:
        base_model_path: local LLaVA-1.5-7B, either `liuhaotian/llava-v1.5-7b` (original layout; needs
            `vision_tower_path`) or `llava-hf/llava-1.5-7b-hf`.
        emola_path: the EmoLA folder (`adapter_config.json`, `adapter_model.{bin,safetensors}`,
            `non_lora_trainables.bin`, `landmark_feature_projector.bin`, `config.json`).
        output_dir: where to write the model (sharded safetensors), its config, generation config and processor.
        vision_tower_path: a CLIP folder (`openai/clip-vit-large-patch14-336`); replaces the llava-hf tower if given.
        tokenizer_path: tokenizer folder, defaults to the base model's.
        dtype: weights' dtype in the output (`"float16"` as the official evaluation; `"float32"` for exact checks).
        max_shard_size: passed to `save_pretrained`.
        facial_prior_backend: the extractor the prior projector was trained on (`"insightface_2d106"`, 212-d).

    Returns the `ConversionSummary`. The folder then loads with `EmolaForConditionalGeneration.from_pretrained` /
    `AutoProcessor.from_pretrained` (after `import transformers_emola`) and can be uploaded with `push_to_hub`.
    """
    model, processor, summary = build_emola_from_original(
        base_model_path, emola_path, vision_tower_path=vision_tower_path, tokenizer_path=tokenizer_path, dtype=dtype,
        facial_prior_backend=facial_prior_backend,
    )  # fmt: skip
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    processor.save_pretrained(output_dir)
    logger.info(
        "Converted EmoLA (%s base): merged LoRA into %d weights (scale %s), added tokens %s, vocabulary %d -> %s",
        summary.base_layout, len(summary.merged_lora_modules), summary.lora_scale, summary.added_tokens,
        summary.vocab_size, output_dir,
    )  # fmt: skip
    return summary


__all__ = [
    "ConversionError",
    "ConversionSummary",
    "add_placeholder_tokens",
    "build_emola_from_original",
    "convert_emola_checkpoint",
    "detect_base_layout",
    "landmark_projector_state",
    "load_checkpoint_folder",
    "load_weights_file",
    "merge_lora",
    "original_key_to_hf",
    "strip_non_lora_prefixes",
]
