"""`emola evaluate`: score FABA-Bench predictions with REGE (or, with --model, generate them first).

    emola evaluate --predictions predictions.jsonl --task au --mode paper --out outputs/eval_au
    emola evaluate --model emola-7b-au --annotations eval_au_anno.json --data-root data --task au --out results/au

With --model, predictions.jsonl is appended as it goes: a killed run resumes where it stopped. Launched with several
processes (`torchrun --nproc-per-node 4 -m transformers_emola.cli evaluate --model ...`, or `accelerate launch`),
each process generates every n-th sample on its own device and rank 0 merges and scores (docs/scale_out.md).
Exit status: 0, 1 when some samples failed or could not be scored (the rest is scored), 2 on bad arguments or when
a process of the launch failed.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..faba import AU_SETS, TASKS

    source = parser.add_argument_group("what to evaluate (one of)")
    source.add_argument("--predictions", default=None,
                        help="predictions.jsonl to score: {id, prediction, reference, label} per line (default: none)")
    source.add_argument("--model", default=None,
                        help="checkpoint to generate the predictions with, on --annotations (default: none)")
    parser.add_argument("--annotations", default=None, help="with --model: FABA-Bench annotation JSON (default: none)")
    parser.add_argument("--data-root", default=None,
                        help="with --model: folder the annotation image / landmark paths are relative to "
                             "(default: none)")
    parser.add_argument("--task", choices=TASKS, default=None, help="FABA-Bench task (required for REGE; default: none)")
    parser.add_argument("--mode", default="paper", choices=["paper", "strict"],
                        help="paper: the official evaluation exactly; strict: fixed parsing (see the metric card)")
    parser.add_argument("--au-set", default="faba", choices=sorted(AU_SETS),
                        help="AUs recognised and scored (AU task; au_folds defaults to disfa)")
    parser.add_argument("--out", default="outputs/evaluate", help="report folder (report.json, report.md, plot)")
    parser.add_argument("--batch-size", type=int, default=8, help="with --model: generation batch size")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="with --model: longest answer, in tokens")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples (default: all)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    parser.add_argument("--protocol", choices=["fer", "au_folds"], default=None,
                        help="traditional protocol instead of REGE: fer (RAF-DB/AffectNet accuracy) or au_folds "
                             "(DISFA/BP4D/GFT F1 averaged over --folds) (default: none, REGE)")
    parser.add_argument("--folds", nargs="+", default=None, metavar="FILE",
                        help="per-fold predictions.jsonl files for --protocol au_folds, 3 for DISFA/BP4D (default: none)")


def run_traditional(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..evaluation import score_traditional

    files = args.folds if args.protocol == "au_folds" else [args.predictions]
    if not files or files == [None]:
        print(f"emola evaluate: --protocol {args.protocol} needs "
              f"{'--folds FILE...' if args.protocol == 'au_folds' else '--predictions FILE'}", file=sys.stderr)
        return 2
    au_set = args.au_set if args.au_set != "faba" or args.protocol == "fer" else "disfa"
    try:
        result = score_traditional(args.protocol, files, au_set=au_set, mode=args.mode)
    except (FileNotFoundError, ValueError) as error:
        print(f"emola evaluate: {error}", file=sys.stderr)
        return 1
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "report.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    headline = result["accuracy"] if args.protocol == "fer" else result["f1"]
    print(f"{args.protocol} ({args.mode}): {headline:.2f}  report: {Path(args.out) / 'report.json'}")
    return 0


def run_model(args: argparse.Namespace) -> int:
    """--model: generate with the checkpoint, then score (the generation runner)."""
    from ..evaluation import evaluate_model, format_summary
    from ..jobs import Launch, LaunchError

    if not args.annotations or not args.data_root:
        print("emola evaluate: --model needs --annotations and --data-root", file=sys.stderr)
        return 2
    try:
        report = evaluate_model(args.model, args.annotations, args.data_root, args.task, args.out, mode=args.mode,
                                au_set=args.au_set, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                limit=args.limit, plots=not args.no_plots, launch=Launch.detect())
    except LaunchError as error:
        print(f"emola evaluate: error: {error}", file=sys.stderr)
        return 2
    if report is None:  # another process of a torchrun / accelerate launch: rank 0 reports
        return 0
    print(format_summary(report.result, report.paths))
    if report.failures:
        print(f"{len(report.failures)} sample(s) failed (see {report.paths['json'].parent / 'failures.json'}):",
              file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure['id']}: {failure['error']}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.protocol is not None:
        return run_traditional(args)
    if args.task is None:
        print("emola evaluate: --task au|emotion is required for REGE", file=sys.stderr)
        return 2
    if args.predictions is None and args.model is None:
        print("emola evaluate: give --predictions FILE (score) or --model with --annotations (generate and score).",
              file=sys.stderr)
        return 2
    if args.predictions is None:
        return run_model(args)
    from ..evaluation import format_summary, score_predictions_file, write_report

    try:
        result = score_predictions_file(
            args.predictions, args.task, args.mode, args.au_set, on_error="skip", limit=args.limit
        )
        paths = write_report(result, args.out, args.task, plots=not args.no_plots)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"emola evaluate: {error}", file=sys.stderr)
        return 1

    print(format_summary(result, paths))
    if result["skipped"]:
        print(f"{len(result['skipped'])} sample(s) could not be scored:", file=sys.stderr)
        for item in result["skipped"]:
            where = f"line {item['line']}" if "line" in item else f"id {item['id']}"
            print(f"  {where}: {item['error']}", file=sys.stderr)
        return 1
    return 0
