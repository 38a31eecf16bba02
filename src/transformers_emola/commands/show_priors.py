"""`emola show-priors IMAGE -o out.png`: draw every face the backend finds and the landmarks the prior comes from.

The face the prior is computed from has a thick green box and its landmarks; the other faces found have thin orange
boxes, numbered by detector score (#1 = best, the default choice; `--face-index` picks another).
"""

from __future__ import annotations

import argparse
import sys

from ..faba import DEFAULT_FACIAL_PRIOR_BACKEND
from . import add_facial_prior_arguments, cli_message, extractor_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument("-o", "--output", required=True, help="where to write the annotated PNG (required)")
    add_facial_prior_arguments(parser, default_backend=DEFAULT_FACIAL_PRIOR_BACKEND)


def _box(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"


def describe(face, backend: str) -> str:
    """Which face the prior comes from, among how many, where."""
    if backend == "insightface_2d106":
        return f"{backend} finds no faces itself: the prior comes from the whole image {_box(face.box)}"
    if backend == "precomputed":
        return "the prior was read from its .npy file"
    found = f"{len(face.detections)} face(s) found"
    if face.face_index is not None:
        score = "" if face.score is None else f", score {face.score:.3f}"
        used = f"the prior comes from face #{face.face_index + 1} (green), box {_box(face.box)}{score}"
        others = [f"#{rank + 1} {_box(d.box)}" + ("" if d.score is None else f" score {d.score:.3f}")
                  for rank, d in enumerate(face.detections) if rank != face.face_index]
        return f"{found}; {used}" + (f"; also found (orange): {', '.join(others)}" if others else "")
    if face.box is not None:
        return f"{found}; the prior comes from the whole image {_box(face.box)} (--on-missing-face full_image)"
    return f"{found}; the prior is zeros (--on-missing-face zeros)"


def run(args: argparse.Namespace) -> int:
    from ..facial_prior import draw_landmarks, load_image

    try:
        extractor = extractor_from_args(args)
        image = load_image(args.image)
        face = extractor.detect([args.image])[0]
    except (ValueError, OSError, ImportError) as error:
        print(f"emola show-priors: error: {cli_message(error)}", file=sys.stderr)
        return 1
    draw_landmarks(image, face).save(args.output)
    print(f"{args.image}: {describe(face, extractor.backend)}; prior {face.prior.shape[0]}-d in [{face.prior.min():.3f}, "
          f"{face.prior.max():.3f}] -> {args.output}")
    return 0
