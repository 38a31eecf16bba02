"""The trainer side of EmoLA's recipe: LoRA on the language model, three learning rates, a frozen vision tower.

As the paper (and the official `LLaVATrainer`): LoRA covers every linear layer of the language model; the
multimodal projector (at `mm_projector_lr`, 2e-5) and the facial-prior projector (at `learning_rate`, 1e-4) are
trained fully (`modules_to_save`); CLIP stays frozen. `build_trainer` is the one place a trainer is made: the
recipe, the demo and the benchmarks call it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from torch import nn
from trl import SFTConfig, SFTTrainer

from ..modeling_emola import EmolaForConditionalGeneration
from ..processing_emola import EmolaProcessor
from .collator import EmolaDataCollator

logger = logging.getLogger(__name__)

__all__ = [
    "EmolaSFTTrainer",
    "PROJECTOR_MODULES",
    "build_lora_config",
    "build_trainer",
    "emola_parameter_groups",
    "freeze_vision_tower",
    "language_model_linear_names",
    "lora_target_modules",
]

PROJECTOR_MODULES = ("multi_modal_projector", "facial_prior_projector")


def _language_model(model: nn.Module) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if name.split(".")[-1] == "language_model":
            return name, module
    raise ValueError(f"{type(model).__name__} has no `language_model` submodule to put LoRA on")


def language_model_linear_names(model: nn.Module) -> list[str]:
    """Full names of every `nn.Linear` inside the language model (not `lm_head`, the vision tower, the projectors)."""
    prefix, language_model = _language_model(model)
    return [f"{prefix}.{name}" for name, module in language_model.named_modules() if isinstance(module, nn.Linear)]


def lora_target_modules(model: nn.Module) -> str:
    """A PEFT `target_modules` regex that matches exactly the language model's linear layers.

    Written as a pattern (not 224 names) so the adapter config stays readable; checked against the model, so a
    layer added elsewhere with the same leaf name (e.g. a projector's `linear_1`) can never be caught by it.
    """
    names = language_model_linear_names(model)
    if not names:
        raise ValueError("The language model has no nn.Linear layer to adapt")
    prefix, _ = _language_model(model)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
    pattern = rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})"
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    matched = {name for name in linear if re.fullmatch(pattern, name)}
    if matched != set(names):
        return "|".join(re.escape(name) for name in names)  # fall back to the explicit list as one pattern
    return pattern


def build_lora_config(
    model: nn.Module,
    r: int = 128,
    lora_alpha: int = 256,
    lora_dropout: float = 0.05,
    target_modules: str | list[str] | None = None,
    modules_to_save: list[str] | None = None,
    use_rslora: bool = False,
    use_dora: bool = False,
):
    """EmoLA's `LoraConfig`: r=128, alpha=256, dropout 0.05 on every LM linear; both projectors fully trained."""
    from peft import LoraConfig

    if modules_to_save is None:
        modules_to_save = [name for name in PROJECTOR_MODULES if _has_module(model, name)]
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules if target_modules is not None else lora_target_modules(model),
        modules_to_save=modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
        use_rslora=use_rslora,
        use_dora=use_dora,
    )


def _has_module(model: nn.Module, leaf: str) -> bool:
    return any(name.split(".")[-1] == leaf and module is not None for name, module in model.named_modules())


def emola_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    mm_projector_lr: float | None = None,
    facial_prior_projector_lr: float | None = None,
    weight_decay: float = 0.0,
    decay_parameter_names: Sequence[str] | None = None,
) -> list[dict]:
    """Optimizer groups of the trainable parameters, as the official `LLaVATrainer.create_optimizer`.

    `multi_modal_projector` gets `mm_projector_lr`, `facial_prior_projector` gets `facial_prior_projector_lr`, the
    rest (LoRA, or the LM when fully fine-tuned) `learning_rate`; each split into decayed / not decayed
    (`decay_parameter_names`, biases and norms excluded by the Trainer). Groups carry a `name`; empty ones are left out.
    """
    rates = {
        "multi_modal_projector": learning_rate if mm_projector_lr is None else mm_projector_lr,
        "facial_prior_projector": learning_rate if facial_prior_projector_lr is None else facial_prior_projector_lr,
        "language_model": learning_rate,
    }
    decay = set(decay_parameter_names) if decay_parameter_names is not None else None
    members: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = next((key for key in PROJECTOR_MODULES if f"{key}." in name), "language_model")
        decayed = weight_decay > 0 and (decay is None or name in decay)
        members.setdefault((part, decayed), []).append(parameter)
    groups = []
    for (part, decayed), params in members.items():
        groups.append({
            "name": part + ("" if decayed else ".no_decay"),
            "params": params,
            "lr": rates[part],
            "weight_decay": weight_decay if decayed else 0.0,
        })
    return groups


class EmolaSFTTrainer(SFTTrainer):
    r"""
    `SFTTrainer` for EmoLA: `EmolaDataCollator` by default, keeps the `facial_priors` column, and builds the
    optimizer with EmoLA's per-module learning rates (`mm_projector_lr`, `facial_prior_projector_lr` of
    `EmolaSFTConfig`; plain `SFTConfig`s give every module `learning_rate`).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from PIL import Image
    >>> from transformers_emola import build_tiny_emola
    >>> from transformers_emola.training import EmolaSFTConfig, EmolaSFTTrainer, build_lora_config
    >>> model, processor = build_tiny_emola(texts=["The face shows AU12."])
    >>> row = {"images": [Image.new("RGB", (28, 28))], "facial_priors": [0.0] * 136, "messages": [
    ...     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What AUs?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "text": "The face shows AU12."}]}]}
    >>> args = EmolaSFTConfig(output_dir="/tmp/emola-doc", use_cpu=True, report_to=[], max_steps=1,
    ...                       gradient_checkpointing=False, save_strategy="no", disable_tqdm=True)
    >>> trainer = EmolaSFTTrainer(model, args, train_dataset=Dataset.from_list([row] * 2),
    ...                           processing_class=processor, peft_config=build_lora_config(model, r=4, lora_alpha=8))
    >>> sorted({g["name"]: g["lr"] for g in trainer.create_optimizer().param_groups}.items())
    [('facial_prior_projector.no_decay', 0.0001), ('language_model.no_decay', 0.0001), ('multi_modal_projector.no_decay', 2e-05)]

    ```"""

    def __init__(self, model, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if processing_class is None:
            raise ValueError("EmolaSFTTrainer needs processing_class=<EmolaProcessor>")
        if args is not None and not args.assistant_only_loss:
            logger.warning("assistant_only_loss=False: the loss covers the prompt too, unlike EmoLA's recipe")
        if data_collator is None:
            data_collator = EmolaDataCollator(
                processing_class,
                max_length=getattr(args, "max_length", None),
                assistant_only_loss=getattr(args, "assistant_only_loss", True),
                pad_to_multiple_of=getattr(args, "pad_to_multiple_of", None),
            )
        super().__init__(model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "facial_priors" not in self._signature_columns:
            self._signature_columns = list(self._signature_columns) + ["facial_priors"]

    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = emola_parameter_groups(
                opt_model,
                learning_rate=self.args.learning_rate,
                mm_projector_lr=getattr(self.args, "mm_projector_lr", None),
                facial_prior_projector_lr=getattr(self.args, "facial_prior_projector_lr", None),
                weight_decay=self.args.weight_decay,
                decay_parameter_names=self.get_decay_parameter_names(opt_model),
            )
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def freeze_vision_tower(model: nn.Module) -> None:
    """EmoLA never trains CLIP; this also holds for full fine-tuning without LoRA."""
    for name, parameter in model.named_parameters():
        if ".vision_tower." in f".{name}":
            parameter.requires_grad_(False)


def build_trainer(
    model: EmolaForConditionalGeneration,
    processor: EmolaProcessor,
    train_dataset,
    args: SFTConfig,
    eval_dataset=None,
    peft_config="default",
    callbacks: list | None = None,
    pad_to_square: bool | None = True,
) -> EmolaSFTTrainer:
    """An `EmolaSFTTrainer` for `model`, with EmoLA's LoRA (`peft_config="default"`), a given `LoraConfig`, or
    None for full fine-tuning of the LM and projectors. The vision tower is frozen either way.

    `pad_to_square` sets `processor.pad_to_square` (EmoLA's training pads; None leaves it as it is).
    """
    if pad_to_square is not None:
        processor.pad_to_square = pad_to_square
    freeze_vision_tower(model)
    if isinstance(peft_config, str):
        if peft_config != "default":
            raise ValueError(f"peft_config must be 'default', a peft.PeftConfig or None, got {peft_config!r}")
        peft_config = build_lora_config(model)
    if peft_config is None:
        model.requires_grad_(True)
        freeze_vision_tower(model)
    if getattr(args, "gradient_checkpointing", False) and getattr(args, "gradient_checkpointing_kwargs", None) is None:
        args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    return EmolaSFTTrainer(
        model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )
