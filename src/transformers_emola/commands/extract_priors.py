"""`emola extract-priors`: write one facial-prior `.npy` per annotated image (FABA-Instruct layout).

Example: `emola extract-priors --annotations train_anno.json --image-root data --out data --backend dlib`
"""

from __future__ import annotations

import argparse
import json
import sys


def add_backend_arguments(parser: argparse.ArgumentParser, default_backend: str | None = None) -> None:
    """Options shared by the commands that build a `FacialPriorExtractor`."""
    from transformers_emola.facial_prior import DEFAULT_BACKEND

    group = parser.add_argument_group("facial-prior backend")
    group.add_argument("--backend", default=default_backend or DEFAULT_BACKEND,
                       choices=["face_alignment", "dlib", "insightface_2d106"],
                       help="landmark backend (default: %(default)s; dlib is non-commercial, see docs)")
    group.add_argument("--model-path", help="insightface_2d106: path to 2d106det.onnx (not shipped)")
    group.add_argument("--device", help="face_alignment: torch device, e.g. cpu or cuda")
    group.add_argument("--dtype", help="face_alignment: torch dtype, e.g. float32 or float16")
    group.add_argument("--on-missing-face", choices=["error", "full_image", "zeros"],
                       help="what to do when no face is found (default: error)")
    group.add_argument("--face-index", type=int, help="which face when several are found (0 = highest score)")
    group.add_argument("--batch-size", type=int, help="images per batch")
    group.add_argument("--options", type=json.loads, default={},
                       help='more backend options as JSON, e.g. \'{"upsample": 0}\'')


def extractor_from_args(args: argparse.Namespace):
    from transformers_emola.facial_prior import FacialPriorExtractor

    options = dict(args.options)
    for key in ("model_path", "device", "dtype", "on_missing_face", "face_index", "batch_size"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    return FacialPriorExtractor(args.backend, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", nargs="+", required=True,
                        help="FABA-Instruct annotation file(s) (.json list or .jsonl) with relative 'image' paths")
    parser.add_argument("--image-root", required=True, help="folder the 'image' paths are relative to")
    parser.add_argument("--out", required=True,
                        help="output folder: out/<row 'landmark'> if given, else out/landmarks/<image>.npy")
    parser.add_argument("--overwrite", action="store_true", help="recompute files that already exist")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from transformers_emola.facial_prior import extract_priors_for_annotations, read_annotation_rows

    try:
        rows = [row for path in args.annotations for row in read_annotation_rows(path)]
        extractor = extractor_from_args(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        report = extract_priors_for_annotations(rows, args.image_root, args.out, extractor,
                                                overwrite=args.overwrite, progress=not args.no_progress)
    except (OSError, ImportError) as error:  # e.g. missing weights: every image would fail the same way
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"extract-priors ({extractor.backend}, dim {extractor.dim}): {len(report.written)} written, "
          f"{len(report.skipped)} already present, {len(report.failures)} failed")
    if report.failures:
        print(f"Failed images (also listed in {args.out}/failures.json):", file=sys.stderr)
        for failure in report.failures:
            print(f"  {failure['image']}: {failure['error']}", file=sys.stderr)
        return 1
    return 0
