"""`emola synth`: write a synthetic FABA-Instruct dataset (procedural faces, exact landmarks, AU/emotion texts).

Example: `emola synth --out data/synthetic --num-train 200 --num-eval 50 --seed 0`
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..faba import TASKS

    parser.add_argument("--out", required=True,
                        help="dataset root (EmoLA's --image_folder); FABAInstruct/ goes here (required)")
    parser.add_argument("--num-train", type=int, default=200, help="training samples per task")
    parser.add_argument("--num-eval", type=int, default=50, help="evaluation samples per task")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes a byte-identical dataset")
    parser.add_argument("--image-size", type=int, default=336, help="square image side in pixels")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to write")


def run(args: argparse.Namespace) -> int:
    from ..synthetic import write_synthetic_faba

    try:
        written = write_synthetic_faba(
            args.out,
            num_train=args.num_train,
            num_eval=args.num_eval,
            seed=args.seed,
            image_size=args.image_size,
            tasks=args.tasks,
            progress=True,
        )
    except ValueError as error:
        print(f"emola synth: error: {error}")
        return 2
    except RuntimeError as error:  # some samples failed; the others were written
        print(f"emola synth: {error}")
        return 1
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
