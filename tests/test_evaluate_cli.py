"""`emola evaluate`: reports checked against numbers worked out by hand, the model-driven runner end to end (and
resumed after a real kill), and the traditional protocols from prediction files."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from rege_by_hand import mean_f1, package_s_ge, paper_per_au_f1

from transformers_emola import AU_QUESTION
from transformers_emola.cli import main as cli_main
from transformers_emola.inference import generate_answers
from transformers_emola.jobs import read_jsonl
from transformers_emola.metrics import compute_au_f1_folds, compute_fer_accuracy
from transformers_emola import build_tiny_emola


def rouge_l_f(lcs: int, prediction_words: int, reference_words: int) -> float:
    """The `rouge` package's ROUGE-L F for one sentence pair of unique words: p = lcs / n, r = lcs / m,
    f = 2pr / (p + r + 1e-8) (its epsilon included)."""
    p, r = lcs / prediction_words, lcs / reference_words
    return 2 * (p * r) / (p + r + 1e-8)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model, processor = build_tiny_emola()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_evaluate_model_end_to_end(tiny_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        np.save(tmp_path / f"{i}.npy", rng.uniform(-1, 1, 136).astype(np.float32))
        rows.append({"id": str(i), "image": f"{i}.png", "landmark": f"{i}.npy", "gpt4": "AU12 is active.",
                     "label": "12"})
    rows.append({"id": "missing", "image": "nope.png", "landmark": "0.npy", "gpt4": "x", "label": "1"})
    (tmp_path / "anno.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    code = cli_main(["evaluate", "--model", str(tiny_dir), "--annotations", str(tmp_path / "anno.json"),
                     "--data-root", str(tmp_path), "--task", "au", "--out", str(out),
                     "--max-new-tokens", "4", "--no-plots"])
    assert code == 1  # the missing image is reported, the rest is scored
    assert "missing" in capsys.readouterr().err
    assert json.loads((out / "failures.json").read_text())[0]["id"] == "missing"
    # the predictions are the model's greedy answers to the official AU question, one image at a time
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [row["id"] for row in predictions] == ["0", "1", "2"]
    for i, row in enumerate(predictions):
        expected = generate_answers(model, processor, [Image.open(tmp_path / f"{i}.png").convert("RGB")],
                                    [AU_QUESTION], np.load(tmp_path / f"{i}.npy")[None], max_new_tokens=4)[0]
        assert (row["prediction"], row["reference"], row["label"]) == (expected, "AU12 is active.", "12")
    # and the report is REGE of those answers, recomputed from its definition (tests/rege_by_hand.py)
    report = json.loads((out / "report.json").read_text())
    texts = [row["prediction"] for row in predictions]
    per_au = paper_per_au_f1(texts, ["12"] * 3)
    assert report["num_samples"] == 3 and report["mode"] == "paper"
    assert (report["num_processes"], report["samples_per_process"]) == (1, [4])
    assert {int(au): f1 for au, f1 in report["per_au_f1"].items()} == pytest.approx(per_au)
    assert report["s_re"] == pytest.approx(mean_f1(per_au), nan_ok=True)
    assert report["s_ge"] == pytest.approx(package_s_ge(texts, ["AU12 is active."] * 3), rel=1e-12)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_au_report_holds_the_scores_worked_out_by_hand(tmp_path, capsys):
    path = write_jsonl(tmp_path / "au.jsonl", [
        {"id": "a", "prediction": "AU1 and AU12 are active.", "reference": "AU1 and AU12 are active.", "label": "1, 12"},
        {"id": "b", "prediction": "AU4 is visible.", "reference": "AU4 and AU7 are visible.", "label": "4, 7"},
        {"id": "c", "prediction": "AU12 is active.", "reference": "AU2 is active.", "label": "2"},
    ])
    assert cli_main(["evaluate", "--predictions", str(path), "--task", "au", "--out", str(tmp_path / "o"),
                     "--no-plots"]) == 0
    report = json.loads((tmp_path / "o/report.json").read_text())
    # predicted AUs {1, 12}, {4}, {12}; labelled {1, 12}, {4, 7}, {2} (AU7 is not one of the 12 scored AUs)
    #   AU1: TP 1 -> F1 100, accuracy 3/3;  AU2: FN 1 -> F1 0, accuracy 2/3
    #   AU4: TP 1 -> F1 100, accuracy 3/3;  AU12: TP 1, FP 1 -> F1 2*1 / (2*1 + 1) = 2/3, accuracy 2/3
    #   the other 8 scored AUs are absent from labels and predictions: left out (paper mode)
    assert report["per_au_f1"] == {"1": 100.0, "2": 0.0, "4": 100.0, "5": None, "6": None, "10": None,
                                   "12": pytest.approx(200 / 3), "17": None, "24": None, "25": None, "26": None,
                                   "43": None}
    assert report["s_re"] == pytest.approx((100 + 0 + 100 + 200 / 3) / 4)  # 66.67
    assert report["au_accuracy"] == pytest.approx((100 + 200 / 3 + 100 + 200 / 3) / 4)  # 83.33
    # ROUGE-L, one sentence each, unique words: a is its reference (5 of 5 words); b: LCS "AU4 visible", 2 of its
    # 3 words, of the reference's 5; c: LCS "is active", 2 of 3, of 3
    s_ge = 100 * (rouge_l_f(5, 5, 5) + rouge_l_f(2, 3, 5) + rouge_l_f(2, 3, 3)) / 3
    assert report["s_ge"] == pytest.approx(s_ge, rel=1e-12)  # 71.11
    assert report["s_rege"] == pytest.approx(200 / 3 + s_ge, rel=1e-12)
    assert report["num_samples"] == 3 and report["num_rouge_failures"] == 0 and report["skipped"] == []
    assert f"S_re 66.67  S_ge {s_ge:.2f}  S_rege {200 / 3 + s_ge:.2f}  (3 samples)" in capsys.readouterr().out
    assert "| AU12 | Lip Corner Puller | 66.67 | 66.67 |" in (tmp_path / "o/report.md").read_text()


def test_emotion_report_holds_the_scores_worked_out_by_hand(tmp_path):
    path = write_jsonl(tmp_path / "emotion.jsonl", [
        {"id": "a", "prediction": "The person looks happy.", "reference": "The person looks happy.",
         "label": "Happiness"},
        {"id": "b", "prediction": "The face shows surprise.", "reference": "The face shows surprise and fear.",
         "label": 2},
        {"id": "c", "prediction": "The person looks sad.", "reference": "The person looks angry.", "label": "Anger"},
        {"id": "d", "prediction": "It is hard to tell", "reference": "The person looks neutral.", "label": "Neutral"},
    ])
    # ROUGE-L: a 4 of 4 words, of 4; b LCS "The face shows surprise", 4 of 4, of 6; c LCS "The person looks", 3 of 4,
    # of 4; d no word in common: 0
    s_ge = 100 * (rouge_l_f(4, 4, 4) + rouge_l_f(4, 4, 6) + rouge_l_f(3, 4, 4) + 0) / 4
    # parsed emotions (happiness 0, sadness 1, surprise 2, anger 3, neutral 4):
    #   paper:  a happiness, b surprise, c happiness ("sad" is no official keyword: the default), d happiness
    #           (no ".": the official parser would crash; read whole, no keyword, the default)
    #   strict: a happiness, b surprise, c sadness, d unparsed (counted wrong, in no column)
    #   both: 2 of 4 right = 50 %
    confusion = {"paper": {(0, 0): 1, (2, 2): 1, (3, 0): 1, (4, 0): 1}, "strict": {(0, 0): 1, (2, 2): 1, (3, 1): 1}}
    for mode, cells in confusion.items():
        out = tmp_path / mode
        assert cli_main(["evaluate", "--predictions", str(path), "--task", "emotion", "--mode", mode,
                         "--out", str(out), "--no-plots"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["s_re"] == report["accuracy"] == 50.0
        assert report["s_ge"] == pytest.approx(s_ge, rel=1e-12)  # 66.07
        assert {(i, j): n for i, row in enumerate(report["confusion_matrix"]) for j, n in enumerate(row) if n} == cells
        assert (report["num_parser_fallbacks"], report["num_unparsed"]) == ((1, 0) if mode == "paper" else (0, 1))


# `emola evaluate` in a child process that SIGKILLs itself when generation of batch argv[1] + 1 starts: the batches
# before it are on disk, that one is lost in flight, as when a real run is killed.
KILLED_DURING_GENERATION = """
import os, signal, sys

import transformers_emola.inference as inference
from transformers_emola.cli import main

batches_to_finish, generate, calls = int(sys.argv[1]), inference.generate_answers, []


def generate_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) > batches_to_finish:
        os.kill(os.getpid(), signal.SIGKILL)
    return generate(*args, **kwargs)


inference.generate_answers = generate_then_die
sys.exit(main(sys.argv[2:]))
"""


def test_killed_evaluation_resumes_with_only_the_missing_samples(tiny_dir, tmp_path, monkeypatch):
    import transformers_emola.inference as inference

    rng = np.random.default_rng(3)
    rows = []
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        np.save(tmp_path / f"{i}.npy", rng.uniform(-1, 1, 136).astype(np.float32))
        rows.append({"id": f"face{i}", "image": f"{i}.png", "landmark": f"{i}.npy", "label": str([1, 4, 12][i % 3]),
                     "gpt4": f"AU{[1, 4, 12][i % 3]} is active."})
    (tmp_path / "anno.json").write_text(json.dumps(rows))

    def argv(out):
        return ["evaluate", "--model", str(tiny_dir), "--annotations", str(tmp_path / "anno.json"), "--data-root",
                str(tmp_path), "--task", "au", "--out", str(out), "--batch-size", "2", "--max-new-tokens", "4",
                "--no-plots"]

    killed = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILLED_DURING_GENERATION, "2", *argv(killed)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert [row["id"] for row in read_jsonl(killed / "predictions.jsonl")] == ["face0", "face1", "face2", "face3"]
    assert not (killed / "report.json").exists()

    generated = []  # images per generation call of the resumed run
    generate = inference.generate_answers
    monkeypatch.setattr(inference, "generate_answers",
                        lambda model, processor, images, *args, **kwargs: generated.append(len(images))
                        or generate(model, processor, images, *args, **kwargs))
    assert cli_main(argv(killed)) == 0
    assert generated == [2, 1]  # face4 + face5, face6: only the three samples the killed run had not written
    monkeypatch.setattr(inference, "generate_answers", generate)
    assert cli_main(argv(tmp_path / "uninterrupted")) == 0
    for name in ("predictions.jsonl", "report.json", "report.md"):
        assert (killed / name).read_text() == (tmp_path / "uninterrupted" / name).read_text(), name


def test_fer_protocol(tmp_path):
    records = [{"id": str(i), "prediction": p, "reference": "", "label": l}
               for i, (p, l) in enumerate([("Surprise", 2), ("Fear", 6), ("happy", 0), ("Anger", 1)])]
    path = write_jsonl(tmp_path / "fer.jsonl", records)
    assert cli_main(["evaluate", "--protocol", "fer", "--predictions", str(path), "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o/report.json").read_text())
    expected = compute_fer_accuracy([r["prediction"] for r in records], [r["label"] for r in records])
    assert report["accuracy"] == expected["accuracy"] == 50.0


def test_au_folds_protocol(tmp_path):
    folds = [["AU1 AU2", "AU4"], ["AU1", "AU4"], ["AU2", "AU1 AU4"]]
    labels = [["1, 2", "4"], ["1", "2, 4"], ["2", "1"]]
    files = [str(write_jsonl(tmp_path / f"fold{k}.jsonl",
                             [{"id": str(i), "prediction": p, "reference": "", "label": l}
                              for i, (p, l) in enumerate(zip(folds[k], labels[k]))])) for k in range(3)]
    code = cli_main(["evaluate", "--protocol", "au_folds", "--folds", *files, "--au-set", "disfa", "--mode",
                     "strict", "--out", str(tmp_path / "o")])
    assert code == 0
    report = json.loads((tmp_path / "o/report.json").read_text())
    assert report["f1"] == pytest.approx(compute_au_f1_folds(folds, labels, "disfa", mode="strict")["f1"])


def test_rege_needs_a_task(tmp_path, capsys):
    assert cli_main(["evaluate", "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "--task" in capsys.readouterr().err


def test_example_script_matches_the_cli(tiny_dir, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "evaluate_faba_bench", Path(__file__).resolve().parents[1] / "examples/evaluate_faba_bench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    Image.new("RGB", (32, 32), (90, 60, 30)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.zeros(136, np.float32))
    (tmp_path / "anno.json").write_text(json.dumps(
        [{"id": "a", "image": "a.png", "landmark": "a.npy", "gpt4": "The face shows happiness.", "label": "Happiness"}]))
    common = ["--annotations", str(tmp_path / "anno.json"), "--task", "emotion", "--max_new_tokens", "4",
              "--no_plots", "true"]
    assert script.main(["--model", str(tiny_dir), "--data_root", str(tmp_path), "--out", str(tmp_path / "a"),
                        *common]) == 0
    assert cli_main(["evaluate", "--model", str(tiny_dir), "--data-root", str(tmp_path), "--out", str(tmp_path / "b"),
                     "--annotations", str(tmp_path / "anno.json"), "--task", "emotion", "--max-new-tokens", "4",
                     "--no-plots"]) == 0
    assert (tmp_path / "a/predictions.jsonl").read_text() == (tmp_path / "b/predictions.jsonl").read_text()
