"""`emola extract-priors`: compute facial priors once and save them as `.npy` files (training and evaluation read them).

    emola extract-priors photos/ face.jpg --out priors/            # one <name>.npy per image
    emola extract-priors --annotations train_au_anno.json --image-root data --out data   # FABA-Instruct layout

Files that exist are kept (a re-run resumes); images that fail are listed in OUT/failures.json. Exit status: 0 when
every image has its prior, 1 when some failed, 2 on bad arguments, a backend that cannot run, or a failed process
of a launch. Launched with several processes (`torchrun --nproc-per-node 4 -m transformers_emola.cli
extract-priors ...`, or `accelerate launch`), each process extracts every n-th image and rank 0 reports
(docs/scale_out.md).
"""

from __future__ import annotations

import argparse
import sys

from ..faba import DEFAULT_FACIAL_PRIOR_BACKEND
from . import add_facial_prior_arguments, cli_message, extractor_from_args, print_failures, processes_note


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="image files or folders (searched recursively): OUT/<path below their common folder>.npy")
    parser.add_argument("--out", required=True, help="output folder (required)")
    parser.add_argument("--annotations", nargs="+", default=None, metavar="FILE",
                        help="instead of PATHs: FABA-Instruct annotation file(s) (.json list or .jsonl); each row's "
                             "prior goes to OUT/<row's landmark> or OUT/landmarks/<image>.npy (default: none)")
    parser.add_argument("--image-root", default=None,
                        help="with --annotations: the folder the rows' image paths are relative to (default: none)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per extractor batch (default: the backend's, 8)")
    parser.add_argument("--overwrite", action="store_true", help="recompute files that already exist")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_facial_prior_arguments(parser, default_backend=DEFAULT_FACIAL_PRIOR_BACKEND)


def run(args: argparse.Namespace) -> int:
    from ..facial_prior import extract_priors, extract_priors_for_annotations, read_annotation_rows
    from ..jobs import Launch, LaunchError

    if bool(args.paths) == bool(args.annotations):
        print("emola extract-priors: give image PATHs, or --annotations FILE with --image-root DIR", file=sys.stderr)
        return 2
    if args.annotations and not args.image_root:
        print("emola extract-priors: --annotations needs --image-root", file=sys.stderr)
        return 2
    try:
        if args.batch_size is not None:
            args.backend_options = {**args.backend_options, "batch_size": args.batch_size}
        extractor = extractor_from_args(args)
        options = dict(overwrite=args.overwrite, progress=not args.no_progress, launch=Launch.detect())
        if args.annotations:
            rows = [row for path in args.annotations for row in read_annotation_rows(path)]
            report = extract_priors_for_annotations(rows, args.image_root, args.out, extractor, **options)
        else:
            report = extract_priors(args.paths, args.out, extractor, **options)
    except (ValueError, OSError, ImportError, LaunchError) as error:  # bad arguments, a backend that cannot run
        print(f"emola extract-priors: error: {cli_message(error)}", file=sys.stderr)
        return 2
    if report is None:  # another process of a torchrun / accelerate launch: rank 0 reports
        return 0
    print(f"extract-priors ({extractor.backend}, dim {extractor.dim}): {len(report.written)} written, "
          f"{len(report.skipped)} already present, {len(report.failures)} failed -> {args.out}"
          + processes_note(report.samples_per_process, "images"))
    if report.failures:
        print_failures(report.failures, report.failures_path)
        return 1
    return 0
