"""Sub-commands of the `emola` CLI, one module each, and what they share: help formatting, options made from the
package's argument dataclasses, the facial-prior options, and error messages worded in command-line terms.

Each command module defines `add_arguments(parser)` and `run(args) -> int` (the exit status); the library is
imported inside `run`, so building the parser (and `--help`) needs only this light code and `transformers_emola.faba`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Any

from ..faba import DEFAULT_FACIAL_PRIOR_BACKEND, FACIAL_PRIOR_BACKENDS, MISSING_FACE_POLICIES

__all__ = [
    "HelpFormatter",
    "add_dataclass_arguments",
    "add_facial_prior_arguments",
    "cli_message",
    "extractor_from_args",
    "print_failures",
    "processes_note",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default, except for flags (off unless given), required options, and defaults the help
    text words itself ("... (default: the checkpoint's)")."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        flag = action.nargs == 0  # --help, --version, store_true / store_false flags
        if (flag or action.required or not action.option_strings or "(default" in help_text
                or action.default is argparse.SUPPRESS):
            return help_text
        default = action.default
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{help_text} (default: {default})"


def _is_true(text: str) -> bool:
    value = str(text).lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_arguments(parser, cls, *, trl_style: bool = False) -> None:
    """One option per field of the dataclass `cls`, with its `metadata["help"]` and default.

    emola style (`--num-train 12`): a bool that defaults to False is a flag, one that defaults to True is negated
    with `--no-<name>` (a leading "use_" dropped: `use_facial_prior` -> `--no-facial-prior`). TRL style mirrors
    `TrlParser` / `HfArgumentParser`, which parses those options for real (`--train_annotations` or
    `--train-annotations`, `--merge true`).
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional[X]: an X option
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        dash = field.name.replace("_", "-")
        options: dict[str, Any] = {"help": field.metadata.get("help", ""), "dest": field.name}
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        if kind is bool and trl_style:
            names = [f"--{field.name}"] + ([f"--{dash}"] if dash != field.name else [])
            parser.add_argument(*names, type=_is_true, nargs="?", const=True, default=default, metavar="BOOL",
                                **options)
            continue
        if kind is bool:
            if default:
                name = f"--no-{dash.removeprefix('use-')}"
                parser.add_argument(name, action="store_false", **options)
            else:
                parser.add_argument(f"--{dash}", action="store_true", **options)
            continue
        origin = typing.get_origin(kind)
        if origin in (list, tuple):
            options["nargs"] = "+"
            kind = typing.get_args(kind)[0]
        names = ([f"--{field.name}"] if trl_style and dash != field.name else []) + [f"--{dash}"]
        parser.add_argument(*names, type=kind, default=default, **options)


# ---------------------------------------------------------------------------------------------------------------
# Facial-prior options (analyze, extract-priors, show-priors)
# ---------------------------------------------------------------------------------------------------------------
def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"upsample\": 0}}', got {text}")
    return value


def _face_index(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_facial_prior_arguments(parser: argparse.ArgumentParser, default_backend: str | None) -> None:
    """The options that build a `FacialPriorExtractor`, the same for every command that needs one."""
    group = parser.add_argument_group("facial prior (landmarks)")
    backend_help = ("landmark backend; dlib's model is non-commercial, see docs/facial_priors.md"
                    + ("" if default_backend else " (default: the one saved with the checkpoint's processor, else "
                                                  "the model's facial_prior_backend)"))
    group.add_argument("--backend", choices=FACIAL_PRIOR_BACKENDS, default=default_backend, help=backend_help)
    group.add_argument("--on-missing-face", choices=MISSING_FACE_POLICIES, default=None,
                       help="no face found: report the image as failed, use the whole image as the face, or give "
                            "it a zero prior (default: error; face_alignment and dlib only)")
    group.add_argument("--face-index", type=_face_index, default=None,
                       help="which face when several are found, best detector score first (default: 0, the best)")
    group.add_argument("--backend-options", type=_json_object, default={}, metavar="JSON",
                       help='more backend options, e.g. \'{"model_path": "2d106det.onnx"}\' (insightface_2d106), '
                            '\'{"device": "cuda"}\' (face_alignment), \'{"upsample": 0}\' (dlib); see '
                            "docs/facial_priors.md")


def extractor_options(args: argparse.Namespace) -> dict:
    """The backend options the facial-prior arguments ask for."""
    options = dict(args.backend_options)
    for name in ("on_missing_face", "face_index"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def extractor_from_args(args: argparse.Namespace):
    from ..facial_prior import FacialPriorExtractor

    return FacialPriorExtractor(args.backend or DEFAULT_FACIAL_PRIOR_BACKEND, **extractor_options(args))


# ---------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------
NO_FACE_HINT = "--on-missing-face full_image (use the whole image) or zeros (a zero prior) gives them a prior anyway"


def cli_message(error: BaseException) -> str:
    """An error as the command line should word it: fixes as options, not as Python arguments."""
    from ..facial_prior import FaceNotFoundError, FacialPriorWeightsError

    if isinstance(error, FaceNotFoundError):
        return f"{error.reason}; {NO_FACE_HINT}"
    if isinstance(error, FacialPriorWeightsError):
        message = error.reason
        if error.suggested_options:
            message += f"\nTo use files you have: --backend-options '{json.dumps(error.suggested_options)}'"
        return message
    return str(error)


def processes_note(samples_per_process: list[int], unit: str) -> str:
    """How a launch of several processes split the job, for a command's summary line ("" for one process)."""
    if len(samples_per_process) <= 1:
        return ""
    return f" ({len(samples_per_process)} processes: {'/'.join(map(str, samples_per_process))} {unit})"


def print_failures(failures: list[dict], failures_path, name_field: str = "image") -> None:
    """List the failed items on stderr, with one hint for the images in which no face was found."""
    print(f"Failed ({len(failures)}, also in {failures_path}):", file=sys.stderr)
    for failure in failures:
        status = f" [{failure['status']}]" if failure.get("status") not in (None, "error") else ""
        print(f"  {failure[name_field]}{status}: {failure['error']}", file=sys.stderr)
    no_face = sum(failure.get("status") == "no_face" for failure in failures)
    if no_face:
        print(f"{no_face} image(s) without a face: {NO_FACE_HINT}", file=sys.stderr)
