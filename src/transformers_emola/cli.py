"""The `emola` command. Each sub-command lives in `transformers_emola.commands.<name>` and exposes
`add_arguments(parser)` and `run(args) -> int`; heavy imports happen inside `run`, so `emola --help` is fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("transformers_emola.commands.demo", "Synthetic FABA -> tiny EmoLA -> TRL fine-tune -> REGE, offline."),
    "synth": ("transformers_emola.commands.synth", "Write a synthetic FABA-Instruct dataset."),
    "extract-priors": ("transformers_emola.commands.extract_priors", "Extract facial-prior .npy files."),
    "show-priors": ("transformers_emola.commands.show_priors", "Draw the landmarks and face box of an image."),
    "evaluate": ("transformers_emola.commands.evaluate", "Evaluate a model (or score predictions) on FABA-Bench."),
    "convert": ("transformers_emola.commands.convert", "Convert an original EmoLA checkpoint to HF format."),
    "analyze": ("transformers_emola.commands.analyze", "Facial affect analysis of images: AUs and emotion."),
    "app": ("transformers_emola.commands.app", "Web page (Gradio) and /analyze API for facial affect analysis."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emola", description="EmoLA facial affective behaviour analysis.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # command not shipped in this build
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
