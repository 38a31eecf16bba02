"""`emola analyze PATH... --model DIR --out DIR`: AUs and emotion of every face image, as JSONL + CSV (+ PNGs).

Example: `emola analyze photos/ --model emola-7b-au --task au --out results/ --visualize`
Exit status: 0 when every image has a result, 1 when some failed (listed, and in failures.json), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    parser.add_argument("--model", required=True, help="EmoLA checkpoint folder (model + processor)")
    parser.add_argument("--out", required=True, help="output folder: results.jsonl, results.csv, failures.json")
    parser.add_argument("--task", choices=["au", "emotion", "both"], default="both",
                        help="which FABA-Bench question(s) to ask (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per generate batch (default: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer (default: 512)")
    parser.add_argument("--visualize", action="store_true",
                        help="also draw the face box, landmarks, AUs and emotion: out/visualizations/*.png")
    parser.add_argument("--device", help="torch device for the model (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = parser.add_argument_group("facial prior (landmarks)")
    group.add_argument("--backend", choices=["face_alignment", "dlib", "insightface_2d106", "precomputed"],
                       help="landmark backend (default: the processor's saved one, else the model's; dlib's model is "
                            "non-commercial, see docs/facial_priors.md)")
    group.add_argument("--on-missing-face", choices=["error", "full_image", "zeros"], default="error",
                       help="no face found: report a failure (default), use the whole image, or a zero prior")
    group.add_argument("--backend-options", type=json.loads, default={},
                       help='backend options as JSON, e.g. \'{"model_path": "2d106det.onnx"}\' or \'{"upsample": 0}\'')


def run(args: argparse.Namespace) -> int:
    from transformers_emola.analysis import analyze_images, find_images, load_analyzer

    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        find_images(args.paths)  # fail on a typo before loading a 7B model
        analyzer = load_analyzer(args.model, backend=args.backend, on_missing_face=args.on_missing_face,
                                 backend_options=args.backend_options, device=args.device, dtype=args.dtype)
        report = analyze_images(analyzer, args.paths, args.out, tasks=args.task, batch_size=args.batch_size,
                                visualize=args.visualize, progress=not args.no_progress,
                                max_new_tokens=args.max_new_tokens)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"emola analyze: {report.analyzed} analysed, {report.skipped} already done, {len(report.failures)} failed "
          f"-> {report.results_path}, {report.csv_path}")
    if report.failures:
        print(f"Failed images (also in {report.failures_path}):", file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure['image']} [{failure['status']}]: {failure['error']}", file=sys.stderr)
        return 1
    return 0
