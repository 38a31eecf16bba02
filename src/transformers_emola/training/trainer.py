"""The trainer side of EmoLA's recipe: LoRA on the language model, three learning rates, a frozen vision tower.

As the paper (and the official `LLaVATrainer`): LoRA covers every linear layer of the language model; the
multimodal projector (at `mm_projector_lr`, 2e-5) and the facial-prior projector (at `learning_rate`, 1e-4) are
trained fully (`modules_to_save`); the vision tower stays frozen. Where these parts sit is read from the model's
family (`transformers_emola.families`), so the same recipe trains EmoLA on LLaVA, Qwen2.5-VL, Idefics3/SmolVLM and
Gemma 3. `build_trainer` is the one place a trainer is made: the recipe, the demo and the benchmarks call it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from torch import nn
from trl import SFTConfig, SFTTrainer

from ..families import FACIAL_PRIOR_PROJECTOR, facial_prior_family
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
    "trainable_projectors",
]

#: The parts trained in full, by role: the family's own (image) projector and the facial-prior projector. They name
#: the optimizer groups (and are the LLaVA module names).
PROJECTOR_MODULES = ("multi_modal_projector", "facial_prior_projector")


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (module paths of the family are relative to it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:  # the LLaVA-LoRA baseline has no prior projector
        return None


def trainable_projectors(model: nn.Module) -> dict[str, str]:
    """Role (`PROJECTOR_MODULES`) -> module path of the parts EmoLA trains in full: the family's projector (LLaVA's
    `model.multi_modal_projector`, Qwen2.5-VL's `model.visual.merger`, Idefics3's `model.connector`, ...) and the
    facial-prior projector, when the model has one."""
    model = _unwrapped(model)
    family = facial_prior_family(model)
    paths = dict(zip(PROJECTOR_MODULES, (family.projector, FACIAL_PRIOR_PROJECTOR)))
    return {role: path for role, path in paths.items() if _submodule(model, path) is not None}


def _language_model(model: nn.Module) -> tuple[str, nn.Module]:
    model = _unwrapped(model)
    path = facial_prior_family(model).language_model
    return path, model.get_submodule(path)


def language_model_linear_names(model: nn.Module) -> list[str]:
    """Full names of every `nn.Linear` inside the language model (not `lm_head`, the vision tower, the projectors)."""
    prefix, language_model = _language_model(model)
    return [f"{prefix}.{name}" for name, module in language_model.named_modules() if isinstance(module, nn.Linear)]


def lora_target_modules(model: nn.Module) -> str:
    """A PEFT `target_modules` regex that matches exactly the language model's linear layers.

    Written as a pattern (not 224 names) so the adapter config stays readable; checked against the model, so a
    layer elsewhere with the same leaf name (a projector's `linear_1`, Qwen2.5-VL's vision `gate_proj`) can never be
    caught by it.
    """
    names = language_model_linear_names(model)
    if not names:
        raise ValueError("The language model has no nn.Linear layer to adapt")
    prefix, _ = _language_model(model)
    leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
    pattern = rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, leaves))})"
    linear = {name for name, module in _unwrapped(model).named_modules() if isinstance(module, nn.Linear)}
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
    """EmoLA's `LoraConfig`: r=128, alpha=256, dropout 0.05 on every LM linear; the family's projector and the prior
    projector fully trained (by module path, `trainable_projectors`)."""
    from peft import LoraConfig

    if modules_to_save is None:
        modules_to_save = list(trainable_projectors(model).values())
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


def emola_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    mm_projector_lr: float | None = None,
    facial_prior_projector_lr: float | None = None,
    weight_decay: float = 0.0,
    decay_parameter_names: Sequence[str] | None = None,
) -> list[dict]:
    """Optimizer groups of the trainable parameters, as the official `LLaVATrainer.create_optimizer`.

    The family's projector (group `multi_modal_projector`, whatever the module is called) gets `mm_projector_lr`,
    `facial_prior_projector` gets `facial_prior_projector_lr`, the rest (LoRA, or the LM when fully fine-tuned)
    `learning_rate`; each split into decayed / not decayed (`decay_parameter_names`, biases and norms excluded by the
    Trainer). Parameters are assigned by module (`trainable_projectors`), so a PEFT `modules_to_save` copy counts
    with its module. Groups carry a `name`; empty ones are left out.
    """
    rates = {
        "multi_modal_projector": learning_rate if mm_projector_lr is None else mm_projector_lr,
        "facial_prior_projector": learning_rate if facial_prior_projector_lr is None else facial_prior_projector_lr,
        "language_model": learning_rate,
    }
    decay = set(decay_parameter_names) if decay_parameter_names is not None else None
    base = _unwrapped(model)
    role_of = {id(parameter): role for role, path in trainable_projectors(base).items()
               for parameter in base.get_submodule(path).parameters()}
    members: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = role_of.get(id(parameter), "language_model")
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
    ...                       activation_checkpointing=False, save_strategy="no", disable_tqdm=True)
    >>> trainer = EmolaSFTTrainer(model, args, train_dataset=Dataset.from_list([row] * 2),
    ...                           processing_class=processor, peft_config=build_lora_config(model, r=4, lora_alpha=8))
    >>> sorted({g["name"]: g["lr"] for g in trainer.create_optimizer().param_groups}.items())
    [('facial_prior_projector.no_decay', 0.0001), ('language_model.no_decay', 0.0001), ('multi_modal_projector.no_decay', 2e-05)]

    ```"""

    def __init__(self, model, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if processing_class is None:
            raise ValueError("EmolaSFTTrainer needs processing_class=<the model's EmoLA processor>")
        if args is not None and not args.assistant_only_loss:
            logger.warning("assistant_only_loss=False: the loss covers the prompt too, unlike EmoLA's recipe")
        if data_collator is None:
            data_collator = EmolaDataCollator(
                processing_class,
                max_length=getattr(args, "max_length", None),
                assistant_only_loss=getattr(args, "assistant_only_loss", True),
                pad_to_multiple_of=getattr(args, "pad_to_multiple_of", None),
            )
        # TRL's assistant-only loss swaps in a {% generation %}-marked template for TRL's own collator and refuses
        # templates it has no marked variant of; EmoLA's collator finds the answers itself (see EmolaDataCollator).
        assistant_only_loss = getattr(args, "assistant_only_loss", False)
        if assistant_only_loss:
            args.assistant_only_loss = False
        try:
            super().__init__(model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        finally:
            if assistant_only_loss:
                args.assistant_only_loss = True

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
    """EmoLA never trains the vision encoder (CLIP for LLaVA); this also holds for full fine-tuning without LoRA.

    A projector that sits inside the vision tower (Qwen2.5-VL's `merger`) is the family's projector and stays
    trainable.
    """
    model = _unwrapped(model)
    family = facial_prior_family(model)
    projector = {id(parameter) for parameter in model.get_submodule(family.projector).parameters()}
    for parameter in model.get_submodule(family.vision_tower).parameters():
        if id(parameter) not in projector:
            parameter.requires_grad_(False)


def build_trainer(
    model,
    processor,
    train_dataset,
    args: SFTConfig,
    eval_dataset=None,
    peft_config="default",
    callbacks: list | None = None,
    pad_to_square: bool | None = True,
) -> EmolaSFTTrainer:
    """An `EmolaSFTTrainer` for `model` (EmoLA of any family, or a base model for the no-prior baseline) and its
    processor, with EmoLA's LoRA (`peft_config="default"`), a given `LoraConfig`, or None for full fine-tuning of
    the LM and projectors. The vision tower is frozen either way.

    `pad_to_square` sets `processor.pad_to_square` where the processor has it (LLaVA's `EmolaProcessor`: EmoLA's
    training pads; None leaves it as it is). The other families resize images their own way.
    """
    if pad_to_square is not None and hasattr(processor, "pad_to_square"):
        processor.pad_to_square = pad_to_square
    freeze_vision_tower(model)
    if isinstance(peft_config, str):
        if peft_config != "default":
            raise ValueError(f"peft_config must be 'default', a peft.PeftConfig or None, got {peft_config!r}")
        peft_config = build_lora_config(model)
    if peft_config is None:
        model.requires_grad_(True)
        freeze_vision_tower(model)
    if args.activation_checkpointing and args.activation_checkpointing_kwargs is None:
        args.activation_checkpointing_kwargs = {"use_reentrant": False}
    return EmolaSFTTrainer(
        model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )
