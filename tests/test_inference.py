"""Batched generation and the resumable FABA-Bench prediction runner."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_emola.inference import generate_answers, predict_faba_bench
from transformers_emola.jobs import read_jsonl
from transformers_emola import build_tiny_emola


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_emola()


@pytest.fixture()
def bench(tmp_path):
    """A FABA-Bench-shaped eval folder: 5 faces, .npy priors, one corrupt image."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "images").mkdir()
    (tmp_path / "landmarks").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"images/{i}.png")
        np.save(tmp_path / f"landmarks/{i}.npy", rng.uniform(-1, 1, 136).astype(np.float32))
        rows.append({"id": f"face{i}", "image": f"images/{i}.png", "landmark": f"landmarks/{i}.npy",
                     "gpt4": "AU12 - Lip Corner Puller.", "label": "12"})
    (tmp_path / "images/bad.png").write_bytes(b"not a png")
    rows.insert(2, {"id": "broken", "image": "images/bad.png", "landmark": "landmarks/0.npy", "gpt4": "x", "label": "1"})
    (tmp_path / "anno.json").write_text(json.dumps(rows))
    return tmp_path


def test_batched_answers_equal_one_by_one(tiny):
    model, processor = tiny
    images = [Image.new("RGB", (30 + 5 * i, 30), (40 * i, 80, 120)) for i in range(3)]
    priors = np.random.default_rng(1).uniform(-1, 1, (3, 136)).astype(np.float32)
    questions = ["What AUs are conveyed by this face?", "What emotions are conveyed by this face?", "Describe it."]
    batched = generate_answers(model, processor, images, questions, priors, max_new_tokens=6)
    single = [generate_answers(model, processor, [im], [q], priors[i : i + 1], max_new_tokens=6)[0]
              for i, (im, q) in enumerate(zip(images, questions))]
    assert batched == single and all(batched)


def test_runner_reports_failures_and_writes_the_rest(tiny, bench):
    model, processor = tiny
    path, failures = predict_faba_bench(model, processor, bench / "anno.json", bench, "au", bench / "out",
                                        batch_size=2, max_new_tokens=4, progress=False)
    rows = read_jsonl(path)
    assert [r["id"] for r in rows] == [f"face{i}" for i in range(5)]
    assert [f["id"] for f in failures] == ["broken"] and "images/bad.png" == failures[0]["image"]
    assert json.loads((bench / "out/failures.json").read_text())[0]["id"] == "broken"
    assert all(r["reference"] == "AU12 - Lip Corner Puller." and r["label"] == "12" for r in rows)


def test_killed_run_resumes_to_the_same_predictions(tiny, bench):
    model, processor = tiny
    full, _ = predict_faba_bench(model, processor, bench / "anno.json", bench, "au", bench / "full",
                                 batch_size=2, max_new_tokens=4, progress=False)
    # "killed" after 3 rows, with a half-written line at the end
    partial, _ = predict_faba_bench(model, processor, bench / "anno.json", bench, "au", bench / "resumed",
                                    batch_size=2, max_new_tokens=4, progress=False, limit=3)
    with open(partial, "a") as handle:
        handle.write('{"id": "face3", "predic')
    calls = []
    original = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    try:
        predict_faba_bench(model, processor, bench / "anno.json", bench, "au", bench / "resumed",
                           batch_size=2, max_new_tokens=4, progress=False)
    finally:
        del model.generate
    assert sum(calls) == 3  # only face2.. face4 were generated again (face0, face1 were kept)
    by_id = {r["id"]: r for r in read_jsonl(full)}
    resumed = {r["id"]: r for r in read_jsonl(partial)}
    assert resumed == by_id


def test_wrong_prior_dimension_is_a_reported_failure(tiny, bench):
    model, processor = tiny
    np.save(bench / "landmarks/1.npy", np.zeros(212, np.float32))
    _, failures = predict_faba_bench(model, processor, bench / "anno.json", bench, "emotion", bench / "o",
                                     max_new_tokens=2, progress=False)
    messages = {f["id"]: f["error"] for f in failures}
    assert "landmarks/1.npy: facial prior has dimension 212, expected 136" in messages["face1"]


def test_unknown_task_is_rejected(tiny, bench):
    with pytest.raises(ValueError, match="task must be one of"):
        predict_faba_bench(*tiny, bench / "anno.json", bench, "valence", bench / "o", progress=False)
