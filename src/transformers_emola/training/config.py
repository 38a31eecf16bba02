"""`EmolaSFTConfig`: TRL's `SFTConfig` with EmoLA's defaults and its per-module learning rates."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.trainer_utils import SchedulerType
from trl import SFTConfig

__all__ = ["EmolaSFTConfig"]


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
    the GPU supports it. TRL's activation checkpointing stays on, set through `activation_checkpointing` (its
    deprecated alias `gradient_checkpointing` still works, with transformers' warning).

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
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (transformers 5.23+)."}
    )

    def __post_init__(self):
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            # TRL's default (on), under transformers' current name: TRL sets the deprecated alias, which warns
            self.activation_checkpointing = True
        if self.bf16 is None and not self.fp16:
            # "bf16 where available": TRL would turn it on everywhere, CPU included.
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not self.use_cpu)
        super().__post_init__()
