"""EmoLA's training recipe on the standard stack: TRL `SFTTrainer` + PEFT LoRA, with EmoLA's two deltas.

What EmoLA adds to a plain TRL vision SFT, and where it lives:

| module | holds |
|---|---|
| `arguments` | `EmolaScriptArguments`: the data and run options of `emola train` / `examples/sft_emola.py` |
| `config` | `EmolaSFTConfig`: `SFTConfig` with the paper's defaults and per-module learning rates |
| `collator` | `EmolaDataCollator`: passes `facial_priors` to the processor, trains on the answers only |
| `trainer` | LoRA on the language model, the three learning rates, `EmolaSFTTrainer`, `build_trainer` (any family) |
| `models` | the model to fine-tune: an EmoLA checkpoint, or EmoLA on a LLaVA-1.5 / Qwen2.5-VL / Idefics3 / Gemma 3 base |
| `outputs` | merging the adapter, the run's model card, the Hub upload |
| `recipe` | `train_emola`: all of the above, end to end |

Names are imported on first use, so `emola train --help` (which reads `arguments` only) needs no TRL or torch.
"""

import importlib

_LAZY = {
    "EmolaScriptArguments": "arguments",
    "EmolaSFTConfig": "config",
    "EmolaDataCollator": "collator",
    "IGNORE_INDEX": "collator",
    "answer_spans": "collator",
    "EmolaSFTTrainer": "trainer",
    "PROJECTOR_MODULES": "trainer",
    "build_lora_config": "trainer",
    "build_trainer": "trainer",
    "emola_parameter_groups": "trainer",
    "freeze_vision_tower": "trainer",
    "language_model_linear_names": "trainer",
    "lora_target_modules": "trainer",
    "trainable_projectors": "trainer",
    "LLAVA_LEGACY_KEY_MAPPING": "models",
    "emola_processor_from_base": "models",
    "emola_processor_from_llava": "models",
    "quantization_skip_modules": "models",
    "load_model_and_processor": "models",
    "BASE_INFO_FILE": "outputs",
    "merge_adapter": "outputs",
    "merge_adapter_checkpoint": "outputs",
    "push_folder_to_hub": "outputs",
    "save_merged": "outputs",
    "training_model_card": "outputs",
    "format_summary": "recipe",
    "peak_memory_bytes": "recipe",
    "resolve_resume": "recipe",
    "standardize_facial_priors": "recipe",
    "train_emola": "recipe",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
