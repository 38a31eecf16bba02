# Copyright 2024 the transformers-emola authors. Apache-2.0.
"""The EmoLA web page as a Hugging Face Space: the same app as `emola app`, in the Space's `app.py` convention.

A Gradio Space runs `python app.py` and serves the `demo` it builds. Copy this file to the root of the Space as
`app.py`, list the package in `requirements.txt` and choose the model with Space variables (Settings → Variables):

    EMOLA_MODEL            the checkpoint's Hub id (required on a Space; "tiny" = a tiny random model)
    EMOLA_BACKEND          landmark backend (default: the checkpoint's; dlib is non-commercial only)
    EMOLA_BACKEND_OPTIONS  backend options as JSON, e.g. {"upsample": 0}
    EMOLA_ON_MISSING_FACE  the page's default when no face is found: error | full_image | zeros

Locally the same file takes the settings as arguments (they win over the variables):

    python examples/app.py --model tiny --backend dlib       # then open http://127.0.0.1:7860

The recipe (README front matter, requirements.txt): docs/app.md.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from transformers_emola.app import TINY_MODEL, build_app


def _env(name: str, default=None):
    return field(default_factory=lambda: os.environ.get(name) or default)


@dataclass
class SpaceArguments:
    model: str = _env("EMOLA_MODEL", TINY_MODEL)
    backend: Optional[str] = _env("EMOLA_BACKEND")
    backend_options: str = _env("EMOLA_BACKEND_OPTIONS", "{}")
    on_missing_face: str = _env("EMOLA_ON_MISSING_FACE", "error")
    max_new_tokens: int = field(default_factory=lambda: int(os.environ.get("EMOLA_MAX_NEW_TOKENS", 512)))


(args,) = HfArgumentParser(SpaceArguments).parse_args_into_dataclasses()
demo = build_app(model=args.model, backend=args.backend, backend_options=json.loads(args.backend_options),
                 on_missing_face=args.on_missing_face, max_new_tokens=args.max_new_tokens)

if __name__ == "__main__":
    demo.launch()  # a Space sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; locally http://127.0.0.1:7860
