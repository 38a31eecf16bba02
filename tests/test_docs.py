"""Every ```python block in the README, docs/, model_cards/, the card template and the metric card runs, so the
documentation cannot rot.

Blocks of one file run in order in one namespace (later blocks may use earlier names), in a temporary working
directory. Blocks that need real 7B weights or a GPU are marked ```python no-run and are only compiled.
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FILES = sorted(
    [ROOT / "README.md", ROOT / "src/transformers_emola/metrics/rege/README.md",
     ROOT / "src/transformers_emola/model_card_template.md"]
    + list((ROOT / "docs").rglob("*.md"))
    + list((ROOT / "model_cards").glob("*.md")),
)


def python_blocks(path: Path) -> list[tuple[str, str]]:
    return [(info.strip(), code) for info, code in BLOCK.findall(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_snippets_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace = {"__name__": "__doc_snippet__"}
    for number, (info, code) in enumerate(blocks, 1):
        compiled = compile(code, f"{path.name}[block {number}]", "exec")
        if info == "no-run":
            continue
        assert info == "", f"unknown info string {info!r} in {path.name} block {number} (use '' or 'no-run')"
        exec(compiled, namespace)  # noqa: S102  (our own documentation)


def test_docs_exist_for_every_guide():
    names = {p.name for p in (ROOT / "docs").rglob("*.md")}
    for guide in ["emola.md", "quickstart.md", "facial_priors.md", "fine_tuning.md", "evaluation.md",
                  "conversion.md", "benchmarks.md"]:
        assert guide in names, f"docs/{guide} is missing"
    assert os.path.exists(ROOT / "src/transformers_emola/metrics/rege/README.md")
