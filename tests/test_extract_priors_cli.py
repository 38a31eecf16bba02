"""`emola extract-priors` / `emola show-priors`: FABA layout, resume, atomic writes and failure reports."""

import argparse
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from transformers_emola.commands import extract_priors, show_priors
from transformers_emola.facial_prior import FacialPriorExtractor, normalize_landmarks, save_prior

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("dlib")


def run_command(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dlib licence note
        return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two real faces (one listed twice, once with an explicit landmark path) and one corrupt image."""
    root = tmp_path_factory.mktemp("faba")
    images = root / "FABAInstruct" / "train" / "images"
    (images / "sub").mkdir(parents=True)
    astronaut = skimage_data.astronaut()
    Image.fromarray(astronaut).save(images / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(images / "sub" / "b.jpg")
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows = [
        {"image": "FABAInstruct/train/images/a.png", "landmark": "FABAInstruct/train/landmarks/a.npy",
         "conversations": []},
        {"image": "FABAInstruct/train/images/a.png", "landmark": "FABAInstruct/train/landmarks/a.npy",
         "conversations": []},  # same image, another question: computed once
        {"image": "FABAInstruct/train/images/sub/b.jpg", "conversations": []},
        {"image": "FABAInstruct/train/images/bad.jpg", "conversations": []},
    ]
    annotations = root / "train_anno.json"
    annotations.write_text(json.dumps(rows))
    good = root / "good_anno.jsonl"
    good.write_text("\n".join(json.dumps(row) for row in rows[:3]))
    return root, annotations, good


def test_extract_priors_writes_faba_layout_resumes_and_reports_failures(dataset, tmp_path, capsys):
    root, annotations, good = dataset
    out = tmp_path / "out"
    argv = ["--annotations", str(annotations), "--image-root", str(root), "--out", str(out), "--backend", "dlib",
            "--no-progress"]
    assert run_command(extract_priors, argv) == 1  # the corrupt image fails, the others are written
    a = out / "FABAInstruct/train/landmarks/a.npy"
    b = out / "landmarks/FABAInstruct/train/images/sub/b.npy"
    assert a.is_file() and b.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        face = FacialPriorExtractor("dlib").detect([str(root / "FABAInstruct/train/images/a.png")])[0]
    np.testing.assert_array_equal(np.load(a), face.prior)
    assert np.load(a).dtype == np.float32 and np.load(b).shape == (136,)
    failures = json.loads((out / "failures.json").read_text())
    assert [f["image"] for f in failures] == ["FABAInstruct/train/images/bad.jpg"]
    assert "bad.jpg" in failures[0]["error"]
    assert failures[0]["outputs"] == ["landmarks/FABAInstruct/train/images/bad.npy"]
    captured = capsys.readouterr()
    assert "2 written, 0 already present, 1 failed" in captured.out and "bad.jpg" in captured.err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no leftovers

    a_mtime = a.stat().st_mtime_ns
    assert run_command(extract_priors, argv) == 1  # resume: finished files are skipped, the failure is retried
    assert "0 written, 2 already present, 1 failed" in capsys.readouterr().out
    assert a.stat().st_mtime_ns == a_mtime

    argv[1] = str(good)
    assert run_command(extract_priors, argv + ["--overwrite"]) == 0
    assert "2 written, 0 already present, 0 failed" in capsys.readouterr().out
    assert json.loads((out / "failures.json").read_text()) == []


def test_extract_priors_on_image_paths_and_folders(dataset, tmp_path, capsys):
    """`emola extract-priors PATH... --out DIR`: one <name>.npy per image, failures.json, exit 1 when some failed."""
    root, _, _ = dataset
    images = root / "FABAInstruct/train/images"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")  # no face
    out = tmp_path / "priors"
    argv = [str(images), str(tmp_path / "grey.png"), "--out", str(out), "--backend", "dlib", "--no-progress"]
    assert run_command(extract_priors, argv) == 1
    # the images' common folder is tmp's parent of both inputs: the paths below it name the files
    common = os.path.commonpath([str(images), str(tmp_path)])
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    below = os.path.relpath(images, common)
    assert names == [f"{below}/a.npy", f"{below}/sub/b.npy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = FacialPriorExtractor("dlib")([str(images / "a.png")])[0]
    np.testing.assert_array_equal(np.load(out / f"{below}/a.npy"), expected)
    failures = {f["image"]: f for f in json.loads((out / "failures.json").read_text())}
    assert set(failures) == {str(images / "bad.jpg"), str(tmp_path / "grey.png")}
    assert failures[str(tmp_path / "grey.png")]["status"] == "no_face"
    assert failures[str(tmp_path / "grey.png")]["error"] == f"No face found in {tmp_path / 'grey.png'} (backend 'dlib')"
    captured = capsys.readouterr()
    assert "2 written, 0 already present, 2 failed" in captured.out
    assert "--on-missing-face full_image" in captured.err and "on_missing_face=" not in captured.err
    # a second run keeps the files; the face-less image gets a prior of the whole image when asked
    argv += ["--on-missing-face", "full_image"]
    assert run_command(extract_priors, argv) == 1  # bad.jpg still fails
    assert "1 written, 2 already present, 1 failed" in capsys.readouterr().out
    assert (out / os.path.relpath(tmp_path / "grey.npy", common)).is_file()
    # image paths and --annotations are two modes, one at a time
    assert run_command(extract_priors, ["--out", str(out), "--backend", "dlib"]) == 2
    assert "give image PATHs" in capsys.readouterr().err


def test_extract_priors_rejects_bad_annotations(tmp_path, capsys):
    annotations = tmp_path / "anno.json"
    annotations.write_text(json.dumps([{"conversations": []}]))
    argv = ["--annotations", str(annotations), "--image-root", str(tmp_path), "--out", str(tmp_path / "o"),
            "--backend", "dlib"]
    assert run_command(extract_priors, argv) == 2
    assert "anno.json: row 0 has no 'image'" in capsys.readouterr().err


def test_save_prior_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "x.npy"
    save_prior(target, np.arange(3, dtype=np.float32))
    original_save = np.save

    def interrupted_save(handle, array):
        handle.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_prior(target, np.zeros(3, dtype=np.float32))
    with pytest.raises(KeyboardInterrupt):
        save_prior(tmp_path / "deep" / "new.npy", np.zeros(3, dtype=np.float32))
    monkeypatch.setattr(np, "save", original_save)
    np.testing.assert_array_equal(np.load(target), [0, 1, 2])  # the old complete file survives
    assert sorted(os.listdir(tmp_path / "deep")) == ["x.npy"]  # no new file, no temporary left


def test_show_priors_draws_every_face_and_says_which_one_is_used(dataset, tmp_path, capsys):
    root, _, _ = dataset
    image = root / "FABAInstruct/train/images/a.png"
    output = tmp_path / "a_priors.png"
    assert run_command(show_priors, [str(image), "-o", str(output), "--backend", "dlib"]) == 0
    out = capsys.readouterr().out
    assert "2 face(s) found; the prior comes from face #1 (green), box (175, 76, 265, 166)" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        face = FacialPriorExtractor("dlib").detect([str(image)])[0]
    other = face.detections[1].box
    assert f"also found (orange): #2 ({other[0]:.0f}, {other[1]:.0f}, {other[2]:.0f}, {other[3]:.0f})" in out
    drawn = np.asarray(Image.open(output).convert("RGB"))
    assert drawn.shape == (512, 512, 3)
    np.testing.assert_array_equal(normalize_landmarks(face.landmarks), face.prior)
    for x, y in face.landmarks[::7]:
        assert tuple(drawn[int(y), int(x)]) == (255, 0, 0)
    assert tuple(drawn[int((other[1] + other[3]) / 2), int(other[0])]) == (255, 200, 0)  # the other face: orange
    # --face-index 1 uses the second face: its box turns green, the first one orange
    assert run_command(show_priors, [str(image), "-o", str(output), "--backend", "dlib", "--face-index", "1"]) == 0
    assert "the prior comes from face #2 (green)" in capsys.readouterr().out
    drawn = np.asarray(Image.open(output).convert("RGB"))
    assert tuple(drawn[int((other[1] + other[3]) / 2), int(other[0])]) == (0, 255, 0)
    assert run_command(show_priors, [str(root / "FABAInstruct/train/images/bad.jpg"), "-o",
                                     str(tmp_path / "bad.png"), "--backend", "dlib"]) == 1
    assert "bad.jpg" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_extract_priors_stops_at_once_when_weights_are_missing(dataset, tmp_path, monkeypatch, capsys):
    import urllib.error

    pytest.importorskip("face_alignment")
    from face_alignment import utils as fa_utils
    from face_alignment.detection.sfd import sfd_detector

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(fa_utils, "download_url_to_file", offline)
    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", offline)
    root, _, good = dataset
    argv = ["--annotations", str(good), "--image-root", str(root), "--out", str(tmp_path / "out"),
            "--backend", "face_alignment", "--no-progress"]
    assert run_command(extract_priors, argv) == 2
    err = capsys.readouterr().err
    assert err.count("Could not obtain the face-alignment weights") == 1  # one set-up error, not one per image
    assert "2DFAN4-11f355bf06.pth.tar" in err and "s3fd-619a316812.pth" in err
    # the fix in command-line terms, not as Python arguments
    assert """--backend-options '{"fan_path": """ in err and "fan_path=" not in err and "detector=..." not in err
    assert not list((tmp_path / "out").rglob("*.npy"))
