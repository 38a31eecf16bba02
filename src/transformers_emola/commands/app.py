"""`emola app --model DIR_OR_HUB_ID`: the EmoLA web page (Gradio) on http://HOST:PORT, with the `/analyze` API.

Example: `emola app --model emola-7b-au --backend dlib --port 7860`, then open http://127.0.0.1:7860 or call
`gradio_client.Client("http://127.0.0.1:7860").predict(handle_file("face.jpg"), "both", api_name="/analyze")`.
`--model tiny` serves a tiny random EmoLA built offline (to try the page or test it; its answers are gibberish).
Needs the `[app]` extra. Exit status: 2 on bad arguments or a model / backend that cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="EmoLA checkpoint folder or Hub id, or 'tiny' (a tiny random model built offline, for "
                             "tests and demos of the page)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: %(default)s; 0.0.0.0 serves the whole network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also serve a temporary public *.gradio.live link")
    parser.add_argument("--max-new-tokens", type=int, default=512,
                        help="default answer length, changeable on the page (default: %(default)s)")
    parser.add_argument("--max-image-pixels", type=int, default=64_000_000,
                        help="refuse larger photos with a message (default: %(default)s)")
    parser.add_argument("--max-file-size", default="200mb",
                        help="Gradio refuses larger uploads before they reach the disk (default: %(default)s)")
    parser.add_argument("--device", help="torch device for the model (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="auto", help="model dtype, e.g. bfloat16 (default: the checkpoint's)")
    group = parser.add_argument_group("facial prior (landmarks)")
    group.add_argument("--backend", choices=["face_alignment", "dlib", "insightface_2d106"],
                       help="landmark backend (default: the processor's saved one, else the model's; dlib's model is "
                            "for non-commercial use only, see docs/facial_priors.md)")
    group.add_argument("--backend-options", type=json.loads, default={},
                       help='backend options as JSON, e.g. \'{"upsample": 0}\' or \'{"model_path": "2d106det.onnx"}\'')
    group.add_argument("--on-missing-face", choices=["error", "full_image", "zeros"], default="error",
                       help="the page's default when no face is found: say so (default), use the whole image, or a "
                            "zero prior")


def run(args: argparse.Namespace) -> int:
    from transformers_emola.app import build_app

    try:
        app = build_app(model=args.model, backend=args.backend, backend_options=args.backend_options,
                        on_missing_face=args.on_missing_face, device=args.device, dtype=args.dtype,
                        max_new_tokens=args.max_new_tokens, max_image_pixels=args.max_image_pixels)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
               max_file_size=args.max_file_size)
    return 0
