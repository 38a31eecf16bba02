"""Facial affect analysis: structured output, `pipeline("facial-affect-analysis")` and `emola analyze`.

Generation is faked where exact fields are asserted: `generate` returns the token ids of a known description, so
the parsed AUs / emotion must come out exactly; wiring tests (batching, ordering) use the real tiny random model.
Landmarks come from the real dlib backend on a crop of `skimage.data.astronaut()` (offline, ~0.1 s an image).
"""

import csv
import json
import warnings

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from transformers import pipeline
from transformers.pipelines import ImageTextToTextPipeline

import transformers_emola  # noqa: F401  (registers EmoLA with the Auto classes)
from transformers_emola import cli
from transformers_emola.analysis import AU_COLUMNS, analyze_images, draw_analysis, results_to_csv_rows
from transformers_emola.facial_prior import FaceNotFoundError, FacialPriorExtractor, find_images, normalize_landmarks
from transformers_emola.metrics.parsing import parse_affect
from transformers_emola.modeling_emola import EmolaForConditionalGeneration
from transformers_emola.pipeline_facial_affect import FacialAffectAnalysisPipeline, build_result, register_pipeline
from transformers_emola.faba import AU_QUESTION, EMOTION_QUESTION
from transformers_emola import build_tiny_emola

AU_TEXT = ("The face shows AU06 (Cheek Raiser) and AU12 - Lip Corner Puller: the corners of the mouth are pulled up. "
           "AU4 is not present. There is no AU9, and AU25 is active.")
EMOTION_TEXT = "The person looks happy, with a broad smile. There is no sign of anger."
AU_SENTENCE = "The face shows AU06 (Cheek Raiser) and AU12 - Lip Corner Puller: the corners of the mouth are pulled up."
EXPECTED_AUS = [
    {"number": 6, "name": "Cheek Raiser", "sentence": AU_SENTENCE},
    {"number": 12, "name": "Lip Corner Puller", "sentence": AU_SENTENCE},
    {"number": 25, "name": "Lips Part", "sentence": "There is no AU9, and AU25 is active."},
]

register_pipeline()


def make_fake_generate(tokenizer, calls=None):
    """A `generate` that answers the AU question with AU_TEXT and the emotion question with EMOTION_TEXT."""
    answers = {question: tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
               for question, text in ((AU_QUESTION, AU_TEXT), (EMOTION_QUESTION, EMOTION_TEXT))}

    def generate(*args, input_ids=None, facial_priors=None, **kwargs):
        if calls is not None:
            calls.append({"prompts": tokenizer.batch_decode(input_ids), "facial_priors": facial_priors})
        rows = []
        for prompt in tokenizer.batch_decode(input_ids, skip_special_tokens=True):
            rows.append(next(ids for question, ids in answers.items() if question in prompt))
        width = max(map(len, rows))
        tail = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
        return torch.cat([input_ids, tail], dim=1)

    return generate


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_emola(texts=[AU_TEXT, EMOTION_TEXT])


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    model, processor = tiny
    path = tmp_path_factory.mktemp("tiny-emola")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Two real faces (astronaut crop, mirrored copy in a sub-folder), a face-less image, a corrupt file, a note."""
    root = tmp_path_factory.mktemp("faces")
    face = skimage.data.astronaut()[0:224, 100:324]
    (root / "sub").mkdir()
    Image.fromarray(face).save(root / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(face[:, ::-1])).save(root / "sub" / "mirrored.png")
    Image.new("RGB", (224, 224), (128, 128, 128)).save(root / "grey.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def dlib_extractor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dlib's non-commercial licence note, tested in test_facial_prior.py
        return FacialPriorExtractor("dlib", on_missing_face="error")


# ---- structured output -------------------------------------------------------------------------------------------
def test_parse_affect_reads_negations_and_zero_padded_aus():
    analysis = parse_affect(AU_TEXT, task="au")
    assert [(m.number, m.name, m.sentence) for m in analysis.aus] == [
        (au["number"], au["name"], au["sentence"]) for au in EXPECTED_AUS
    ]
    assert analysis.negated_aus == [4, 9] and not analysis.unparsed
    emotion = parse_affect(EMOTION_TEXT, task="emotion")
    assert emotion.emotion.name == "happiness" and emotion.negated_emotion_keywords == ["anger"]
    assert parse_affect("A calm face, nothing to report", task="au").unparsed


def test_build_result_is_the_structured_output():
    result = build_result({"au": AU_TEXT, "emotion": EMOTION_TEXT})
    assert result == {
        "aus": EXPECTED_AUS,
        "emotion": "happiness",
        "au_description": AU_TEXT,
        "emotion_description": EMOTION_TEXT,
        "face_box": None,
        "face_score": None,
        "landmarks": None,
        "flags": {"au_unparsed": False, "emotion_unparsed": False, "negated_aus": [4, 9],
                  "negated_emotion_keywords": ["anger"]},
    }
    only_emotion = build_result({"emotion": "No clear expression"})
    assert only_emotion["aus"] == [] and only_emotion["emotion"] is None and only_emotion["au_description"] is None
    assert only_emotion["flags"]["emotion_unparsed"] is True and only_emotion["flags"]["au_unparsed"] is None


# ---- pipeline ----------------------------------------------------------------------------------------------------
def test_pipeline_is_registered_and_image_text_to_text_is_unchanged(checkpoint):
    analyzer = pipeline("facial-affect-analysis", model=str(checkpoint))
    assert isinstance(analyzer, FacialAffectAnalysisPipeline)
    assert isinstance(analyzer.model, EmolaForConditionalGeneration)
    chat = pipeline("image-text-to-text", model=str(checkpoint))
    assert type(chat) is ImageTextToTextPipeline
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (28, 28))},
                                             {"type": "text", "text": AU_QUESTION}]}]
    with pytest.raises(ValueError, match="facial_priors"):  # the chat pipeline still goes through EmolaProcessor
        chat(text=messages, max_new_tokens=2)


def test_pipeline_structured_fields_from_known_generation(tiny, monkeypatch):
    model, processor = tiny
    calls = []
    monkeypatch.setattr(model, "generate", make_fake_generate(processor.tokenizer, calls))
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    priors = np.random.default_rng(0).uniform(-1, 1, (3, 136)).astype(np.float32)
    images = [Image.new("RGB", (30 + 4 * i, 30), (60 * i, 90, 30)) for i in range(3)]
    results = analyzer(images, facial_priors=priors, batch_size=2)
    assert len(results) == 3
    for result in results:
        assert result == build_result({"au": AU_TEXT, "emotion": EMOTION_TEXT})
    # One generate call per batch of 2 images, each image asked both questions, its own prior on both rows.
    assert [len(call["prompts"]) for call in calls] == [4, 2]
    assert [AU_QUESTION in p for p in calls[0]["prompts"]] == [True, False, True, False]
    torch.testing.assert_close(calls[0]["facial_priors"], torch.from_numpy(priors[[0, 0, 1, 1]]))
    torch.testing.assert_close(calls[1]["facial_priors"], torch.from_numpy(priors[[2, 2]]))

    calls.clear()
    single = analyzer(images[0], facial_priors=priors[0], tasks="emotion")
    assert single["emotion"] == "happiness" and single["aus"] == [] and single["au_description"] is None
    assert len(calls[0]["prompts"]) == 1 and EMOTION_QUESTION in calls[0]["prompts"][0]

    calls.clear()
    custom = analyzer(images[0], facial_priors=priors[:1], tasks="au", au_question="Which AUs? " + AU_QUESTION)
    assert custom["aus"] == EXPECTED_AUS and "Which AUs?" in calls[0]["prompts"][0]


def test_pipeline_batched_equals_one_by_one_with_the_real_model(tiny):
    model, processor = tiny
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    priors = np.random.default_rng(1).uniform(-1, 1, (3, 136)).astype(np.float32)
    images = [Image.new("RGB", (28 + 6 * i, 28), (70 * i, 20, 200)) for i in range(3)]
    batched = analyzer(images, facial_priors=priors, batch_size=3, max_new_tokens=5)
    single = [analyzer(image, facial_priors=prior, max_new_tokens=5) for image, prior in zip(images, priors)]
    assert batched == single
    assert all(r["au_description"] and r["emotion_description"] for r in batched)


def test_pipeline_landmarks_are_the_ones_the_model_saw(tiny, faces, dlib_extractor, monkeypatch):
    model, _ = tiny
    _, processor = build_tiny_emola(texts=[AU_TEXT, EMOTION_TEXT])  # own processor: the extractor is set on it
    processor.set_facial_prior_extractor(dlib_extractor)
    calls = []
    monkeypatch.setattr(model, "generate", make_fake_generate(processor.tokenizer, calls))
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    path = faces / "astronaut.png"
    result = analyzer(f"file://{path}", tasks="au")
    reference = dlib_extractor.detect([str(path)])[0]
    assert result["face_box"] == list(reference.box) and result["face_score"] == pytest.approx(reference.score)
    np.testing.assert_allclose(result["landmarks"], reference.landmarks, atol=0.01)
    assert np.asarray(result["landmarks"]).shape == (68, 2)
    seen = calls[0]["facial_priors"].numpy()[0]
    np.testing.assert_allclose(seen, normalize_landmarks(np.asarray(result["landmarks"])), atol=1e-6)
    assert result["aus"] == EXPECTED_AUS
    with pytest.raises(FaceNotFoundError, match="No face found"):
        analyzer(str(faces / "grey.png"))


def test_pipeline_errors_say_what_to_do(tiny):
    model, processor = tiny
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    image = Image.new("RGB", (28, 28))
    with pytest.raises(ValueError, match="no facial-prior extractor.*facial_priors"):
        analyzer(image)
    with pytest.raises(ValueError, match="local files only"):
        analyzer("https://example.com/face.jpg", facial_priors=np.zeros(136))
    with pytest.raises(ValueError, match="dimension 10, expected 136 .*'face_alignment' priors"):
        analyzer(image, facial_priors=np.zeros((1, 10)))
    with pytest.raises(ValueError, match="one row per image"):
        analyzer([image, image], facial_priors=np.zeros((3, 136)))
    with pytest.raises(ValueError, match="tasks must be"):
        analyzer(image, facial_priors=np.zeros(136), tasks="valence")
    with pytest.raises(TypeError, match="unexpected parameter"):
        analyzer(image, facial_priors=np.zeros(136), task="au")


# ---- batch analysis / CLI ----------------------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_find_images_walks_folders_and_rejects_missing_paths(faces):
    found = find_images([faces, faces / "astronaut.png"])
    assert [p.relative_to(faces).as_posix() for p in found] == ["astronaut.png", "broken.jpg", "grey.png",
                                                                "sub/mirrored.png"]
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        find_images([faces, faces / "nowhere.png"])


def test_cli_analyze_end_to_end_with_failures_and_resume(checkpoint, faces, tmp_path, monkeypatch, capsys):
    tokenizer = build_tiny_emola(texts=[AU_TEXT, EMOTION_TEXT])[1].tokenizer
    calls = []
    monkeypatch.setattr(EmolaForConditionalGeneration, "generate",
                        lambda self, *a, **k: make_fake_generate(tokenizer, calls)(*a, **k))
    out = tmp_path / "out"
    argv = ["analyze", str(faces), "--model", str(checkpoint), "--out", str(out), "--backend", "dlib",
            "--batch-size", "2", "--visualize", "--no-progress", "--device", "cpu"]
    assert cli.main(argv) == 1

    failures = json.loads((out / "failures.json").read_text())
    assert [(f["image"], f["status"]) for f in failures] == [
        (str(faces / "broken.jpg"), "unreadable"), (str(faces / "grey.png"), "no_face")]
    assert failures[1]["error"] == f"No face found in {faces / 'grey.png'} (backend 'dlib')"
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "grey.png [no_face]" in err
    assert "--on-missing-face full_image" in err and "on_missing_face=" not in err  # the fix in CLI terms
    rows = {row["image"]: row for row in read_csv(out / "results.csv")}
    assert set(rows) == {str(faces / name) for name in ("astronaut.png", "broken.jpg", "grey.png", "sub/mirrored.png")}
    for name in ("astronaut.png", "sub/mirrored.png"):
        row = rows[str(faces / name)]
        assert row["status"] == "ok" and row["emotion"] == "happiness"
        assert {au for au in AU_COLUMNS if row[au] == "1"} == {"AU6", "AU12", "AU25"}
        assert all(row[au] == "0" for au in AU_COLUMNS if au not in ("AU6", "AU12", "AU25"))
        assert row["negated_aus"] == "4 9" and row["au_description"] == AU_TEXT
        assert row["visualization"] == "visualizations/" + name  # named after the image: no astronaut.png.png
        drawn = Image.open(out / row["visualization"])
        assert drawn.height == 224 and drawn.width > 224
    reference = FacialPriorExtractor("dlib").detect([str(faces / "astronaut.png")])[0]
    astronaut = rows[str(faces / "astronaut.png")]
    assert [float(astronaut[k]) for k in ("face_x0", "face_y0", "face_x1", "face_y1")] == list(reference.box)
    assert rows[str(faces / "grey.png")]["status"] == "no_face" and rows[str(faces / "grey.png")]["AU6"] == ""
    # Batches [astronaut, broken] and [grey, mirrored]: one face each, asked both questions.
    assert [len(call["prompts"]) for call in calls] == [2, 2]

    # Second run: the two analysed images are skipped, the two failures are retried (and fail again).
    calls.clear()
    assert cli.main(argv) == 1
    assert calls == []
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6 and [json.loads(line)["status"] for line in lines[4:]] == ["unreadable", "no_face"]
    assert len(read_csv(out / "results.csv")) == 4

    # Fix the broken file; leave the face-less image out: everything asked for now has a result.
    Image.open(faces / "astronaut.png").save(faces / "broken.jpg", format="JPEG")
    try:
        inputs = [str(faces / "astronaut.png"), str(faces / "broken.jpg"), str(faces / "sub")]
        assert cli.main(["analyze", *inputs, *argv[2:]]) == 0
    finally:
        (faces / "broken.jpg").write_bytes(b"this is not a JPEG")
    assert len(calls) == 1 and len(calls[0]["prompts"]) == 2
    assert json.loads((out / "failures.json").read_text()) == []
    rows = {row["image"]: row for row in read_csv(out / "results.csv")}
    assert rows[str(faces / "broken.jpg")]["status"] == "ok" and rows[str(faces / "grey.png")]["status"] == "no_face"


def test_cli_reports_bad_arguments(faces, tmp_path, capsys):
    model, processor = build_tiny_emola(facial_prior_dim=212, facial_prior_backend="insightface_2d106")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    base = ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    assert cli.main(["analyze", str(faces / "missing.png"), *base]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert cli.main(["analyze", str(faces), *base, "--backend", "dlib"]) == 2  # 136-d landmarks, 212-d model
    assert "'dlib' backend gives 136-d priors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_analyze_images_asks_only_the_requested_task_and_redoes_rows_missing_it(tiny, faces, dlib_extractor,
                                                                                 tmp_path, monkeypatch):
    model, _ = tiny
    _, processor = build_tiny_emola(texts=[AU_TEXT, EMOTION_TEXT])
    processor.set_facial_prior_extractor(dlib_extractor)
    calls = []
    monkeypatch.setattr(model, "generate", make_fake_generate(processor.tokenizer, calls))
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    report = analyze_images(analyzer, [faces / "astronaut.png"], tmp_path, tasks="emotion", progress=False)
    assert report.ok and report.analyzed == 1 and len(calls[0]["prompts"]) == 1
    row = read_csv(tmp_path / "results.csv")[0]
    assert row["emotion"] == "happiness" and all(row[au] == "" for au in AU_COLUMNS)
    report = analyze_images(analyzer, [faces / "astronaut.png"], tmp_path, tasks="both", progress=False)
    assert report.analyzed == 1 and report.skipped == 0 and len(calls[1]["prompts"]) == 2
    row = read_csv(tmp_path / "results.csv")[0]
    assert row["AU12"] == "1" and row["emotion"] == "happiness"


def test_csv_leaves_au_cells_blank_when_the_answer_names_no_au():
    parsed = {"image": "a.png", "status": "ok", "tasks": ["au", "emotion"], **build_result({"au": AU_TEXT})}
    unparsed = {"image": "b.png", "status": "ok", "tasks": ["au", "emotion"],
                **build_result({"au": "The face looks relaxed and calm.", "emotion": EMOTION_TEXT})}
    not_asked = {"image": "c.png", "status": "ok", "tasks": ["emotion"], **build_result({"emotion": EMOTION_TEXT})}
    rows = {row["image"]: row for row in results_to_csv_rows([parsed, unparsed, not_asked])}
    assert [rows["a.png"][au] for au in ("AU6", "AU12", "AU4", "AU1")] == [1, 1, 0, 0]  # 0: read as absent
    assert rows["b.png"]["au_unparsed"] == 1 and all(rows["b.png"][au] == "" for au in AU_COLUMNS)
    assert rows["b.png"]["emotion"] == "happiness"
    assert all(rows["c.png"][au] == "" for au in AU_COLUMNS)


def test_draw_analysis_draws_box_landmarks_and_labels():
    image = np.zeros((64, 64, 3), np.uint8)
    result = {"face_box": [10.0, 10.0, 50.0, 50.0], "face_score": None, "landmarks": [[30.0, 30.0]],
              "aus": EXPECTED_AUS, "emotion": "happiness", "au_description": AU_TEXT, "emotion_description": "x"}
    drawn = draw_analysis(image, result)
    assert drawn.width > 64 and drawn.height >= 64  # a panel for 5 label lines: taller than this tiny image
    assert drawn.getpixel((10, 30)) == (0, 255, 0) and drawn.getpixel((30, 30)) == (255, 0, 0)
    assert drawn.getpixel((5, 5)) == (0, 0, 0)  # the image itself is unchanged outside the drawing
    panel = np.asarray(drawn)[:, 64:]
    assert (panel < 128).all(axis=-1).any()  # dark label text on the white panel
