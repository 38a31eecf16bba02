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
                         batch_size=4, max_new_tokens=6, hidden_size=32, progress=False, num_threads=1,
                         ablation=True, workers=1)
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
    assert (out / "after" / "emotion" / "strict" / "confusion_matrix.png").exists()
    assert "| au | before |" in (out / "report.md").read_text()


def test_demo_report_shows_what_the_scores_hide(demo):
    out, report = demo
    saved = json.loads((out / "report.json").read_text())
    for stage in ("before", "after"):
        for mode in ("paper", "strict"):
            emotion = saved[stage]["emotion"][mode]
            # answers without an emotion keyword are counted, whatever the mode made of them
            assert 0 <= emotion["num_no_keyword"] <= emotion["num_samples"]
            assert emotion["num_no_keyword"] == saved[stage]["emotion"]["strict"]["num_unparsed"]
            answers = [json.loads(line)["prediction"]
                       for line in (out / stage / "emotion" / "predictions.jsonl").read_text().splitlines()]
            assert emotion["num_distinct_answers"] == len(set(answers))
    after = saved["after"]["emotion"]["paper"]
    row = next(line for line in report["table"].splitlines() if line.startswith("| emotion | after |"))
    assert f"| {after['num_no_keyword']}/{after['num_samples']} no keyword |" in row
    assert "without an emotion keyword" in (out / "after" / "emotion" / "report.md").read_text()


def test_demo_ablation_trains_both_baselines_with_the_same_budget(demo):
    out, report = demo
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["ablation"]) == {"shuffled", "no_prior"}
    for variant in ("shuffled", "no_prior"):
        for task in ("au", "emotion"):
            for mode in ("paper", "strict"):
                scores = saved["ablation"][variant][task][mode]
                assert scores["num_samples"] == 4 and scores["mode"] == mode
        assert saved["ablation_training"][variant]["steps"] == saved["training"]["steps"]
    markdown = (out / "report.md").read_text()
    for variant in ("prior", "shuffled", "no_prior"):
        assert f"| emotion | {variant} |" in markdown
    # shuffled: every face keeps its image and answer, its landmark file is another face's
    original = json.loads((out / "data" / "FABAInstruct" / "train" / "train_emotion_anno.json").read_text())
    shuffled = json.loads((out / "ablation" / "shuffled" / "annotations" / "FABAInstruct" / "train" /
                           "train_emotion_anno.json").read_text())
    assert [r["image"] for r in shuffled] == [r["image"] for r in original]
    assert sorted(r["landmark"] for r in shuffled) == sorted(r["landmark"] for r in original)
    assert [r["landmark"] for r in shuffled] != [r["landmark"] for r in original]
    # no_prior is the LLaVA baseline: no prior token, no projector
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out / "ablation" / "no_prior" / "model").use_facial_prior is False


def test_demo_model_card_names_and_loads_the_model(demo):
    out, report = demo
    card = (out / "model" / "README.md").read_text()
    assert "# emola-demo-tiny" in card and "checkpoints" not in card
    assert f'model_id = "{report["model_dir"]}"' in card
    assert "fully fine-tuned" in card and "LoRA fine-tuned" not in card


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
    # the demo trains with standardised priors: the statistics of its training priors travel in the config
    assert len(model.config.facial_prior_mean) == len(model.config.facial_prior_std) == 136


def test_format_table_without_before():
    result = {"au": {"paper": {"s_re": 10.0, "s_ge": 20.0, "s_rege": 30.0}, "strict": {"s_re": 5.0}}}
    table = format_table(None, result, ["au"])
    assert table.splitlines()[-1] == "| au | after | 10.0 | 20.0 | 30.0 | 0 AUs left out | 5.0 | 0 AUs left out | - |"
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


def test_standardize_facial_priors_is_opt_in_and_keeps_a_models_own_statistics():
    import numpy as np

    from transformers_emola.tiny import build_tiny_emola
    from transformers_emola.training import EmolaScriptArguments, standardize_facial_priors

    assert EmolaScriptArguments().facial_prior_normalization == "none"  # released-checkpoint behaviour by default
    with pytest.raises(ValueError, match="facial_prior_normalization"):
        EmolaScriptArguments(facial_prior_normalization="zscore")
    model, _ = build_tiny_emola()
    assert model.config.facial_prior_mean is None and model.config.facial_prior_std is None
    priors = np.random.default_rng(0).normal(3.0, 0.05, size=(50, 136))
    standardize_facial_priors(model, priors)
    assert np.allclose(model.config.facial_prior_mean, priors.mean(0))
    assert np.allclose(model.config.facial_prior_std, priors.std(0))
    standardize_facial_priors(model, priors + 1.0)  # a model trained on its statistics keeps them
    assert np.allclose(model.config.facial_prior_mean, priors.mean(0))
