"""`emola show-priors IMAGE -o out.png`: draw the face box and landmarks the prior comes from, to check them."""

from __future__ import annotations

import argparse
import sys

from transformers_emola.commands.extract_priors import add_backend_arguments, extractor_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument("-o", "--output", required=True, help="where to write the annotated PNG")
    add_backend_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from transformers_emola.facial_prior import draw_landmarks, load_image

    try:
        extractor = extractor_from_args(args)
        image = load_image(args.image)
        face = extractor.detect([args.image])[0]
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    draw_landmarks(image, face).save(args.output)
    box = "none" if face.box is None else "(" + ", ".join(f"{v:.0f}" for v in face.box) + ")"
    score = "n/a" if face.score is None else f"{face.score:.3f}"
    print(f"{args.image}: {face.num_faces} face(s) found, box {box}, score {score}, "
          f"prior {face.prior.shape[0]}-d in [{face.prior.min():.3f}, {face.prior.max():.3f}] -> {args.output}")
    return 0
