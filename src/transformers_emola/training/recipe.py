"""EmoLA's training recipe, end to end: `train_emola`, behind `emola train` and `examples/sft_emola.py`."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig

from ..faba import VICUNA_V1_SYSTEM_PROMPT
from ..families import facial_prior_family
from .arguments import EmolaScriptArguments
from .models import load_model_and_processor
from .outputs import BASE_INFO_FILE, merge_adapter_checkpoint, push_folder_to_hub, save_merged, training_model_card
from .trainer import build_lora_config, build_trainer

logger = logging.getLogger(__name__)

__all__ = ["format_summary", "peak_memory_bytes", "resolve_resume", "standardize_facial_priors", "train_emola"]


def _system_prompt(choice: str | None, model=None, model_name_or_path: str | None = None,
                   revision: str | None = None) -> str | None:
    """The system turn of the training conversations; "auto" is EmoLA's Vicuna prompt for LLaVA and the chat
    template's own (none added) for the other families, whose templates and evaluation use their own."""
    if choice == "auto":
        from transformers import AutoConfig

        try:
            config = model.config if model is not None else AutoConfig.from_pretrained(
                model_name_or_path, **({"revision": revision} if revision else {}))
            choice = "vicuna_v1" if facial_prior_family(config).name == "llava" else None
        except ValueError:
            choice = None  # not a supported family: loading the model says so
    if choice in (None, "", "default"):
        return None
    if choice == "vicuna_v1":
        return VICUNA_V1_SYSTEM_PROMPT
    return choice


def standardize_facial_priors(model, training_priors) -> None:
    """Store the training priors' mean and std in `model.config` (the model then standardises its inputs itself).

    A model that already carries them (an EmoLA checkpoint trained so) keeps its own: its projector was trained on
    them, so new statistics would shift every input it has learnt to read.
    """
    from ..facial_prior import prior_statistics

    config = model.config
    if config.facial_prior_mean is not None or config.facial_prior_std is not None:
        logger.info("The model already standardises its facial priors; keeping its statistics")
        return
    config.facial_prior_mean, config.facial_prior_std = prior_statistics(training_priors)


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated by this process when on CUDA, else its peak resident memory (VmHWM)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as status:  # unlike ru_maxrss, not inherited across exec
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def resolve_resume(resume: str | bool | None, output_dir: str) -> str | bool | None:
    """`--resume_from_checkpoint true|last|latest` -> the newest checkpoint of `output_dir` (None when there is none);
    `false|none|""` -> None; a path or a bool as given."""
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.warning("No checkpoint in %s to resume from: starting a new run", output_dir)
        return last
    if isinstance(resume, str) and resume.lower() in ("false", "none", ""):
        return None
    return resume


def train_emola(
    script_args: EmolaScriptArguments,
    training_args: SFTConfig,
    model_args=None,
    callbacks: list | None = None,
    *,
    model=None,
    processor=None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Run EmoLA's recipe: load FABA-Instruct, load the model, add LoRA, train (or resume), save the adapter and its
    model card, optionally merge and push. Returns a summary dict (steps, processes, samples/s, peak memory, losses,
    output paths, and the `trainer`); `format_summary(summary)` words it.

    `model_args` is TRL's `ModelConfig` (`model_name_or_path`, `use_peft`, `lora_*`, `load_in_4bit`, `dtype`):
    an EmoLA checkpoint of any family, an HF LLaVA-1.5 checkpoint, or with `script_args.add_facial_prior` a
    Qwen2.5-VL / Idefics3 / Gemma 3 base checkpoint (see `load_model_and_processor`). A
    `model` built in memory (with its `processor`) is trained instead of loading `model_name_or_path`, as `emola demo`
    does with its tiny random model; the adapter's `emola_base.json` then records no base model. `model_name` names
    the model in its card (default: `hub_model_id`, else the output folder's name); the card's usage code loads the
    merged checkpoint when there is one.
    """
    from trl import ModelConfig
    from trl.trainer.utils import get_quantization_config

    from ..data import load_faba_instruct

    model_args = model_args or ModelConfig()
    if model is None and not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: an EmoLA or HF LLaVA-1.5 checkpoint, or a Qwen2.5-VL, "
                         "Idefics3/SmolVLM or Gemma 3 one with --add_facial_prior true")
    if (model is None) != (processor is None):
        raise ValueError("pass model= and processor= together")
    if not script_args.train_annotations or not script_args.image_root:
        raise ValueError("--train_annotations and --image_root are required")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    started = time.perf_counter()
    revision = model_args.model_revision if model_args.model_revision != "main" else None
    system_prompt = _system_prompt(script_args.system_prompt, model, model_args.model_name_or_path, revision)
    data_kwargs = dict(
        image_root=script_args.image_root, task=script_args.task, landmark_root=script_args.landmark_root,
        use_facial_prior=script_args.use_facial_prior, system_prompt=system_prompt,
        on_invalid=script_args.on_invalid, return_report=True,
    )
    train_dataset, report = load_faba_instruct(script_args.train_annotations, split="train",
                                               max_samples=script_args.max_train_samples, **data_kwargs)
    if len(train_dataset) == 0:
        raise ValueError(f"No valid training rows in {script_args.train_annotations}")
    eval_dataset = None
    if script_args.eval_annotations:
        eval_dataset = load_faba_instruct(script_args.eval_annotations, split="eval", include_reference_answer=True,
                                          **data_kwargs)[0]
    prior_dim = len(train_dataset[0]["facial_priors"]) if script_args.use_facial_prior else None
    task = script_args.task or (train_dataset[0]["task"] if "task" in train_dataset.column_names else None)

    quantization_config = get_quantization_config(model_args)
    base_model = None
    if model is None:
        base_model = model_args.model_name_or_path
        model, processor = load_model_and_processor(
            base_model,
            use_facial_prior=script_args.use_facial_prior,
            add_facial_prior=script_args.add_facial_prior,
            facial_prior_dim=prior_dim,
            facial_prior_backend=script_args.facial_prior_backend,
            dtype=model_args.dtype,
            quantization_config=quantization_config,
            attn_implementation=model_args.attn_implementation,
            revision=revision,
        )
    elif quantization_config is not None:
        raise ValueError("4/8-bit loading applies to a checkpoint loaded from --model_name_or_path, not to a model "
                         "built in memory")
    if script_args.facial_prior_normalization == "standardize" and script_args.use_facial_prior:
        standardize_facial_priors(model, train_dataset["facial_priors"])
    peft_config = None
    if model_args.use_peft:
        peft_config = build_lora_config(
            model, r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules, modules_to_save=model_args.lora_modules_to_save,
            use_rslora=model_args.use_rslora, use_dora=model_args.use_dora,
        )
    # Trainer's own hub push would create the repo at start-up and push every save; push once at the end instead.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = build_trainer(model, processor, train_dataset, training_args, eval_dataset=eval_dataset,
                            peft_config=peft_config, callbacks=callbacks, pad_to_square=script_args.pad_to_square)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # the adapter (+ projectors) and the processor
    if trainer.is_world_process_zero():
        # What merge_adapter_checkpoint needs to rebuild the base model the adapter was trained on.
        Path(training_args.output_dir, BASE_INFO_FILE).write_text(json.dumps({
            "base_model": base_model,
            "use_facial_prior": script_args.use_facial_prior,
            "add_facial_prior": script_args.add_facial_prior,
            "facial_prior_dim": prior_dim,
            "facial_prior_backend": script_args.facial_prior_backend,
        }, indent=2), encoding="utf-8")
    metrics = dict(result.metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "global_step": trainer.state.global_step,
        "train_samples": len(train_dataset),
        "num_processes": training_args.world_size,
        "skipped_rows": report.num_skipped,
        "train_loss": metrics.get("train_loss"),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "train_runtime_s": metrics.get("train_runtime"),
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "peak_memory_bytes": peak_memory_bytes(),
        "output_dir": training_args.output_dir,
        "merged_dir": None,
        "metrics": metrics,
        "trainer": trainer,
    }
    merged_dir = script_args.merged_output_dir or os.path.join(training_args.output_dir, "merged")
    card_model_id = training_args.hub_model_id or (merged_dir if script_args.merge else training_args.output_dir)
    card = training_model_card(
        card_model_id,
        base_model,
        task,
        dataset=Path(script_args.train_annotations).name,
        use_facial_prior=script_args.use_facial_prior,
        facial_prior_backend=script_args.facial_prior_backend if script_args.use_facial_prior else None,
        full_fine_tune=peft_config is None,
        hyperparameters=_card_hyperparameters(training_args, model_args),
        metrics={k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
        model_name=model_name or (training_args.hub_model_id or Path(training_args.output_dir).name).split("/")[-1],
    )
    if trainer.is_world_process_zero():
        card.save(Path(training_args.output_dir, "README.md"))
    if script_args.merge:
        sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
        if sharded:
            logger.warning("Not merging in a sharded (DeepSpeed/FSDP) run: merge the saved adapter afterwards, in one "
                           "process, with transformers_emola.training.merge_adapter_checkpoint(%r, %r)",
                           training_args.output_dir, merged_dir)
        elif trainer.is_world_process_zero():
            if quantization_config is not None:  # merge into bf16 weights, not into the 4/8-bit ones
                merge_adapter_checkpoint(training_args.output_dir, merged_dir)
            else:
                save_merged(trainer.model, processor, merged_dir, model_card=card)
            summary["merged_dir"] = merged_dir
    if push_to_hub and trainer.is_world_process_zero():
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        folder = summary["merged_dir"] or training_args.output_dir
        summary["hub_url"] = push_folder_to_hub(folder, training_args.hub_model_id, token=training_args.hub_token,
                                                private=training_args.hub_private_repo)
    summary["wall_time_s"] = time.perf_counter() - started
    if trainer.is_world_process_zero():
        logger.info(format_summary(summary))
    return summary


def _card_hyperparameters(training_args, model_args) -> dict:
    values = {
        "learning_rate": training_args.learning_rate,
        "mm_projector_lr": getattr(training_args, "mm_projector_lr", None),
        "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "warmup_steps": training_args.warmup_steps,
        "num_train_epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "seed": training_args.seed,
    }
    if model_args.use_peft:
        values.update(lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                      lora_dropout=model_args.lora_dropout)
    return values


def format_summary(summary: dict) -> str:
    """The end-of-run lines: steps, samples, processes (the world size: each process trains on its own part of
    every step's samples), throughput, peak memory (of this process), losses, outputs."""
    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "n/a"

    device = "GPU" if torch.cuda.is_available() and torch.cuda.is_initialized() else "CPU RSS"
    lines = [
        "==== EmoLA training summary ====",
        f"steps: {summary['global_step']}   samples: {summary['train_samples']}   "
        f"processes: {summary.get('num_processes', 1)}"
        + (f"   skipped rows: {summary['skipped_rows']}" if summary.get("skipped_rows") else ""),
        f"samples/s: {fmt(summary['train_samples_per_second'], '.2f')}   "
        f"runtime: {fmt(summary['train_runtime_s'], '.1f')} s",
        f"peak memory ({device}): {summary['peak_memory_bytes'] / 2**20:.0f} MiB",
        f"loss: first logged {fmt(summary['first_logged_loss'], '.4f')}, last logged "
        f"{fmt(summary['last_logged_loss'], '.4f')}, mean {fmt(summary['train_loss'], '.4f')}",
        f"saved: {summary['output_dir']}" + (f"   merged: {summary['merged_dir']}" if summary["merged_dir"] else ""),
    ]
    return "\n".join(lines)
