"""The `emola` command: `emola <command> --help` for each.

Each sub-command lives in `transformers_emola.commands.<name>` and exposes `add_arguments(parser)` and
`run(args) -> int`; the library is imported inside `run`. The console script is `emola_cli.main`, which lets the
parser be built before this package's `__init__` (which imports torch) runs, so `--help` answers at once;
`python -m transformers_emola.cli ...` (e.g. under `torchrun`) runs the same commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from .commands import HelpFormatter

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("transformers_emola.commands.demo", "Synthetic FABA -> tiny EmoLA -> TRL fine-tune -> REGE, offline."),
    "synth": ("transformers_emola.commands.synth", "Write a synthetic FABA-Instruct dataset."),
    "train": ("transformers_emola.commands.train", "Fine-tune EmoLA with the TRL recipe (examples/sft_emola.py)."),
    "evaluate": ("transformers_emola.commands.evaluate", "Evaluate a model (or score predictions) on FABA-Bench."),
    "analyze": ("transformers_emola.commands.analyze", "Facial affect analysis of images: AUs and emotion."),
    "extract-priors": ("transformers_emola.commands.extract_priors", "Extract facial-prior .npy files of images."),
    "show-priors": ("transformers_emola.commands.show_priors", "Draw the faces and landmarks a prior comes from."),
    "app": ("transformers_emola.commands.app", "Web page (Gradio) and /analyze API for facial affect analysis."),
    "convert": ("transformers_emola.commands.convert", "Convert an original EmoLA checkpoint to HF format."),
}


class _VersionAction(argparse.Action):
    """`--version`: looked up only when asked (reading the installed metadata takes a noticeable moment)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("transformers-emola")
        except PackageNotFoundError:  # a source tree that was not installed
            installed = "unknown"
        print(f"{parser.prog} {installed}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emola", description="EmoLA facial affective behaviour analysis.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action=_VersionAction, help="show the installed version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=module.__doc__ or help_text,
                                    formatter_class=HelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _passes_unknown=getattr(module, "PASSES_UNKNOWN_OPTIONS", False),
                         _parser=sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; `args.argv` keeps the command's own arguments (for commands that re-parse them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown and not args._passes_unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv[argv.index(args.command) + 1:]
    return args


def main(argv: list[str] | None = None, before_run: Callable[[], None] | None = None) -> int:
    """Parse the command line and run the command; `before_run` is called in between (see `emola_cli`)."""
    args = parse_args(argv)
    if before_run is not None:
        before_run()
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
