"""`emola evaluate`: the model-driven runner end to end, and the traditional protocols from prediction files."""

import json

import numpy as np
import pytest
from PIL import Image

from transformers_emola.cli import main as cli_main
from transformers_emola.evaluation import score_predictions_file
from transformers_emola.metrics import compute_au_f1_folds, compute_fer_accuracy
from transformers_emola import build_tiny_emola


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
                     "--data-root", str(tmp_path), "--task", "au", "--mode", "strict", "--out", str(out),
                     "--max-new-tokens", "4", "--no-plots"])
    assert code == 1  # the missing image is reported, the rest is scored
    assert "missing" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == 3
    assert report == json.loads(json.dumps(score_predictions_file(out / "predictions.jsonl", "au", "strict"),
                                           default=str)) | {"skipped": report["skipped"], "num_processes": 1,
                                                            "samples_per_process": [4]}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


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
