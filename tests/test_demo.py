"""`emola demo` end to end at a miniature size: every stage runs and the report holds real, consistent numbers."""

import json

import pytest
from rege_by_hand import mean_f1, package_s_ge, paper_per_au_f1

from transformers_emola.cli import main as cli_main
from transformers_emola.demo import DemoArguments, format_table, run_demo
from transformers_emola.jobs import read_jsonl
from transformers_emola.metrics.parsing import parse_emotion

EMOTION_ORDER = ["happiness", "sadness", "surprise", "anger", "neutral", "disgust", "fear"]  # FABA's label indices


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    args = DemoArguments(out=str(out), tasks=("au", "emotion"), num_train=12, num_eval=4, image_size=28, epochs=1,
                         batch_size=4, max_new_tokens=6, hidden_size=32, progress=False, num_threads=1)
    return out, run_demo(args)


def test_demo_writes_report_and_plots(demo):
    out, report = demo
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["before"]) == set(saved["after"]) == {"au", "emotion"}
    for stage in ("before", "after"):
        for task in ("au", "emotion"):
            paper = saved[stage][task]["paper"]
            assert paper["num_samples"] == 4
            assert (out / stage / task / "predictions.jsonl").read_text().count("\n") == 4
    assert saved["training"]["steps"] == 6  # 24 rows (12 per task), batch 4, one epoch
    assert len(saved["training"]["losses"]) >= 1
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "after" / "au" / "per_au_f1.png").exists()
    assert (out / "after" / "emotion" / "confusion_matrix.png").exists()
    assert "| au | before |" in (out / "report.md").read_text()


def test_demo_scores_are_rege_of_its_predictions(demo):
    """Each S_re and S_ge of report.json, recomputed from the predictions the demo wrote: AU F1 from its definition
    (tests/rege_by_hand.py), ROUGE-L by the `rouge` package the paper used, emotion accuracy counted here from the
    official-parity parser (checked against the official script in tests/test_metrics_parsing.py)."""
    out, _ = demo
    saved = json.loads((out / "report.json").read_text())
    for stage in ("before", "after"):
        for task in ("au", "emotion"):
            rows = read_jsonl(out / stage / task / "predictions.jsonl")
            texts, labels = [row["prediction"] for row in rows], [row["label"] for row in rows]
            if task == "au":
                s_re = mean_f1(paper_per_au_f1(texts, labels))
            else:
                right = [parse_emotion(text, mode="paper").index == EMOTION_ORDER.index(label.lower())
                         for text, label in zip(texts, labels)]
                s_re = 100 * sum(right) / len(right)
            s_ge = package_s_ge(texts, [row["reference"] for row in rows])
            paper = saved[stage][task]["paper"]
            assert paper["s_re"] == pytest.approx(s_re, nan_ok=True), (stage, task)
            assert paper["s_ge"] == pytest.approx(s_ge, rel=1e-12, nan_ok=True), (stage, task)
            assert paper["s_rege"] == pytest.approx(s_re + s_ge, nan_ok=True), (stage, task)
    assert saved["after"]["au"]["paper"]["s_ge"] > 0  # the trained model's answers share words with the references


def test_demo_model_is_a_loadable_checkpoint(demo):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out, report = demo
    model = AutoModelForImageTextToText.from_pretrained(report["model_dir"])
    processor = AutoProcessor.from_pretrained(report["model_dir"])
    assert type(model).__name__ == "EmolaForConditionalGeneration"
    assert model.config.facial_prior_dim == 136 and processor.use_facial_prior


def test_format_table_without_before():
    result = {"au": {"paper": {"s_re": 10.0, "s_ge": 20.0, "s_rege": 30.0}, "strict": {"s_re": 5.0}}}
    table = format_table(None, result, ["au"])
    assert table.splitlines()[-1] == "| au | after | 10.0 | 20.0 | 30.0 | 5.0 |"
    assert "before" not in table


def test_demo_rejects_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        run_demo(DemoArguments(out=str(tmp_path), tasks=("valence",)))


def test_cli_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "synth", "extract-priors", "show-priors", "evaluate", "convert", "analyze", "app"):
        assert command in text


def test_demo_runs_on_given_faba_annotations(demo, tmp_path):
    """--annotations/--data-root: the same stages on an existing FABA-Instruct folder (here: the first demo's)."""
    out, _ = demo
    args = DemoArguments(out=str(tmp_path), annotations=str(out / "data"), data_root=str(out / "data"),
                         tasks=("emotion",), image_size=28, epochs=1, batch_size=4, max_new_tokens=4, hidden_size=32,
                         evaluate_before=False, progress=False, num_threads=1)
    report = run_demo(args)
    assert report["before"] is None and report["training"]["steps"] == 3  # 12 emotion rows, batch 4
    assert report["after"]["emotion"]["paper"]["num_samples"] == 4
    assert not (tmp_path / "data").exists()  # nothing was generated
