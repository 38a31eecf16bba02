"""`emola train`: fine-tune EmoLA with the TRL recipe, the same as `examples/sft_emola.py` (TrlParser, YAML recipes).

    emola train --config examples/recipes/emola_au.yaml
    emola train --config examples/recipes/emola_au.yaml --use_facial_prior false --output_dir checkpoints/llava-lora
    accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml -m transformers_emola.cli train ...

Options below are EmoLA's data and run options; every option of TRL's SFTConfig (with EmoLA's defaults:
EmolaSFTConfig) and ModelConfig is accepted too (--model_name_or_path, --output_dir, --learning_rate, --lora_r,
--load_in_4bit, ...): `emola train --help-all` lists them. Values given here win over the --config file. See
docs/fine_tuning.md.
"""

from __future__ import annotations

import argparse

from . import add_dataclass_arguments

#: The TRL options are parsed by TrlParser in `run`, not declared here (that would import TRL for `--help`).
PASSES_UNKNOWN_OPTIONS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.arguments import EmolaScriptArguments

    parser.add_argument("--config", default=None, help="YAML recipe, e.g. examples/recipes/emola_au.yaml "
                                                       "(default: none, options only)")
    parser.add_argument("--help-all", action="store_true",
                        help="list every option, TRL's SFTConfig and ModelConfig included (imports TRL), and exit")
    add_dataclass_arguments(parser.add_argument_group("EmoLA data and run options"), EmolaScriptArguments,
                            trl_style=True)


def run(args: argparse.Namespace) -> int:
    from trl import ModelConfig, TrlParser

    from ..training import EmolaScriptArguments, EmolaSFTConfig, format_summary, train_emola

    parser = TrlParser((EmolaScriptArguments, EmolaSFTConfig, ModelConfig), prog="emola train")
    if args.help_all:
        parser.print_help()
        return 0
    script_args, training_args, model_args = parser.parse_args_and_config(args=args.argv)
    summary = train_emola(script_args, training_args, model_args)
    if summary["trainer"].is_world_process_zero():
        print(format_summary(summary))
    return 0
