"""What a training run leaves: the merged checkpoint, its model card, and the upload to the Hub.

The adapter is saved by the trainer; `save_merged` folds it (and the fully trained projectors) into a plain
checkpoint of the model's EmoLA class (`EmolaForConditionalGeneration`, `EmolaQwen2_5_VLForConditionalGeneration`,
...) that `AutoModelForImageTextToText` and `pipeline` load, and `merge_adapter_checkpoint` does the
same later, from the saved adapter, for runs that cannot merge in place (QLoRA, DeepSpeed ZeRO-3, FSDP).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..model_card import build_model_card
from .models import load_model_and_processor

__all__ = [
    "BASE_INFO_FILE",
    "merge_adapter",
    "merge_adapter_checkpoint",
    "push_folder_to_hub",
    "save_merged",
    "training_model_card",
]

#: Written beside the adapter: what `merge_adapter_checkpoint` needs to rebuild the base model.
BASE_INFO_FILE = "emola_base.json"


def merge_adapter(model):
    """Fold the LoRA weights and the trained projectors into the plain model (its EmoLA class, or the base's for the
    no-prior baseline)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False) or getattr(model.get_base_model(),
                                                                              "is_loaded_in_8bit", False):
        raise ValueError("Merging into a quantized model loses precision: reload the base model in bf16, "
                         "PeftModel.from_pretrained(base, adapter_dir) and merge that (see docs/fine_tuning.md)")
    merged = model.merge_and_unload()
    merged.generation_config.use_cache = True
    merged.config.get_text_config().use_cache = True
    return merged


def save_merged(model, processor, output_dir: str | os.PathLike, model_card=None) -> Path:
    """Save a merged model (safetensors) + processor that `from_pretrained` and `pipeline` load, and its card
    (a `huggingface_hub.ModelCard` or markdown text) as README.md."""
    output_dir = Path(output_dir)
    merged = merge_adapter(model)
    merged.eval()
    # TRL patched forward with a fused LM head on this instance; the saved class is untouched.
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if model_card:
        (output_dir / "README.md").write_text(str(model_card), encoding="utf-8")
    return output_dir


def merge_adapter_checkpoint(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None,
                             dtype: torch.dtype = torch.bfloat16) -> Path:
    """Merge a saved EmoLA adapter into its base model and save the full checkpoint (default `adapter_dir/merged`).

    For runs that cannot merge in place: QLoRA (merging into 4-bit weights would lose precision), DeepSpeed ZeRO-3
    and FSDP (sharded parameters). Rebuilds the base from `emola_base.json`, written by `train_emola`.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    adapter_dir = Path(adapter_dir)
    info_path = adapter_dir / BASE_INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found: merge_adapter_checkpoint needs an adapter saved by train_emola")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if not info["base_model"]:
        raise ValueError(f"The base model of {adapter_dir} was built in memory, not loaded from a checkpoint, so it "
                         "cannot be rebuilt here: merge in the training run (--merge)")
    base, _ = load_model_and_processor(
        info["base_model"], use_facial_prior=info["use_facial_prior"], facial_prior_dim=info["facial_prior_dim"],
        add_facial_prior=info.get("add_facial_prior", False), facial_prior_backend=info["facial_prior_backend"],
        dtype=dtype, direct_llava_load=False,
    )
    model = PeftModel.from_pretrained(base, adapter_dir)
    processor = AutoProcessor.from_pretrained(adapter_dir)
    card = adapter_dir / "README.md"
    return save_merged(model, processor, output_dir or adapter_dir / "merged",
                       model_card=card.read_text(encoding="utf-8") if card.is_file() else None)


def _training_details(base_model, use_facial_prior, full_fine_tune, hyperparameters: dict, metrics: dict) -> str:
    kind = "EmoLA" if use_facial_prior else "the LLaVA-LoRA baseline (no facial prior token)"
    start = f"`{base_model}`" if base_model else "a model built in memory"
    method = "full fine-tuning of the language model and projectors" if full_fine_tune else "PEFT LoRA"
    lines = [f"Fine-tuned as {kind} from {start} with `transformers-emola` (TRL `SFTTrainer` + {method}, loss on the "
             "answers only; the recipe of Li et al., ECCV 2024).", ""]
    if hyperparameters:
        lines += ["| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in hyperparameters.items()] + [""]
    if metrics:
        lines += ["Training results: " + ", ".join(f"{key} = {value}" for key, value in metrics.items()), ""]
    return "\n".join(lines).strip()


def training_model_card(
    model_id: str,
    base_model: str | None,
    task: str | None,
    *,
    dataset: str | None = None,
    use_facial_prior: bool = True,
    facial_prior_backend: str | None = None,
    full_fine_tune: bool = False,
    hyperparameters: dict | None = None,
    metrics: dict | None = None,
    model_name: str | None = None,
):
    """The model card of a training run: `build_model_card` with the run's details (recipe, hyperparameters,
    training metrics) as its Training section; a base model built in memory (`base_model=None`) is not recorded."""
    details = _training_details(base_model, use_facial_prior, full_fine_tune, hyperparameters or {}, metrics or {})
    prior = {"facial_prior_backend": facial_prior_backend} if facial_prior_backend else {}
    return build_model_card(model_id, task, details, base_model=base_model, dataset=dataset or "FABA-Instruct",
                            use_facial_prior=use_facial_prior, tags=["trl", "sft", "full" if full_fine_tune else "lora"],
                            full_fine_tune=full_fine_tune, model_name=model_name, **prior)


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None,
                       private: bool | None = None, commit_message: str = "Upload EmoLA") -> str:
    """Upload a saved adapter or merged checkpoint folder; returns the repository URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(url)
