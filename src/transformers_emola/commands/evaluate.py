"""`emola evaluate`: score FABA-Bench predictions with REGE (or, with --model, generate them first).

    emola evaluate --predictions predictions.jsonl --task au --mode paper --out outputs/eval_au
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to evaluate (one of)")
    source.add_argument(
        "--predictions", help="predictions.jsonl to score: {id, prediction, reference, label} per line"
    )
    source.add_argument("--model", help="model to run on --annotations (generation runner)")
    parser.add_argument("--annotations", help="FABA-Instruct annotation JSON (with --model)")
    parser.add_argument("--data-root", help="folder the annotation image paths are relative to (with --model)")
    parser.add_argument("--task", choices=["au", "emotion"], help="FABA-Bench task (required for REGE)")
    parser.add_argument("--mode", default="paper", choices=["paper", "strict"],
                        help="paper: the official evaluation exactly; strict: fixed parsing (see the metric card)")
    parser.add_argument("--au-set", default="faba", choices=["faba", "disfa", "bp4d", "gft", "emotionet"],
                        help="AUs recognised and scored (AU task)")
    parser.add_argument("--out", default="outputs/evaluate", help="report folder (report.json, report.md, plot)")
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (with --model)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation length (with --model)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    parser.add_argument("--protocol", choices=["fer", "au_folds"], default=None,
                        help="traditional protocol instead of REGE: fer (RAF-DB/AffectNet accuracy) or au_folds "
                             "(DISFA/BP4D/GFT F1 averaged over --folds)")
    parser.add_argument("--folds", nargs="+", default=None,
                        help="per-fold predictions.jsonl files for --protocol au_folds (3 for DISFA/BP4D)")


def run_traditional(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from transformers_emola.evaluation import score_traditional

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
        from transformers_emola.evaluation import evaluate_model  # the generation runner

        return int(evaluate_model(args) or 0)
    from transformers_emola.evaluation import format_summary, score_predictions_file, write_report

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
