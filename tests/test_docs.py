"""Every ```python and ```pycon block in the README, docs/, model_cards/, the card template and the metric card runs,
so the documentation cannot rot, and the results the documentation states are checked.

Blocks of one file run in order in one namespace (later blocks may use earlier names), in a temporary working
directory. ```python blocks state their results as `assert`s; ```pycon blocks are doctests whose printed output is
compared (with `...` for the parts left out, and free line breaks). Blocks that need real 7B weights or a GPU are
marked ```python no-run and are only compiled.
"""

import doctest
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|pycon)([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FILES = sorted(
    [ROOT / "README.md", ROOT / "src/transformers_emola/metrics/rege/README.md",
     ROOT / "src/transformers_emola/model_card_template.md"]
    + list((ROOT / "docs").rglob("*.md"))
    + list((ROOT / "model_cards").glob("*.md")),
)
# `print(x)  # 3` states a result without checking it: write `assert x == 3` (or a ```pycon block) instead.
STATED_IN_A_COMMENT = re.compile(r"print\(.*\)\s*#\s*(True|False|None|-?\d|\[|\(|\{|')")


def code_blocks(path: Path) -> list[tuple[str, str, str, int]]:
    """(language, info string, code, line number) of each block."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 2)
            for m in BLOCK.finditer(text)]


def run_pycon(code: str, namespace: dict, name: str, path: Path, line: int) -> None:
    test = doctest.DocTestParser().get_doctest(code, namespace, name, str(path), line - 1)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run_and_their_results_hold(path, tmp_path, monkeypatch):
    blocks = code_blocks(path)
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace = {"__name__": "__doc_snippet__"}
    for number, (language, info, code, line) in enumerate(blocks, 1):
        name = f"{path.name}[block {number}, line {line}]"
        assert info in ("", "no-run"), f"unknown info string {info!r} in {name} (use '' or 'no-run')"
        if language == "pycon":
            assert info == "", f"{name}: pycon blocks always run"
            run_pycon(code, namespace, name, path, line)
            continue
        compiled = compile(code, name, "exec")
        if info == "no-run":
            continue
        stated = [text for text in code.splitlines() if STATED_IN_A_COMMENT.search(text)]
        assert not stated, f"{name} states results in comments instead of checking them: {stated}"
        exec(compiled, namespace)  # noqa: S102  (our own documentation)


def test_docs_exist_for_every_guide():
    names = {p.name for p in (ROOT / "docs").rglob("*.md")}
    for guide in ["emola.md", "quickstart.md", "facial_priors.md", "fine_tuning.md", "evaluation.md",
                  "conversion.md", "benchmarks.md", "testing.md"]:
        assert guide in names, f"docs/{guide} is missing"
    assert os.path.exists(ROOT / "src/transformers_emola/metrics/rege/README.md")
