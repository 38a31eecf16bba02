"""`emola demo` end to end at a miniature size: every stage runs and the report holds real, consistent numbers."""

import json
import subprocess
import sys

import pytest
from rege_by_hand import mean_f1, package_s_ge, paper_per_au_f1

from transformers_emola.cli import main as cli_main
from transformers_emola.demo import DemoArguments, default_workers, format_table, run_demo
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


def test_demo_command_reports_the_loss_of_a_run_shorter_than_the_logging_interval(tmp_path, capsys):
    """One training step (8 rows, batch 8) is fewer than the 5 steps between loss logs: the first step is logged
    anyway, and the command's summary prints it (it raised on a missing loss before)."""
    assert cli_main(["demo", "--out", str(tmp_path), "--num-train", "4", "--num-eval", "2", "--epochs", "1",
                     "--image-size", "28", "--hidden-size", "32", "--max-new-tokens", "4", "--workers", "1",
                     "--no-evaluate-before", "--num-threads", "1", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["training"]["steps"] == 1
    first_loss = saved["training"]["first_loss"]
    assert first_loss is not None and len(saved["training"]["losses"]) == 1
    assert f"trained 1 steps, loss {first_loss:.3f} -> {first_loss:.3f};" in capsys.readouterr().out


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


def test_demo_runs_the_tiny_models_runs_at_once_and_a_checkpoints_one_by_one():
    assert default_workers(DemoArguments(), 4) == 4
    assert default_workers(DemoArguments(model="some/llava-checkpoint"), 4) == 1
    assert default_workers(DemoArguments(workers=2), 4) == 2
    with pytest.raises(ValueError, match="workers must be at least 1"):
        default_workers(DemoArguments(workers=0), 4)


KEEP_MEMORY_PROBE = """
import resource, sys, torch
from transformers_emola.demo import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = torch.ones(16 << 20); del buffer  # 64 MB, above glibc's largest automatic mmap threshold
start = faults()
for _ in range(10):
    buffer = torch.ones(16 << 20); del buffer
print(faults() - start)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_stops_the_page_faults_of_reallocating_a_buffer():
    """Ten 64 MB allocations: by default each is mapped and zero-filled anew (~16k page faults each)."""
    def page_faults(mode):
        run = subprocess.run([sys.executable, "-c", KEEP_MEMORY_PROBE, mode], capture_output=True, text=True,
                             check=True)
        return int(run.stdout.split()[-1])

    default, kept = page_faults("default"), page_faults("keep")
    assert default >= 10 * 16_000
    assert kept <= default / 4


def test_demo_default_tokenizer_names_every_au_in_one_token(tmp_path):
    """At the default vocabulary every `AU<n>` of the synthetic answers is one token (at 600, `AU15` was two and AU
    scores fell; docs/demo_and_ablation.md)."""
    import re

    from transformers_emola.data import load_faba_instruct
    from transformers_emola.demo import _combined_training_file, _synthetic_data, _tokenizer_corpus
    from transformers_emola.tiny import build_tiny_tokenizer

    args = DemoArguments(out=str(tmp_path), num_eval=1, progress=False)
    paths = _synthetic_data(args, tmp_path / "data")
    train_file = _combined_training_file(paths, args.tasks, tmp_path / "train.json")
    rows = load_faba_instruct(train_file, image_root=paths["root"], split="train", use_facial_prior=False)
    corpus = _tokenizer_corpus(rows)
    aus = sorted({int(n) for text in corpus for n in re.findall(r"\bAU(\d+)\b", text)})
    assert len(aus) >= 12
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=args.vocab_size)
    for au in aus:
        assert len(tokenizer.tokenize(f" AU{au}")) == 1, (au, tokenizer.tokenize(f" AU{au}"))
