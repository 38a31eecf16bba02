"""FABA-Instruct loading: rows -> TRL vision format, up-front validation, skip policy, lazy images, eval rows."""

import json
import logging
import shutil

import numpy as np
import pytest
from datasets import Dataset, IterableDataset
from PIL import Image

from transformers_emola.data import (
    FabaValidationError,
    conversations_to_messages,
    infer_task,
    load_faba_instruct,
    resolve_annotation_file,
    validate_faba_instruct,
)
from transformers_emola.faba import AU_QUESTION, EMOTION_QUESTION, VICUNA_V1_SYSTEM_PROMPT
from transformers_emola.synthetic import write_synthetic_faba


@pytest.fixture(scope="module")
def faba(tmp_path_factory):
    root = tmp_path_factory.mktemp("faba")
    paths = write_synthetic_faba(root, num_train=6, num_eval=3, seed=3, image_size=32)
    return root, paths


def read_rows(path):
    return json.loads(path.read_text())


def write_image(path, colour, size=(24, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_training_rows_become_trl_messages_with_priors(faba):
    root, paths = faba
    rows = read_rows(paths["train_au"])
    dataset = load_faba_instruct(paths["train_au"], root, split="train")
    assert isinstance(dataset, Dataset) and len(dataset) == len(rows)
    assert dataset.column_names == ["id", "task", "images", "messages", "reference", "label", "facial_priors"]
    for row, record in zip(rows, dataset):
        question = row["conversations"][0]["value"].replace("<image>", "").strip()
        assert record["id"] == row["id"] and record["task"] == "au"  # task read from train_au_anno.json
        assert record["messages"] == [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": row["conversations"][1]["value"]}]},
        ]
        np.testing.assert_array_equal(np.float32(record["facial_priors"]), np.load(root / row["landmark"]))
        assert len(record["images"]) == 1
        np.testing.assert_array_equal(np.asarray(record["images"][0]), np.asarray(Image.open(root / row["image"])))
        assert record["reference"] is None and record["label"] is None


def test_eval_rows_get_the_official_question_and_references(faba):
    root, paths = faba
    for task, question in (("au", AU_QUESTION), ("emotion", EMOTION_QUESTION)):
        rows = read_rows(paths[f"eval_{task}"])
        dataset = load_faba_instruct(paths[f"eval_{task}"], root)  # split and task from the rows and file name
        assert [r["reference"] for r in dataset] == [row["gpt4"] for row in rows]
        assert [r["label"] for r in dataset] == [str(row["label"]) for row in rows]
        assert dataset[0]["messages"] == [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]}
        ]
    with_answers = load_faba_instruct(paths["eval_au"], root, include_reference_answer=True,
                                      system_prompt=VICUNA_V1_SYSTEM_PROMPT)
    messages = with_answers[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"][0]["text"] == VICUNA_V1_SYSTEM_PROMPT
    assert messages[2]["content"][0]["text"] == read_rows(paths["eval_au"])[0]["gpt4"]
    # eval rows without a known task cannot get their question
    renamed = root / "bench.json"
    shutil.copy(paths["eval_au"], renamed)
    with pytest.raises(ValueError, match="task='au' or task='emotion'"):
        load_faba_instruct(renamed, root)


def test_int_and_list_labels_become_official_strings(tmp_path):
    write_image(tmp_path / "a.png", (10, 20, 30))
    np.save(tmp_path / "a.npy", np.zeros(4, np.float32))
    rows = [{"id": "x", "image": "a.png", "landmark": "a.npy", "gpt4": "Happy.", "label": 3},
            {"id": "y", "image": "a.png", "landmark": "a.npy", "gpt4": "AU1.", "label": [1, 2, 4]}]
    dataset = load_faba_instruct(rows, tmp_path, split="eval", task="emotion")
    assert dataset["label"] == ["3", "1, 2, 4"]


def test_every_problem_is_reported_at_once(faba, tmp_path):
    root, paths = faba
    good = read_rows(paths["train_au"])[0]
    np.save(tmp_path / "short.npy", np.zeros(10, np.float32))
    np.save(tmp_path / "nan.npy", np.full(136, np.nan, np.float32))
    rows = [
        good,
        {**good, "id": "no-image", "image": "missing/face.png"},
        {**good, "id": "no-npy", "landmark": "missing/face.npy"},
        {**good, "id": "both-missing", "image": "gone.png", "landmark": "gone.npy"},
        {**good, "id": "short-prior", "landmark": str(tmp_path / "short.npy")},
        {**good, "id": "nan-prior", "landmark": str(tmp_path / "nan.npy")},
        {**good, "id": "no-answer", "conversations": good["conversations"][:1]},
        {**good, "id": "two-images", "conversations": [
            {"from": "human", "value": "<image>\nWhat AUs? <image>"}, good["conversations"][1]]},
        {**good, "id": "bad-speaker", "conversations": [{"from": "robot", "value": "hi"}]},
        "not a row",
        {"id": "no-image-key", "landmark": good["landmark"], "conversations": good["conversations"]},
    ]
    with pytest.raises(FabaValidationError) as info:
        load_faba_instruct(rows, root, split="train", facial_prior_dim=136)
    problems = info.value.problems
    named = {name for name, _ in problems}
    assert named == {"#1 (no-image)", "#2 (no-npy)", "#3 (both-missing)", "#4 (short-prior)", "#5 (nan-prior)",
                     "#6 (no-answer)", "#7 (two-images)", "#8 (bad-speaker)", "#9", "#10 (no-image-key)"}
    by_row = {name: [m for n, m in problems if n == name] for name in named}
    assert len(by_row["#3 (both-missing)"]) == 2  # both files of the row, not only the first one
    assert "image not found" in by_row["#1 (no-image)"][0] and "facial prior file not found" in by_row["#2 (no-npy)"][0]
    assert "dimension 10, expected 136" in by_row["#4 (short-prior)"][0]
    assert "NaN" in by_row["#5 (nan-prior)"][0]
    assert "expected one <image>" in by_row["#7 (two-images)"][0]
    message = str(info.value)
    assert message.startswith("10 of 11 FABA-Instruct rows") and all(name in message for name in named)


def test_prior_dimension_defaults_to_the_usual_one(faba, tmp_path):
    root, paths = faba
    rows = read_rows(paths["train_au"])
    np.save(tmp_path / "odd.npy", np.zeros(212, np.float32))
    rows[2] = {**rows[2], "landmark": str(tmp_path / "odd.npy")}
    with pytest.raises(FabaValidationError, match="dimension 212, while most rows have 136"):
        load_faba_instruct(rows, root, split="train")


def test_skip_policy_drops_and_counts_invalid_rows(faba, caplog):
    root, paths = faba
    rows = read_rows(paths["train_au"])
    rows[1] = {**rows[1], "image": "nowhere.png"}
    rows[4] = {**rows[4], "landmark": "nowhere.npy"}
    with caplog.at_level(logging.WARNING, logger="transformers_emola.data"):
        dataset, report = load_faba_instruct(rows, root, split="train", on_invalid="skip", return_report=True)
    assert dataset["id"] == [rows[i]["id"] for i in (0, 2, 3, 5)]
    assert (report.num_rows, report.num_valid, report.num_skipped) == (6, 4, 2)
    assert report.skipped_ids == [f"#1 ({rows[1]['id']})", f"#4 ({rows[4]['id']})"]
    assert "2 invalid rows skipped" in dataset.info.description
    assert "Skipping 2 invalid FABA-Instruct rows" in caplog.text
    checked = validate_faba_instruct(rows, root, split="train")
    assert checked.num_skipped == 2 and len(checked.problems) == 2


def test_images_are_stored_as_paths_and_decoded_lazily(tmp_path):
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0))):
        write_image(tmp_path / f"{name}.png", colour)
        np.save(tmp_path / f"{name}.npy", np.ones(4, np.float32))
    rows = [{"id": n, "image": f"{n}.png", "landmark": f"{n}.npy", "conversations": [
        {"from": "human", "value": "What?\n<image>"}, {"from": "gpt", "value": "Red."}]} for n in ("a", "b")]
    dataset = load_faba_instruct(rows, tmp_path, split="train")
    stored = dataset.data.column("images").to_pylist()
    assert stored == [[{"bytes": None, "path": str(tmp_path / f"{n}.png")}] for n in ("a", "b")]
    write_image(tmp_path / "a.png", (0, 0, 255))  # changed after loading: a lazy dataset reads the new file
    assert dataset[0]["images"][0].getpixel((0, 0)) == (0, 0, 255)


def test_streaming_and_multiprocess_map_match_the_regular_dataset(faba):
    root, paths = faba
    regular = load_faba_instruct(paths["train_emotion"], root, split="train")
    streamed = load_faba_instruct(paths["train_emotion"], root, split="train", streaming=True)
    assert isinstance(streamed, IterableDataset)
    rows = list(streamed)
    assert [r["id"] for r in rows] == regular["id"]
    assert [r["messages"] for r in rows] == regular["messages"]
    assert np.allclose([r["facial_priors"] for r in rows], regular["facial_priors"])
    assert rows[0]["images"][0].size == (32, 32)
    sizes = regular.map(lambda row: {"width": row["images"][0].size[0]}, num_proc=2)
    assert sizes["width"] == [32] * len(regular)


class MeanColourPriors:
    """A stand-in landmark extractor: the mean RGB tiled to `dim`; fails on images named in `fail_on`."""

    def __init__(self, dim=6, fail_on=()):
        self.dim = dim
        self.fail_on = set(fail_on)
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        if any(image.filename.endswith(tuple(self.fail_on)) for image in images if self.fail_on):
            raise RuntimeError("no face found")
        return np.stack([np.resize(np.asarray(im, np.float32).mean((0, 1)) / 255, self.dim) for im in images])

    def to_dict(self):
        return {"backend": "mean-colour", "dim": self.dim}


def test_priors_extracted_on_the_fly(tmp_path):
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}
    for name, colour in colours.items():
        write_image(tmp_path / f"{name}.png", colour)
    rows = [{"id": n, "image": f"{n}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A face."}]} for n in colours]
    dataset = load_faba_instruct(rows, tmp_path, split="train", facial_prior_extractor=MeanColourPriors())
    expected = [np.resize(np.float32(c) / 255, 6) for c in colours.values()]
    np.testing.assert_allclose(dataset["facial_priors"], expected, rtol=1e-6)
    assert dataset.column_names[-1] == "facial_priors" and "_prior_error" not in dataset.column_names

    rows.append({"id": "d", "image": "missing.png", "conversations": rows[0]["conversations"]})
    failing = MeanColourPriors(fail_on=["b.png"])
    with pytest.raises(FabaValidationError) as info:
        load_faba_instruct(rows, tmp_path, split="train", facial_prior_extractor=failing)
    assert {name for name, _ in info.value.problems} == {"#1 (b)", "#3 (d)"}  # extraction and file problems
    assert "no face found" in str(info.value)
    kept = load_faba_instruct(rows, tmp_path, split="train", facial_prior_extractor=failing, on_invalid="skip")
    assert kept["id"] == ["a", "c"]
    with pytest.raises(FabaValidationError, match="prior for .*a.png: facial prior has dimension 6, expected 136"):
        load_faba_instruct(rows[:1], tmp_path, split="train", facial_prior_extractor=MeanColourPriors(),
                           facial_prior_dim=136)


def test_conversation_conversion_rules():
    messages, problems = conversations_to_messages([
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Look:\n<image>\nWhich AUs?"},
        {"from": "gpt", "value": "AU12."},
        {"from": "human", "value": "And the emotion?"},
        {"from": "gpt", "value": "Happiness."},
    ])
    assert problems == []
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Look:\n\nWhich AUs?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "AU12."}]},
        {"role": "user", "content": [{"type": "text", "text": "And the emotion?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Happiness."}]},
    ]
    _, problems = conversations_to_messages([{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}])
    assert problems and "alternate" in problems[0]
    _, problems = conversations_to_messages([{"from": "human", "value": "<image>"}, {"from": "gpt", "value": " "}])
    assert problems == ["a gpt turn has an empty answer"]


def test_annotation_folder_and_task_resolution(faba):
    root, paths = faba
    assert resolve_annotation_file(root, "eval", "emotion") == paths["eval_emotion"]
    dataset = load_faba_instruct(root, root, split="eval", task="emotion")
    assert dataset["id"] == [row["id"] for row in read_rows(paths["eval_emotion"])]
    assert [infer_task(n) for n in ("train_au_anno.json", "eval_emotion_anno.json", "faces.json")] == [
        "au", "emotion", None]
    with pytest.raises(FileNotFoundError, match="image_root"):
        load_faba_instruct(paths["train_au"], root / "nope")
    with pytest.raises(ValueError, match="on_invalid"):
        load_faba_instruct(paths["train_au"], root, on_invalid="ignore")
