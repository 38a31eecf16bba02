"""The `emola` console script: the commands of `transformers_emola.cli`, with a command line that answers at once.

`import transformers_emola` registers EmoLA with transformers' Auto classes, which imports torch and transformers'
modelling code: seconds. Reading the command line needs none of it (the parser is built from
`transformers_emola.cli`, `.commands` and `.faba`, which import only the standard library), so this entry point makes
the package's submodules importable before its `__init__` runs, and runs that `__init__` (registration included)
just before the command does. `emola --help` and every `emola <command> --help` thus skip it.

It has to live outside the package: a module inside `transformers_emola` can only be imported after its `__init__`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable

PACKAGE = "transformers_emola"


def _defer_package_init(name: str) -> Callable[[], None]:
    """Put package `name` in `sys.modules` without running its `__init__`; returns the function that runs it."""
    if name in sys.modules:  # already imported (a test, `python -m transformers_emola.cli`): nothing to defer
        return lambda: None
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)  # a package with its __path__, its __init__ not run yet
    sys.modules[name] = module

    def run_init() -> None:
        spec.loader.exec_module(module)  # the submodules imported meanwhile stay as they are

    return run_init


def main(argv: list[str] | None = None) -> int:
    run_init = _defer_package_init(PACKAGE)
    from transformers_emola.cli import main as cli_main

    return cli_main(argv, before_run=run_init)


if __name__ == "__main__":
    sys.exit(main())
