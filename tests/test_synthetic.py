"""The synthetic FABA generator: AU-driven geometry, image/landmark agreement, dataset layout, parsable texts."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from transformers_emola.cli import main as emola_main
from transformers_emola.facial_prior import normalize_landmarks
from transformers_emola.metrics import compute_rege, parse_au_label, parse_aus, parse_emotion
from transformers_emola.synthetic import (
    AU_QUESTIONS,
    EMOTION_PROTOTYPES,
    EMOTION_QUESTIONS,
    EMOTIONS,
    RENDERED_AUS,
    SCORED_AUS,
    FaceAppearance,
    active_aus,
    au_label,
    describe_aus,
    describe_emotion,
    render_face,
    sample_appearance,
    sample_aus,
    sample_face,
    synthetic_faba_sample,
    write_synthetic_faba,
)

# Substrings the official emotion parser treats as negations (a sentence containing one is dropped).
OFFICIAL_NEGATIONS = ["not", "no", "isn't ", "nothing", "cannot", "won't", "shouldn't", "neither", "nor"]
POSE_SEEDS = (0, 1, 2, 3)  # random identities with rotation, scale and offset


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def face_frame(reference: np.ndarray):
    """Project pixel landmarks into the reference face's frame: x along the eyes, y down, unit = eye distance."""
    right_eye, left_eye = reference[36:42].mean(axis=0), reference[42:48].mean(axis=0)
    axis = left_eye - right_eye
    distance = float(np.linalg.norm(axis))
    x_hat = axis / distance
    y_hat = np.array([-x_hat[1], x_hat[0]])
    return lambda points: (np.asarray(points, np.float64) - right_eye) @ np.stack([x_hat, y_hat]).T / distance


def eye_aspect_ratio(landmarks: np.ndarray) -> float:
    ratios = []
    for corner_a, up_a, up_b, corner_b, low_b, low_a in (range(36, 42), range(42, 48)):
        vertical = np.linalg.norm(landmarks[up_a] - landmarks[low_a])
        vertical += np.linalg.norm(landmarks[up_b] - landmarks[low_b])
        ratios.append(vertical / (2 * np.linalg.norm(landmarks[corner_a] - landmarks[corner_b])))
    return float(np.mean(ratios))


def expression_pair(aus: dict[int, float], seed: int):
    """Landmarks of the same person and pose, neutral and with `aus`, in the neutral face's frame."""
    person = sample_appearance(seed)
    neutral = render_face({}, appearance=person, size=96).landmarks
    moved = render_face(aus, appearance=person, size=96).landmarks
    frame = face_frame(neutral)
    return frame(neutral), frame(moved), neutral, moved


# ---------------------------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------------------------


def test_render_is_deterministic_per_seed():
    first = render_face({1: 0.7, 12: 1.0, 25: 0.5}, seed=7, size=64)
    again = render_face({1: 0.7, 12: 1.0, 25: 0.5}, seed=7, size=64)
    other = render_face({1: 0.7, 12: 1.0, 25: 0.5}, seed=8, size=64)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.array_equal(first.landmarks, again.landmarks)
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert first.landmarks.shape == (68, 2) and first.landmarks.dtype == np.float32
    assert first.image.size == (64, 64) and first.image.mode == "RGB"
    a, b = sample_face(5, task="emotion", size=48), sample_face(5, task="emotion", size=48)
    assert a.aus == b.aus and a.emotion == b.emotion
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_expression_does_not_change_identity_or_pose():
    # A mouth AU leaves brows, eyes and nose exactly where they were: the AU is the only difference.
    _, _, neutral, smiling = expression_pair({12: 1.0}, seed=4)
    assert np.array_equal(neutral[17:48], smiling[17:48])
    assert not np.allclose(neutral[48:68], smiling[48:68])


@pytest.mark.parametrize("seed", POSE_SEEDS)
def test_au12_raises_and_au15_lowers_mouth_corners(seed):
    neutral, smile, *_ = expression_pair({12: 1.0}, seed)
    _, frown, *_ = expression_pair({15: 1.0}, seed)
    for corner in (48, 54):
        assert smile[corner, 1] - neutral[corner, 1] < -0.08  # up, in eye distances
        assert frown[corner, 1] - neutral[corner, 1] > 0.05
    # relative to the lip centre too: a smile curves the mouth up, a frown down
    assert (smile[[48, 54], 1] - smile[62, 1]).max() < (neutral[[48, 54], 1] - neutral[62, 1]).min() - 0.05
    assert (frown[[48, 54], 1] - frown[62, 1]).min() > (neutral[[48, 54], 1] - neutral[62, 1]).max() + 0.03
    assert np.linalg.norm(smile[54] - smile[48]) > np.linalg.norm(neutral[54] - neutral[48])  # wider


@pytest.mark.parametrize("seed", POSE_SEEDS)
def test_eyelid_aus_change_eye_aspect_ratio(seed):
    person = sample_appearance(seed)
    ear = {
        name: eye_aspect_ratio(render_face(aus, appearance=person, size=64).landmarks)
        for name, aus in {"neutral": {}, "43": {43: 1.0}, "5": {5: 1.0}, "7": {7: 1.0}, "6": {6: 1.0}}.items()
    }
    assert ear["neutral"] > 0.2
    assert ear["43"] < 1e-3  # eyes closed
    assert ear["5"] > ear["neutral"] + 0.05  # lids raised
    assert ear["7"] < ear["neutral"] - 0.05  # lids tightened
    assert ear["6"] < ear["neutral"] - 0.02  # cheeks push the lower lids up


@pytest.mark.parametrize("seed", POSE_SEEDS)
def test_au25_parts_lips_and_au26_opens_the_jaw(seed):
    neutral, parted, *_ = expression_pair({25: 1.0}, seed)
    _, dropped, *_ = expression_pair({25: 1.0, 26: 1.0}, seed)
    gap = lambda points: points[66, 1] - points[62, 1]  # noqa: E731
    assert gap(neutral) == pytest.approx(0.0, abs=1e-5)
    assert 0.03 < gap(parted) < gap(dropped)
    assert gap(dropped) > 0.15
    assert dropped[8, 1] - neutral[8, 1] > 0.15  # the chin goes down with the jaw
    assert parted[8, 1] == pytest.approx(neutral[8, 1], abs=1e-5)  # lips part without a jaw drop


@pytest.mark.parametrize("seed", POSE_SEEDS)
def test_brow_aus(seed):
    neutral, inner, *_ = expression_pair({1: 1.0}, seed)
    _, outer, *_ = expression_pair({2: 1.0}, seed)
    _, lowered, *_ = expression_pair({4: 1.0}, seed)
    rise = lambda points, idx: neutral[idx, 1] - points[idx, 1]  # noqa: E731
    inner_ends, outer_ends = [21, 22], [17, 26]
    assert rise(inner, inner_ends).min() > 0.12 and rise(inner, outer_ends).max() < 0.03
    assert rise(outer, outer_ends).min() > 0.1 and rise(outer, inner_ends).max() < 0.03
    assert rise(lowered, range(17, 27)).max() < -0.04  # every brow point goes down
    assert lowered[22, 0] - lowered[21, 0] < neutral[22, 0] - neutral[21, 0] - 0.1  # drawn together


@pytest.mark.parametrize("seed", POSE_SEEDS)
def test_lip_and_chin_aus(seed):
    neutral, chin, *_ = expression_pair({17: 1.0}, seed)
    _, upper, *_ = expression_pair({10: 1.0}, seed)
    _, pressed, *_ = expression_pair({24: 1.0}, seed)
    assert neutral[8, 1] - chin[8, 1] > 0.03 and neutral[57, 1] - chin[57, 1] > 0.03
    assert neutral[51, 1] - upper[51, 1] > 0.05
    thickness = lambda points: points[57, 1] - points[51, 1]  # noqa: E731
    assert thickness(pressed) < 0.7 * thickness(neutral)


def test_landmarks_lie_inside_the_image():
    for seed in range(40):
        face = sample_face(seed, task="au", size=48)
        assert face.landmarks.min() >= 0 and face.landmarks.max() < 48, seed
        prior = face.facial_prior
        assert prior.shape == (136,) and prior.dtype == np.float32 and np.abs(prior).max() <= 1.0


def test_image_is_drawn_from_the_landmarks():
    size = 160
    closed = render_face({}, size=size)  # canonical face: known colours, no noise
    opened = render_face({25: 1.0, 26: 1.0}, size=size)
    pixels_open, pixels_closed = np.asarray(opened.image).astype(int), np.asarray(closed.image).astype(int)
    x, y = np.round((opened.landmarks[62] + opened.landmarks[66]) / 2).astype(int)
    assert pixels_open[y, x].max() < 70  # the open mouth is dark at its centre ...
    assert pixels_closed[y, x, 0] > 150  # ... where the closed mouth shows the lower lip
    # skin between the eyes, background in the corner
    look = FaceAppearance()
    bx, by = np.round((closed.landmarks[39] + closed.landmarks[42]) / 2).astype(int)
    assert tuple(pixels_closed[by, bx]) == look.skin
    assert tuple(pixels_closed[2, 2]) != look.skin
    # open eyes show white sclera inside the eye contour, closed eyes show none
    shut = np.asarray(render_face({43: 1.0}, size=size).image).astype(int)

    def sclera_pixels(pixels, landmarks):
        x0, y0 = np.floor(landmarks[36:48].min(axis=0)).astype(int)
        x1, y1 = np.ceil(landmarks[36:48].max(axis=0)).astype(int)
        box = pixels[y0 : y1 + 1, x0 : x1 + 1]
        return int((box.min(axis=-1) > 215).sum())

    assert sclera_pixels(pixels_closed, closed.landmarks) > 20
    assert sclera_pixels(shut, closed.landmarks) == 0


def test_prior_linearly_predicts_emotion():
    """The 136-d prior alone separates the 7 emotions (a ridge probe on held-out faces), despite identity,
    pose and scale variation: the landmark channel carries the expression, as EmoLA's facial prior should."""
    samples = [synthetic_faba_sample(i, task="emotion", seed=0, image_size=32) for i in range(490)]
    features = np.stack([s.face.facial_prior for s in samples]).astype(np.float64)
    features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    labels = np.array([EMOTIONS.index(s.label) for s in samples])
    train, test = slice(0, 350), slice(350, None)
    targets = np.eye(len(EMOTIONS))[labels[train]]
    weights = np.linalg.solve(features[train].T @ features[train] + 1e-2 * np.eye(137), features[train].T @ targets)
    accuracy = float(((features[test] @ weights).argmax(axis=1) == labels[test]).mean())
    assert accuracy > 0.9
    # control: the same probe on shuffled labels stays near chance (1/7)
    shuffled = np.random.default_rng(0).permutation(labels)
    targets = np.eye(len(EMOTIONS))[shuffled[train]]
    weights = np.linalg.solve(features[train].T @ features[train] + 1e-2 * np.eye(137), features[train].T @ targets)
    assert float(((features[test] @ weights).argmax(axis=1) == shuffled[test]).mean()) < 0.35


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="AU 3"):
        render_face({3: 1.0})
    with pytest.raises(ValueError, match="AU12"):
        render_face({12: 1.5})
    with pytest.raises(ValueError, match="size"):
        render_face({}, size=8)
    with pytest.raises(ValueError, match="emotion"):
        render_face({}, emotion="Happy")
    with pytest.raises(ValueError, match="task"):
        sample_face(0, task="valence")
    with pytest.raises(ValueError, match="tasks"):
        write_synthetic_faba("/nonexistent", tasks=("au", "pose"))
    with pytest.raises(ValueError, match="num_train"):
        write_synthetic_faba("/nonexistent", num_train=-1)


# ---------------------------------------------------------------------------------------------------------------
# Expressions and descriptions
# ---------------------------------------------------------------------------------------------------------------


def test_au_sampling_covers_every_scored_au():
    rng = np.random.default_rng(0)
    draws = [sample_aus(rng) for _ in range(600)]
    counts = {au: sum(au in active_aus(aus) for aus, _ in draws) for au in SCORED_AUS}
    assert min(counts.values()) >= 20, counts
    assert all(set(aus) <= set(RENDERED_AUS) for aus, _ in draws)
    assert all(25 in aus for aus, _ in draws if 26 in aus)  # a dropped jaw always parts the lips
    for emotion, prototype in EMOTION_PROTOTYPES.items():
        aus, name = sample_aus(rng, emotion)
        assert name == emotion and set(prototype) <= set(active_aus(aus))


def test_au_descriptions_name_exactly_the_active_aus():
    rng = np.random.default_rng(1)
    for _ in range(300):
        aus, emotion = sample_aus(rng)
        text = describe_aus(aus, rng, emotion=emotion)
        mentioned = [int(n) for n in re.findall(r"AU(\d+)", text)]
        assert sorted(set(mentioned)) == active_aus(aus) and len(mentioned) == len(set(mentioned))
        assert not re.search(r"AU0\d", text)
        assert 20 <= len(text.split()) <= 130
    assert describe_aus({12: 0.9, 6: 0.7}, rng=3) == describe_aus({12: 0.9, 6: 0.7}, rng=3)
    assert "AU12 - Lip Corner Puller" in describe_aus({12: 0.9}, rng=0) or "AU12 (Lip Corner Puller)" in describe_aus(
        {12: 0.9}, rng=0
    )


def test_emotion_descriptions_are_safe_for_the_official_parser():
    rng = np.random.default_rng(2)
    keywords = {"Happiness": "happiness", "Sadness": "sadness", "Surprise": "surprise", "Anger": "anger",
                "Neutral": "neutral", "Disgust": "disgust", "Fear": "fear"}
    for _ in range(60):
        for emotion in EMOTIONS:
            aus, _ = sample_aus(rng, emotion)
            text = describe_emotion(emotion, aus, rng)
            assert not any(neg in text.lower() for neg in OFFICIAL_NEGATIONS), text
            first_sentence = re.match(r"^(.*?)[.!?]", text).group(1).lower()
            assert keywords[emotion] in re.findall(r"\b\w+\b", first_sentence)
            assert 15 <= len(text.split()) <= 50
            assert "AU" not in text


def test_references_are_parsed_back_in_both_modes():
    rng = np.random.default_rng(3)
    for mode in ("paper", "strict"):
        for _ in range(200):
            aus, emotion = sample_aus(rng)
            assert sorted(parse_aus(describe_aus(aus, rng, emotion=emotion), mode)) == active_aus(aus)
        for emotion in EMOTIONS:
            for _ in range(30):
                aus, _ = sample_aus(rng, emotion)
                assert parse_emotion(describe_emotion(emotion, aus, rng), mode).index == EMOTIONS.index(emotion)


# ---------------------------------------------------------------------------------------------------------------
# Dataset writer
# ---------------------------------------------------------------------------------------------------------------

SEED, NUM_TRAIN, NUM_EVAL, SIZE = 11, 9, 7, 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    written = write_synthetic_faba(root, num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=SEED, image_size=SIZE)
    return root, written


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_dataset_has_the_official_layout(dataset):
    root, written = dataset
    for split in ("train", "eval"):
        for task in ("au", "emotion"):
            assert written[f"{split}_{task}"] == root / "FABAInstruct" / split / f"{split}_{task}_anno.json"
    for task, questions in (("au", AU_QUESTIONS), ("emotion", EMOTION_QUESTIONS)):
        train = load(written[f"train_{task}"])
        assert len(train) == NUM_TRAIN
        for index, row in enumerate(train):
            assert set(row) == {"source", "id", "image", "conversations", "landmark"}
            assert row["source"] == "Synthetic" and row["id"] == f"Synthetic/{task}/{index:06d}"
            assert row["image"] == f"FABAInstruct/train/images/{row['id']}.png"
            assert row["landmark"] == f"FABAInstruct/train/landmarks/{row['id']}.npy"
            human, gpt = row["conversations"]
            assert human["from"] == "human" and gpt["from"] == "gpt"
            question, placeholder = human["value"].split("\n")
            assert question in questions and placeholder == "<image>"
        evaluation = load(written[f"eval_{task}"])
        assert len(evaluation) == NUM_EVAL
        for row in evaluation:
            assert set(row) == {"id", "image", "landmark", "gpt4", "label"}
            assert row["image"].startswith("FABAInstruct/eval/images/Synthetic/")


def test_dataset_files_match_the_renderer(dataset):
    root, written = dataset
    for split, count in (("train", NUM_TRAIN), ("eval", NUM_EVAL)):
        for task in ("au", "emotion"):
            rows = load(written[f"{split}_{task}"])
            for index in range(count):
                sample = synthetic_faba_sample(index, task, split, seed=SEED, image_size=SIZE)
                row = rows[index]
                assert row == sample.to_record()
                with Image.open(root / row["image"]) as image:
                    assert image.format == "PNG" and image.size == (SIZE, SIZE)
                    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(sample.face.image))
                prior = np.load(root / row["landmark"])
                assert prior.shape == (136,) and prior.dtype == np.float32
                assert np.abs(prior).max() <= 1.0
                assert np.array_equal(prior, normalize_landmarks(sample.face.landmarks))


def test_dataset_labels(dataset):
    _, written = dataset
    for row in load(written["eval_au"]):
        assert re.fullmatch(r"(\d+(, \d+)*)?", row["label"])
        numbers = [int(n) for n in row["label"].split(", ")] if row["label"] else []
        assert numbers == sorted(numbers)
        assert sorted({int(n) for n in re.findall(r"AU(\d+)", row["gpt4"])}) == numbers
    emotions = [row["label"] for row in load(written["eval_emotion"])]
    assert sorted(emotions) == sorted(EMOTIONS)  # 7 eval samples: every class exactly once
    for row in load(written["train_au"]):
        index = int(row["id"].rsplit("/", 1)[1])
        face = synthetic_faba_sample(index, "au", "train", seed=SEED, image_size=SIZE).face
        mentioned = {int(n) for n in re.findall(r"AU(\d+)", row["conversations"][1]["value"])}
        assert sorted(mentioned) == active_aus(face.aus)
        assert au_label(face.aus) == ", ".join(map(str, sorted(mentioned)))


def test_dataset_is_byte_identical_per_seed(dataset, tmp_path):
    root, written = dataset
    again = write_synthetic_faba(tmp_path / "a", num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=SEED, image_size=SIZE)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for relative in files:
        assert (root / relative).read_bytes() == (tmp_path / "a" / relative).read_bytes(), relative
    # a smaller dataset is a prefix of the larger one; another seed differs
    small = write_synthetic_faba(tmp_path / "b", num_train=3, num_eval=0, seed=SEED, image_size=SIZE, tasks=["au"])
    assert load(small["train_au"]) == load(written["train_au"])[:3]
    assert "train_emotion" not in small and load(small["eval_au"]) == []
    other = write_synthetic_faba(tmp_path / "c", num_train=3, num_eval=0, seed=SEED + 1, image_size=SIZE, tasks=["au"])
    assert load(other["train_au"]) != load(small["train_au"])


def test_references_score_perfectly_with_rege(dataset):
    _, written = dataset
    for task in ("au", "emotion"):
        rows = load(written[f"eval_{task}"])
        references, labels = [row["gpt4"] for row in rows], [row["label"] for row in rows]
        for mode in ("paper", "strict"):
            result = compute_rege(references, references, labels, task=task, mode=mode)
            assert result["s_re"] == 100.0 and result["s_ge"] == pytest.approx(100.0)
            for row in rows:
                if task == "au":
                    assert parse_aus(row["gpt4"], mode) == parse_au_label(row["label"], mode)
                else:
                    assert parse_emotion(row["gpt4"], mode).index == EMOTIONS.index(row["label"])


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "data"
    code = emola_main(
        ["synth", "--out", str(out), "--num-train", "2", "--num-eval", "1", "--seed", "3", "--image-size", "32",
         "--tasks", "emotion"]
    )
    assert code == 0
    train = load(out / "FABAInstruct" / "train" / "train_emotion_anno.json")
    assert [row["id"] for row in train] == ["Synthetic/emotion/000000", "Synthetic/emotion/000001"]
    assert train[0] == synthetic_faba_sample(0, "emotion", "train", seed=3, image_size=32).to_record()
    assert not (out / "FABAInstruct" / "train" / "train_au_anno.json").exists()
    assert "train_emotion" in capsys.readouterr().out
    assert emola_main(["synth", "--out", str(out), "--image-size", "8"]) == 2


def test_failed_samples_are_reported_after_the_others_are_written(tmp_path, monkeypatch, capsys):
    import transformers_emola.synthetic.dataset as synthetic

    original = synthetic.synthetic_faba_sample

    def flaky(index, task="au", split="train", seed=0, image_size=336):
        if index == 1 and split == "train":
            raise OSError("disk hiccup")
        return original(index, task, split, seed, image_size)

    monkeypatch.setattr(synthetic, "synthetic_faba_sample", flaky)
    with pytest.raises(RuntimeError, match=r"1 of 4 synthetic samples failed:\ntrain/au/1: OSError: disk hiccup"):
        write_synthetic_faba(tmp_path / "a", num_train=3, num_eval=1, image_size=32, tasks=["au"])
    rows = load(tmp_path / "a" / "FABAInstruct" / "train" / "train_au_anno.json")
    assert [row["id"] for row in rows] == ["Synthetic/au/000000", "Synthetic/au/000002"]
    assert len(load(tmp_path / "a" / "FABAInstruct" / "eval" / "eval_au_anno.json")) == 1
    code = emola_main(["synth", "--out", str(tmp_path / "b"), "--num-train", "2", "--num-eval", "0",
                       "--image-size", "32", "--tasks", "au"])
    assert code == 1 and "train/au/1" in capsys.readouterr().out
