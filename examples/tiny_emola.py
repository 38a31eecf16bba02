# Copyright 2024 the transformers-emola authors. Apache-2.0.
"""Save a tiny random EmoLA checkpoint (about 0.1 M parameters, offline, in a second) to try the recipe on a CPU.

Its tokenizer is trained on EmoLA's prompts and on the answers of the annotation files given, so the tiny language
model can learn them; `examples/recipes/tiny_cpu.yaml` fine-tunes it:

    emola synth --out data/synthetic --num-train 64 --num-eval 8 --image-size 64 --tasks au
    python examples/tiny_emola.py --output_dir outputs/tiny-emola \
        --annotations data/synthetic/FABAInstruct/train/train_au_anno.json
    emola train --config examples/recipes/tiny_cpu.yaml
"""

from dataclasses import dataclass, field

from trl import TrlParser

from transformers_emola import build_tiny_emola
from transformers_emola.facial_prior import read_annotation_rows


@dataclass
class TinyEmolaArguments:
    output_dir: str = field(default="outputs/tiny-emola", metadata={"help": "where to save the model and processor"})
    annotations: list[str] = field(
        default_factory=list, metadata={"help": "FABA-Instruct files whose answers the tokenizer learns"}
    )
    vocab_size: int = field(default=400, metadata={"help": "tokenizer size"})
    image_size: int = field(default=28, metadata={"help": "CLIP input size in pixels"})
    hidden_size: int = field(default=32, metadata={"help": "width of the language model"})
    num_hidden_layers: int = field(default=2, metadata={"help": "depth of the language model"})
    facial_prior_backend: str = field(default="face_alignment", metadata={"help": "backend of the 136-d priors"})
    seed: int = field(default=0, metadata={"help": "random seed of the weights"})


def answers(paths: list[str]) -> list[str]:
    """The gpt turns (training rows) and gpt4 references (eval rows) of FABA-Instruct annotation files."""
    texts = []
    for path in paths:
        for row in read_annotation_rows(path):
            texts += [turn["value"] for turn in row.get("conversations", ()) if turn.get("from") == "gpt"]
            texts += [row["gpt4"]] if row.get("gpt4") else []
    return texts


def main(argv=None):
    (args,) = TrlParser((TinyEmolaArguments,)).parse_args_and_config(argv)
    model, processor = build_tiny_emola(
        texts=answers(args.annotations), vocab_size=args.vocab_size, image_size=args.image_size,
        hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        facial_prior_backend=args.facial_prior_backend, seed=args.seed,
    )
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print(f"tiny EmoLA ({model.num_parameters():,} parameters) saved to {args.output_dir}")
    return args.output_dir


if __name__ == "__main__":
    main()
