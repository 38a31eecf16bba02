"""EmoLA's training recipe on the standard stack: TRL `SFTTrainer` + PEFT LoRA, with EmoLA's two deltas.

What EmoLA adds to a plain TRL vision SFT, and so what lives here:
- the collator passes `facial_priors` to the processor (TRL's vision collator drops extra columns) and trains on
  the answers only, using the `{% generation %}` markers of EmoLA's chat template;
- the optimizer has three learning rates as in the paper: LoRA and the facial-prior projector at `learning_rate`
  (1e-4), the multimodal projector at `mm_projector_lr` (2e-5); both projectors are trained fully
  (`modules_to_save`), the vision tower stays frozen, LoRA covers every linear layer of the language model.

`train_emola` runs the whole recipe from the three argument dataclasses of `examples/sft_emola.py`; `build_trainer`
is the reusable core (the demo and the benchmarks call it with a model they built).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.trainer_utils import SchedulerType
from trl import SFTConfig, SFTTrainer

from .configuration_emola import EmolaConfig
from .modeling_emola import EmolaForConditionalGeneration
from .processing_emola import EmolaProcessor

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
BASE_INFO_FILE = "emola_base.json"
# llava-hf checkpoints saved before transformers 4.52 (llava-hf/llava-1.5-7b-hf among them) use these key prefixes.
LLAVA_LEGACY_KEY_MAPPING = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}
PROJECTOR_MODULES = ("multi_modal_projector", "facial_prior_projector")


# ---------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EmolaSFTConfig(SFTConfig):
    r"""
    `SFTConfig` with EmoLA's defaults (paper, Sec. 1.6 of the notes) and its per-module learning rates.

    Args:
        mm_projector_lr (`float`, *optional*, defaults to `2e-5`): learning rate of the multimodal (image)
            projector; None uses `learning_rate`.
        facial_prior_projector_lr (`float`, *optional*): learning rate of the facial-prior projector; None (the
            paper) uses `learning_rate`.

    Changed defaults: `learning_rate=1e-4`, cosine schedule, `warmup_steps=0.03` (a ratio), `weight_decay=0`,
    1 epoch, `assistant_only_loss=True`, `remove_unused_columns=False`, `max_length=2048`, and `bf16` only where
    the GPU supports it.

    Example:

    ```python
    >>> from transformers_emola.training import EmolaSFTConfig
    >>> args = EmolaSFTConfig(output_dir="out", use_cpu=True, report_to=[])
    >>> args.learning_rate, args.mm_projector_lr, args.lr_scheduler_type.value, args.bf16
    (0.0001, 2e-05, 'cosine', False)

    ```"""

    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of LoRA (and the prior projector)."})
    mm_projector_lr: float | None = field(
        default=2e-5, metadata={"help": "Learning rate of the multimodal projector (None: learning_rate)."}
    )
    facial_prior_projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the facial-prior projector (None: learning_rate)."}
    )
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "The scheduler type to use."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warmup steps, or a ratio of the steps when < 1."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay for AdamW."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Total number of training epochs."})
    max_length: int | None = field(default=2048, metadata={"help": "Longest tokenized sample (EmoLA: 2048)."})
    assistant_only_loss: bool = field(default=True, metadata={"help": "Train on the answers only (EmoLA)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the `facial_priors` column for the collator."}
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            # "bf16 where available": TRL would turn it on everywhere, CPU included.
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not self.use_cpu)
        super().__post_init__()


@dataclass
class EmolaScriptArguments:
    """Data and run options of `examples/sft_emola.py` (model and LoRA options are TRL's `ModelConfig`)."""

    train_annotations: str | None = field(
        default=None, metadata={"help": "FABA-Instruct training annotations (.json/.jsonl), or the data folder."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder the image/landmark paths are relative to."})
    task: str | None = field(default=None, metadata={"help": "au or emotion (inferred from the file name)."})
    eval_annotations: str | None = field(
        default=None, metadata={"help": "Optional eval annotations; their gpt4 references give an eval loss."}
    )
    landmark_root: str | None = field(default=None, metadata={"help": "Folder of the landmark paths (image_root)."})
    use_facial_prior: bool = field(
        default=True, metadata={"help": "False trains the LLaVA-LoRA baseline (no prior token) for ablations."}
    )
    facial_prior_backend: str = field(
        default="insightface_2d106", metadata={"help": "Backend that made the priors (saved in the config)."}
    )
    system_prompt: str = field(
        default="vicuna_v1",
        metadata={"help": "vicuna_v1 (the official training prompt), default (the chat template's), or a text."},
    )
    pad_to_square: bool = field(default=True, metadata={"help": "Pad images to squares (EmoLA training)."})
    on_invalid: str = field(default="raise", metadata={"help": "raise or skip invalid annotation rows."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    merge: bool = field(default=False, metadata={"help": "Also save a merged full checkpoint (output_dir/merged)."})
    merged_output_dir: str | None = field(default=None, metadata={"help": "Where --merge writes the checkpoint."})
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (1 is fastest for the tiny model on a busy machine)."}
    )
    tiny_vocab_size: int = field(default=400, metadata={"help": "model_name_or_path=tiny: tokenizer size."})
    tiny_hidden_size: int = field(default=32, metadata={"help": "model_name_or_path=tiny: LM width."})
    tiny_num_hidden_layers: int = field(default=2, metadata={"help": "model_name_or_path=tiny: LM depth."})
    tiny_image_size: int = field(default=28, metadata={"help": "model_name_or_path=tiny: CLIP input size."})


# ---------------------------------------------------------------------------------------------------------------
# Collator
# ---------------------------------------------------------------------------------------------------------------
def _clean_messages(messages: list[dict]) -> list[dict]:
    """Drop the None fields that Arrow adds to typed content (an image item has `text=None`)."""
    cleaned = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in item.items() if v is not None} for item in content]
        cleaned.append({"role": message["role"], "content": content})
    return cleaned


@dataclass
class EmolaDataCollator:
    r"""
    Turns rows of `load_faba_instruct` (`images`, `messages`, `facial_priors`) into EmoLA training batches.

    The chat template renders each conversation; the processor expands `<image>` into the image tokens plus the
    `<facial_prior>` token and preprocesses the images; labels are the input ids with -100 everywhere except the
    assistant answers and their `</s>` (from the template's `{% generation %}` markers), so image, prior, system
    and question tokens carry no loss, as in LLaVA's `preprocess_v1`. Padding goes right.

    Args:
        processor (`EmolaProcessor`): the model's processor (its `pad_to_square` applies).
        max_length (`int`, *optional*): longer samples are cut at the end; a cut through the image tokens raises.
        assistant_only_loss (`bool`, defaults to `True`): False trains on every text token (image and prior tokens
            are never trained on).
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this.

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers_emola.testing_utils import build_tiny_emola
    >>> from transformers_emola.training import EmolaDataCollator
    >>> model, processor = build_tiny_emola(texts=["The face shows AU12."])
    >>> row = {"images": [Image.new("RGB", (32, 32))], "facial_priors": [0.0] * 136, "messages": [
    ...     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What AUs?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "text": "The face shows AU12."}]}]}
    >>> batch = EmolaDataCollator(processor)([row])
    >>> processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    'The face shows AU12.</s>'

    ```"""

    processor: EmolaProcessor
    max_length: int | None = None
    assistant_only_loss: bool = True
    pad_to_multiple_of: int | None = None

    def _images(self, example: dict) -> list:
        images = example.get("images")
        if images is None and example.get("image") is not None:
            images = [example["image"]]
        return list(images or [])

    def _priors(self, examples: list[dict], images: list[list]) -> torch.Tensor | None:
        if not self.processor.use_facial_prior:
            return None  # the LLaVA baseline ignores any prior column
        if any(example.get("facial_priors") is None for example in examples):
            return None  # the processor extracts them with its facial_prior_extractor, or explains what is missing
        rows = []
        for example, example_images in zip(examples, images):
            prior = torch.as_tensor(example["facial_priors"], dtype=torch.float32)
            prior = prior.reshape(-1, prior.shape[-1]) if prior.ndim else prior
            if prior.shape[0] != len(example_images):
                raise ValueError(f"Example {example.get('id', '?')} has {len(example_images)} images but "
                                 f"{prior.shape[0]} facial priors; give one prior per image")
            rows.append(prior)
        return torch.cat(rows) if rows else None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("EmolaDataCollator got an empty batch")
        if "messages" not in examples[0]:
            raise KeyError(f"EmolaDataCollator needs a 'messages' column (conversational data), got "
                           f"{sorted(examples[0])}")
        images = [self._images(example) for example in examples]
        messages = [_clean_messages(example["messages"]) for example in examples]
        processor_kwargs: dict[str, Any] = {"padding": True, "padding_side": "right"}
        if self.pad_to_multiple_of is not None:
            processor_kwargs["pad_to_multiple_of"] = self.pad_to_multiple_of
        if any(images):
            processor_kwargs["images"] = images
        priors = self._priors(examples, images)
        if priors is not None:
            processor_kwargs["facial_priors"] = priors
        batch = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=self.assistant_only_loss,
            processor_kwargs=processor_kwargs,
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        if self.assistant_only_loss:
            labels[batch.pop("assistant_masks") == 0] = IGNORE_INDEX
        for token_id in self._placeholder_ids():
            labels[batch["input_ids"] == token_id] = IGNORE_INDEX
        batch["labels"] = labels
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            self._truncate(batch)
        return dict(batch)

    def _placeholder_ids(self) -> list[int]:
        # The ids of the image tokens in the expanded text (Gemma 3's differ from the placeholder users write).
        ids = [i for i in getattr(self.processor, "image_token_ids", [self.processor.image_token_id]) if i is not None]
        if self.processor.use_facial_prior:
            ids.append(self.processor.facial_prior_token_id)
        return ids

    def _truncate(self, batch) -> None:
        before = [(batch["input_ids"] == token_id).sum().item() for token_id in self._placeholder_ids()]
        for key in ("input_ids", "attention_mask", "labels"):
            batch[key] = batch[key][:, : self.max_length]
        after = [(batch["input_ids"] == token_id).sum().item() for token_id in self._placeholder_ids()]
        if after != before:
            raise ValueError(f"max_length={self.max_length} cuts through the image tokens of a sample; raise "
                             "max_length (EmoLA-7B needs 577 image+prior tokens plus the prompt)")


# ---------------------------------------------------------------------------------------------------------------
# LoRA and optimizer groups
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------
class EmolaSFTTrainer(SFTTrainer):
    r"""
    `SFTTrainer` for EmoLA: `EmolaDataCollator` by default, keeps the `facial_priors` column, and builds the
    optimizer with EmoLA's per-module learning rates (`mm_projector_lr`, `facial_prior_projector_lr` of
    `EmolaSFTConfig`; plain `SFTConfig`s give every module `learning_rate`).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from PIL import Image
    >>> from transformers_emola.testing_utils import build_tiny_emola
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


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
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
    texts: Sequence[str] = (),
    dtype: str | torch.dtype | None = None,
    quantization_config=None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    tiny_kwargs: dict | None = None,
    seed: int = 0,
    direct_llava_load: bool | None = None,
) -> tuple[EmolaForConditionalGeneration, EmolaProcessor]:
    """The model to fine-tune and its processor, from `"tiny"` (offline random model whose tokenizer learns
    `texts`), an EmoLA checkpoint, or an HF LLaVA-1.5 checkpoint (`from_llava`: EmoLA's starting point, with a
    fresh prior projector of `facial_prior_dim`).

    `direct_llava_load` (default: when quantizing or under DeepSpeed ZeRO-3) loads a LLaVA checkpoint straight
    into `EmolaForConditionalGeneration.from_pretrained` instead of `from_llava`; the weights are the same.
    """
    if model_name_or_path == "tiny":
        from .testing_utils import build_tiny_emola

        kwargs = dict(tiny_kwargs or {})
        if facial_prior_dim is not None:
            kwargs["facial_prior_dim"] = facial_prior_dim
        model, processor = build_tiny_emola(texts=list(texts), use_facial_prior=use_facial_prior,
                                            facial_prior_backend=facial_prior_backend, seed=seed, **kwargs)
        return model.train(), processor

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
                         "LLaVA-1.5 checkpoint (e.g. llava-hf/llava-1.5-7b-hf), or 'tiny'")
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


# ---------------------------------------------------------------------------------------------------------------
# Outputs: merge, model card, push
# ---------------------------------------------------------------------------------------------------------------
def merge_adapter(model) -> EmolaForConditionalGeneration:
    """Fold the LoRA weights and the trained projectors into a plain `EmolaForConditionalGeneration`."""
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


def save_merged(model, processor, output_dir: str | os.PathLike, model_card: str | None = None) -> Path:
    """Save a merged model (safetensors) + processor that `from_pretrained` and `pipeline` load."""
    output_dir = Path(output_dir)
    merged = merge_adapter(model)
    merged.eval()
    # TRL patched forward with a fused LM head on this instance; the saved class is untouched.
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if model_card:
        (output_dir / "README.md").write_text(model_card, encoding="utf-8")
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
    if info["base_model"] == "tiny":
        raise ValueError("The tiny model is built in memory, not loaded: merge it in the training run (--merge)")
    base, _ = load_model_and_processor(
        info["base_model"], use_facial_prior=info["use_facial_prior"], facial_prior_dim=info["facial_prior_dim"],
        facial_prior_backend=info["facial_prior_backend"], dtype=dtype, direct_llava_load=False,
    )
    model = PeftModel.from_pretrained(base, adapter_dir)
    processor = AutoProcessor.from_pretrained(adapter_dir)
    card = adapter_dir / "README.md"
    return save_merged(model, processor, output_dir or adapter_dir / "merged",
                       model_card=card.read_text(encoding="utf-8") if card.is_file() else None)


def _training_details(base_model, use_facial_prior, hyperparameters: dict, metrics: dict) -> str:
    kind = "EmoLA" if use_facial_prior else "the LLaVA-LoRA baseline (no facial prior token)"
    lines = [f"Fine-tuned as {kind} from `{base_model}` with `transformers-emola` (TRL `SFTTrainer` + PEFT LoRA, "
             "loss on the answers only; the recipe of Li et al., ECCV 2024).", ""]
    if hyperparameters:
        lines += ["| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in hyperparameters.items()] + [""]
    if metrics:
        lines += ["Training results: " + ", ".join(f"{key} = {value}" for key, value in metrics.items()), ""]
    return "\n".join(lines).strip()


def generate_model_card(
    model_id: str,
    base_model: str | None,
    task: str | None,
    dataset: str | None = None,
    use_facial_prior: bool = True,
    facial_prior_backend: str | None = None,
    hyperparameters: dict | None = None,
    metrics: dict | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """A model card (README.md) for a fine-tuned EmoLA.

    Fills the repository's `model_cards/template.md` (`transformers_emola.model_card.render_model_card`) for an
    EmoLA model of a known task; writes a short card of its own when the template is absent or does not apply
    (the LLaVA baseline without prior, the tiny test model, an unknown task).
    """
    details = _training_details(base_model, use_facial_prior, hyperparameters or {}, metrics or {})
    if use_facial_prior and task in ("au", "emotion") and base_model not in (None, "tiny"):
        from .model_card import DEFAULT_TEMPLATE_PATH, render_model_card

        path = Path(template) if template is not None else DEFAULT_TEMPLATE_PATH
        if path.is_file():
            fields = {"model_id": model_id, "task": task, "training_details": details, "base_model": base_model}
            if dataset:
                fields["dataset"] = dataset
            if facial_prior_backend:
                fields["facial_prior_backend"] = facial_prior_backend
            return render_model_card(path, **fields)
    kind = "EmoLA" if use_facial_prior else "LLaVA-LoRA baseline (no facial prior)"
    task_name = {"au": "facial action unit", "emotion": "facial emotion"}.get(task or "", "facial affect")
    model_name = str(model_id).rstrip("/").split("/")[-1]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        *([f"base_model: {base_model}"] if base_model and base_model != "tiny" else []),
        "tags: [emola, transformers-emola, trl, sft, lora]",
        "---",
        "",
        f"# {model_name}",
        "",
        f"{kind} for {task_name} description"
        + (" (a tiny random model trained offline for tests and demos: its text is not meaningful)."
           if base_model == "tiny" else "."),
        "",
    ]
    if use_facial_prior:
        lines += [f"Facial priors: `{facial_prior_backend}` landmarks; pass `facial_priors` to the processor or set "
                  "its `facial_prior_extractor`.", ""]
    lines += ["## Usage", "", "```python", "import transformers_emola  # registers EmoLA with the Auto classes",
              "from transformers import pipeline", "",
              f'pipe = pipeline("image-text-to-text", model="{model_id}")', "```", "", "## Training", "", details, ""]
    return "\n".join(lines)


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None,
                       private: bool | None = None, commit_message: str = "Upload EmoLA") -> str:
    """Upload a saved adapter or merged checkpoint folder; returns the repository URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(url)


# ---------------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------------
def _system_prompt(choice: str | None) -> str | None:
    from .data import VICUNA_V1_SYSTEM_PROMPT

    if choice in (None, "", "default"):
        return None
    if choice == "vicuna_v1":
        return VICUNA_V1_SYSTEM_PROMPT
    return choice


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


def _resolve_resume(resume: str | bool | None, output_dir: str) -> str | bool | None:
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.warning("No checkpoint in %s to resume from: starting a new run", output_dir)
        return last
    if isinstance(resume, str) and resume.lower() in ("false", "none", ""):
        return None
    return resume


def train_emola(script_args: EmolaScriptArguments, training_args: SFTConfig, model_args=None,
                callbacks: list | None = None) -> dict[str, Any]:
    """Run EmoLA's recipe: load FABA-Instruct, build model + LoRA + trainer, train (or resume), save the adapter,
    optionally merge and push. Returns a summary dict (steps, samples/s, peak memory, losses, output paths).

    `model_args` is TRL's `ModelConfig` (`model_name_or_path`, `use_peft`, `lora_*`, `load_in_4bit`, `dtype`).
    """
    from trl import ModelConfig
    from trl.trainer.utils import get_quantization_config

    from .data import assistant_answers, load_faba_instruct

    model_args = model_args or ModelConfig(model_name_or_path="tiny", use_peft=True)
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: an HF LLaVA-1.5 or EmoLA checkpoint, or 'tiny'")
    if not script_args.train_annotations or not script_args.image_root:
        raise ValueError("--train_annotations and --image_root are required")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    started = time.perf_counter()
    system_prompt = _system_prompt(script_args.system_prompt)
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
    if quantization_config is not None and model_args.model_name_or_path == "tiny":
        raise ValueError("4/8-bit loading needs a real checkpoint and a GPU, not the tiny model")
    texts = assistant_answers(train_dataset) if model_args.model_name_or_path == "tiny" else ()
    model, processor = load_model_and_processor(
        model_args.model_name_or_path,
        use_facial_prior=script_args.use_facial_prior,
        facial_prior_dim=prior_dim,
        facial_prior_backend=script_args.facial_prior_backend,
        texts=texts,
        dtype=model_args.dtype,
        quantization_config=quantization_config,
        attn_implementation=model_args.attn_implementation,
        revision=model_args.model_revision if model_args.model_revision != "main" else None,
        tiny_kwargs={
            "vocab_size": script_args.tiny_vocab_size,
            "hidden_size": script_args.tiny_hidden_size,
            "num_hidden_layers": script_args.tiny_num_hidden_layers,
            "image_size": script_args.tiny_image_size,
        },
        seed=training_args.seed,
    )
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
    resume = _resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # the adapter (+ projectors) and the processor
    if trainer.is_world_process_zero():
        # What merge_adapter_checkpoint needs to rebuild the base model the adapter was trained on.
        Path(training_args.output_dir, BASE_INFO_FILE).write_text(json.dumps({
            "base_model": model_args.model_name_or_path,
            "use_facial_prior": script_args.use_facial_prior,
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
    model_name = training_args.hub_model_id or Path(training_args.output_dir).name
    card = generate_model_card(
        model_id=model_name,
        base_model=model_args.model_name_or_path,
        task=task,
        dataset=Path(script_args.train_annotations).name,
        use_facial_prior=script_args.use_facial_prior,
        facial_prior_backend=script_args.facial_prior_backend if script_args.use_facial_prior else None,
        hyperparameters=_card_hyperparameters(training_args, model_args),
        metrics={k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
    )
    if trainer.is_world_process_zero():
        Path(training_args.output_dir, "README.md").write_text(card, encoding="utf-8")
    if script_args.merge:
        merged_dir = script_args.merged_output_dir or os.path.join(training_args.output_dir, "merged")
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
        print(format_summary(summary))
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
    """The end-of-run lines: steps, throughput, peak memory, losses, outputs."""
    def fmt(value, spec):
        return format(value, spec) if isinstance(value, (int, float)) else "n/a"

    device = "GPU" if torch.cuda.is_available() and torch.cuda.is_initialized() else "CPU RSS"
    lines = [
        "==== EmoLA training summary ====",
        f"steps: {summary['global_step']}   samples: {summary['train_samples']}"
        + (f"   skipped rows: {summary['skipped_rows']}" if summary.get("skipped_rows") else ""),
        f"samples/s: {fmt(summary['train_samples_per_second'], '.2f')}   "
        f"runtime: {fmt(summary['train_runtime_s'], '.1f')} s",
        f"peak memory ({device}): {summary['peak_memory_bytes'] / 2**20:.0f} MiB",
        f"loss: first logged {fmt(summary['first_logged_loss'], '.4f')}, last logged "
        f"{fmt(summary['last_logged_loss'], '.4f')}, mean {fmt(summary['train_loss'], '.4f')}",
        f"saved: {summary['output_dir']}" + (f"   merged: {summary['merged_dir']}" if summary["merged_dir"] else ""),
    ]
    return "\n".join(lines)


__all__ = [
    "EmolaDataCollator",
    "EmolaSFTConfig",
    "EmolaSFTTrainer",
    "EmolaScriptArguments",
    "build_lora_config",
    "build_trainer",
    "emola_parameter_groups",
    "emola_processor_from_llava",
    "format_summary",
    "freeze_vision_tower",
    "generate_model_card",
    "language_model_linear_names",
    "load_model_and_processor",
    "lora_target_modules",
    "merge_adapter",
    "merge_adapter_checkpoint",
    "peak_memory_bytes",
    "push_folder_to_hub",
    "save_merged",
    "train_emola",
]
