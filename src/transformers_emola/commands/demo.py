"""`emola demo`: synthetic FABA -> tiny EmoLA -> TRL fine-tune -> REGE before/after, offline, in a few minutes.

Example: `emola demo --out emola_demo`; `--model`, `--annotations` and `--data-root` run the same stages on a real
checkpoint and FABA-Instruct. See docs/demo_and_ablation.md.
"""

from __future__ import annotations

import argparse

from . import add_dataclass_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo import DemoArguments

    add_dataclass_arguments(parser, DemoArguments)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..demo import DemoArguments, run_demo

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(DemoArguments)}
    report = run_demo(DemoArguments(**{**values, "tasks": tuple(values["tasks"])}))
    print()
    print(report["table"])
    timings = report["timings"]
    training = report["training"]
    losses = (f", loss {training['first_loss']:.3f} -> {training['last_loss']:.3f}"
              if training["first_loss"] is not None else "")
    print(f"\ntrained {training['steps']} steps{losses}; total {timings['total_s']:.0f} s")
    print(f"report: {args.out}/report.json, plots: {', '.join(report['plots'])}")
    return 0
