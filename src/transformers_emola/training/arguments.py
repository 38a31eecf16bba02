"""The data and run options of EmoLA's training recipe, shared by `emola train` and `examples/sft_emola.py`.

Plain dataclasses without heavy imports, so `emola train --help` lists them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EmolaScriptArguments"]


@dataclass
class EmolaScriptArguments:
    """Data and run options of EmoLA's recipe (`emola train`, `examples/sft_emola.py`).

    The model and LoRA options are TRL's `ModelConfig`, the training options `EmolaSFTConfig`; `TrlParser` reads
    the three from the command line and a YAML recipe (`--config`).
    """

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
    add_facial_prior: bool = field(
        default=False,
        metadata={"help": "Turn a Qwen2.5-VL, Idefics3/SmolVLM or Gemma 3 base checkpoint into its EmoLA variant "
                          "(new <facial_prior> token, fresh prior projector) before training. LLaVA-1.5 checkpoints "
                          "get this without the flag; EmoLA checkpoints are trained as they are."},
    )
    facial_prior_backend: str = field(
        default="insightface_2d106",
        metadata={"help": "Backend that made the priors (saved in the config); its size must match the data's."},
    )
    facial_prior_normalization: str = field(
        default="none",
        metadata={"help": "none (the released EmoLA: raw priors) or standardize: store the training priors' "
                          "per-dimension mean and std in the model config, so the model standardises every prior "
                          "before its projector (a model trained from scratch reads landmarks far better so).",
                  "choices": ["none", "standardize"]},
    )
    system_prompt: str = field(
        default="auto",
        metadata={"help": "vicuna_v1 (EmoLA's official training prompt), default (the chat template's), a text, or "
                          "auto: vicuna_v1 for LLaVA, the chat template's own for the other families."},
    )
    pad_to_square: bool = field(default=True, metadata={"help": "Pad images to squares (EmoLA training)."})
    on_invalid: str = field(default="raise", metadata={"help": "raise or skip invalid annotation rows."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    merge: bool = field(default=False, metadata={"help": "Also save a merged full checkpoint (output_dir/merged)."})
    merged_output_dir: str | None = field(default=None, metadata={"help": "Where --merge writes the checkpoint."})
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (1 is fastest for the tiny model on a busy machine)."}
    )

    def __post_init__(self):
        if self.facial_prior_normalization not in ("none", "standardize"):
            raise ValueError("facial_prior_normalization must be 'none' or 'standardize', got "
                             f"{self.facial_prior_normalization!r}")
