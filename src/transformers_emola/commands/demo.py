"""`emola demo`: synthetic FABA -> tiny EmoLA -> TRL fine-tune -> REGE before/after, offline."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo import DemoArguments

    defaults = DemoArguments()
    parser.add_argument("--out", default=defaults.out, help="output folder (report.json, plots, model)")
    parser.add_argument("--model", default=defaults.model,
                        help="'tiny' (offline random model) or an EmoLA / HF LLaVA-1.5 checkpoint")
    parser.add_argument("--annotations", default=None,
                        help="FABA-Instruct folder with {train,eval}_{task}_anno.json (default: synthetic data)")
    parser.add_argument("--data-root", default=None, help="folder the image/landmark paths are relative to")
    parser.add_argument("--tasks", nargs="+", choices=["au", "emotion"], default=list(defaults.tasks))
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="synthetic training faces per task")
    parser.add_argument("--num-eval", type=int, default=defaults.num_eval, help="held-out synthetic faces per task")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--no-facial-prior", action="store_true", help="train the LLaVA baseline (ablation)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoArguments, run_demo

    report = run_demo(DemoArguments(
        out=args.out, model=args.model, annotations=args.annotations, data_root=args.data_root,
        tasks=tuple(args.tasks), num_train=args.num_train, num_eval=args.num_eval, image_size=args.image_size,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_new_tokens=args.max_new_tokens, use_facial_prior=not args.no_facial_prior, seed=args.seed,
        num_threads=args.num_threads, progress=not args.no_progress,
    ))
    print()
    print(report["table"])
    timings = report["timings"]
    print(f"\ntrained {report['training']['steps']} steps, loss {report['training']['first_loss']:.3f} -> "
          f"{report['training']['last_loss']:.3f}; total {timings['total_s']:.0f} s")
    print(f"report: {args.out}/report.json, plots: {', '.join(report['plots'])}")
    return 0
