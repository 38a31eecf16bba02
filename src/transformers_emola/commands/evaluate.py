"""`emola evaluate`: score FABA-Bench predictions with REGE (or, with --model, generate them first).

    emola evaluate --predictions predictions.jsonl --task au --mode paper --out outputs/eval_au
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to evaluate (one of)")
    source.add_argument("--predictions", help="predictions.jsonl to score: {id, prediction, reference, label} per line")
    source.add_argument("--model", help="model to run on --annotations (generation runner)")
    parser.add_argument("--annotations", help="FABA-Instruct annotation JSON (with --model)")
    parser.add_argument("--data-root", help="folder the annotation image paths are relative to (with --model)")
    parser.add_argument("--task", required=True, choices=["au", "emotion"], help="FABA-Bench task")
    parser.add_argument("--mode", default="paper", choices=["paper", "strict"],
                        help="paper: the official evaluation exactly; strict: fixed parsing (see the metric card)")
    parser.add_argument("--au-set", default="faba", choices=["faba", "disfa", "bp4d", "gft", "emotionet"],
                        help="AUs recognised and scored (AU task)")
    parser.add_argument("--out", default="outputs/evaluate", help="report folder (report.json, report.md, plot)")
    parser.add_argument("--batch-size", type=int, default=8, help="generation batch size (with --model)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation length (with --model)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plot (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    if args.predictions is None and args.model is None:
        print("emola evaluate: give --predictions FILE (score) or --model with --annotations (generate and score).",
              file=sys.stderr)
        return 2
    if args.predictions is None:
        from transformers_emola.evaluation import evaluate_model  # the generation runner

        return int(evaluate_model(args) or 0)
    from transformers_emola.evaluation import score_predictions_file, write_report

    try:
        result = score_predictions_file(
            args.predictions, args.task, args.mode, args.au_set, on_error="skip", limit=args.limit
        )
        paths = write_report(result, args.out, args.task, plots=not args.no_plots)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"emola evaluate: {error}", file=sys.stderr)
        return 1

    print(f"REGE ({args.task}, {args.mode}): S_re {result['s_re']:.2f}  S_ge {result['s_ge']:.2f}  "
          f"S_rege {result['s_rege']:.2f}  ({result['num_samples']} samples)")  # fmt: skip
    print("report: " + ", ".join(str(p) for p in paths.values()))
    if result["skipped"]:
        print(f"{len(result['skipped'])} sample(s) could not be scored:", file=sys.stderr)
        for item in result["skipped"]:
            where = f"line {item['line']}" if "line" in item else f"id {item['id']}"
            print(f"  {where}: {item['error']}", file=sys.stderr)
        return 1
    return 0
