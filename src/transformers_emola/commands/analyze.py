"""`emola analyze PATH... --model DIR --out DIR`: AUs and emotion of every face image, as JSONL + CSV (+ PNGs).

Example: `emola analyze photos/ --model emola-7b-au --task au --out results/ --visualize`
Results go to OUT/results.jsonl and OUT/results.csv (one 0/1 column per AU; empty when the answer names no AU), the
failed images to OUT/failures.json; a re-run skips the images already analysed. Exit status: 0 when every image has
a result, 1 when some failed, 2 on bad arguments or when a process of a launch failed. Launched with several
processes (`torchrun --nproc-per-node 4 -m transformers_emola.cli analyze ...`, or `accelerate launch`), each
process analyses every n-th image on its own device and rank 0 merges (docs/scale_out.md).
"""

from __future__ import annotations

import argparse
import sys

from ..faba import TASKS
from . import add_facial_prior_arguments, cli_message, extractor_options, print_failures, processes_note


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--model", required=True, help="EmoLA checkpoint folder, model + processor (required)")
    parser.add_argument("--out", required=True,
                        help="output folder: results.jsonl, results.csv, failures.json (required)")
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both",
                        help="which FABA-Bench question(s) to ask")
    parser.add_argument("--batch-size", type=int, default=8, help="images per generate batch")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer, in tokens")
    parser.add_argument("--visualize", action="store_true",
                        help="also draw the face box, landmarks, AUs and emotion: OUT/visualizations/<image>.png")
    parser.add_argument("--device", default=None,
                        help="torch device of the model (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 ('auto': the checkpoint's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_facial_prior_arguments(parser, default_backend=None)


def run(args: argparse.Namespace) -> int:
    from ..analysis import analyze_images, load_analyzer
    from ..facial_prior import find_images
    from ..jobs import Launch, LaunchError

    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        find_images(args.paths)  # fail on a typo before loading a 7B model
        options = extractor_options(args)
        launch = Launch.detect()
        analyzer = load_analyzer(args.model, backend=args.backend,
                                 on_missing_face=options.pop("on_missing_face", "error"), backend_options=options,
                                 device=args.device or launch.device, dtype=args.dtype)
        report = analyze_images(analyzer, args.paths, args.out, tasks=args.task, batch_size=args.batch_size,
                                visualize=args.visualize, progress=not args.no_progress, launch=launch,
                                max_new_tokens=args.max_new_tokens)
    except (ValueError, OSError, ImportError, LaunchError) as error:
        print(f"emola analyze: error: {cli_message(error)}", file=sys.stderr)
        return 2
    if report is None:  # another process of a torchrun / accelerate launch: rank 0 reports
        return 0
    print(f"emola analyze: {report.analyzed} analysed, {report.skipped} already done, {len(report.failures)} failed "
          f"-> {report.results_path}, {report.csv_path}" + processes_note(report.samples_per_process, "images"))
    if report.failures:
        print_failures(report.failures, report.failures_path)
        return 1
    return 0
