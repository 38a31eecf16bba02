"""Facial prior expert: backends, image handling and policies, on real detectors or tiny self-built models."""

import dataclasses
import inspect
import json
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_emola.facial_prior.drawing import OTHER_FACE_COLOUR
from transformers_emola.facial_prior import (
    BACKEND_DIMS,
    DEFAULT_BACKEND,
    FaceLandmarks,
    FaceNotFoundError,
    FacialPriorExtractor,
    FacialPriorWeightsError,
    draw_landmarks,
    load_image,
    normalize_landmarks,
    prior_path_for_image,
)

skimage_data = pytest.importorskip("skimage.data")

REAL_FACE = (175.0, 76.0, 265.0, 166.0)  # dlib's box for the astronaut's face (upsample=1)
FALSE_FACE_CENTER = (170.0, 380.0)  # dlib's low-score second "face" (on the suit)


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def dlib_extractor():
    pytest.importorskip("dlib")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FacialPriorExtractor("dlib")


@pytest.fixture(scope="module")
def astronaut_face(dlib_extractor, astronaut):
    return dlib_extractor.detect([astronaut])[0]


def dlib_with(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FacialPriorExtractor("dlib", **options)


def test_constants():
    assert BACKEND_DIMS == {"face_alignment": 136, "dlib": 136, "insightface_2d106": 212}
    assert DEFAULT_BACKEND == "face_alignment"
    assert inspect.signature(FacialPriorExtractor).parameters["backend"].default == DEFAULT_BACKEND


def test_normalize_landmarks_uses_the_landmarks_own_square():
    points = np.array([[10.0, 20.0], [30.0, 20.0], [20.0, 30.0]])  # extent 20 x 10, centre (20, 25)
    np.testing.assert_allclose(normalize_landmarks(points), [-1, -0.5, 1, -0.5, 0, 0.5])
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        normalize_landmarks(np.zeros((3, 3)))


# ---- dlib on a real photo ------------------------------------------------------------------------------------
def test_dlib_astronaut_landmarks_are_anatomically_ordered(astronaut_face):
    face = astronaut_face
    assert face.prior.shape == (136,) and face.prior.dtype == np.float32
    assert face.prior.min() >= -1.0 and face.prior.max() <= 1.0
    assert face.prior.min() == -1.0 or face.prior.max() == 1.0  # the landmarks' own square spans [-1, 1]
    np.testing.assert_array_equal(face.prior, normalize_landmarks(face.landmarks))
    points = face.prior.reshape(68, 2)
    eyes_y, nose_y, mouth_y = points[36:48, 1].mean(), points[30:36, 1].mean(), points[48:68, 1].mean()
    assert eyes_y < nose_y < mouth_y
    jaw = points[0:17]
    assert jaw[:, 0].min() < points[36:48, 0].min() and jaw[:, 0].max() > points[36:48, 0].max()  # jaw left/right
    assert jaw[8, 1] > points[48:68, 1].max()  # chin below the mouth
    assert points[36:42, 0].mean() < points[42:48, 0].mean()  # image-left eye first (iBUG order)


def test_dlib_picks_the_real_face_over_the_false_detection(astronaut_face, astronaut):
    face = astronaut_face
    assert face.num_faces == 2  # HOG also fires on the space suit
    assert face.box == REAL_FACE and face.score > 1.0
    x, y = face.landmarks.mean(axis=0)
    assert REAL_FACE[0] < x < REAL_FACE[2] and REAL_FACE[1] < y < REAL_FACE[3]
    assert face.image_size == (512, 512)
    # every face found is kept, best first, with the one the prior comes from marked
    assert face.face_index == 0 and [d.box for d in face.detections][0] == REAL_FACE
    assert len(face.detections) == 2 and face.detections[0].score > face.detections[1].score


def test_face_index_selects_by_decreasing_score(astronaut):
    second = dlib_with(face_index=1).detect(astronaut)[0]
    x0, y0, x1, y1 = second.box
    assert abs((x0 + x1) / 2 - FALSE_FACE_CENTER[0]) < 10 and abs((y0 + y1) / 2 - FALSE_FACE_CENTER[1]) < 10
    assert second.score < 1.0 and second.face_index == 1 and second.box == second.detections[1].box
    with pytest.raises(FaceNotFoundError, match=r"Only 2 face\(s\) found in image 0.*face_index=2") as error:
        dlib_with(face_index=2).detect(astronaut)
    assert error.value.num_faces == 2 and "on_missing_face=" in str(error.value)
    assert "on_missing_face" not in error.value.reason  # the fix is worded by the caller (Python or CLI)


def test_dlib_licence_warning_is_shown_once(monkeypatch):
    from transformers_emola.facial_prior.backends import dlib as dlib_backend

    monkeypatch.setattr(dlib_backend, "license_warned", False)
    with pytest.warns(UserWarning, match="iBUG 300-W.*commercial"):
        FacialPriorExtractor("dlib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FacialPriorExtractor("dlib")  # no second warning


class _FailingDetector:
    def run(self, *args):
        raise AssertionError("the detector must not run when face_boxes are given")

    detect_from_image = run


def test_face_boxes_replace_the_detector(astronaut, astronaut_face):
    extractor = dlib_with(detector=_FailingDetector())
    boxed = extractor.detect([astronaut], face_boxes=[[(10, 10, 60, 60, 0.2), REAL_FACE + (0.9,)]])[0]
    assert boxed.box == REAL_FACE and boxed.score == 0.9 and boxed.num_faces == 2
    np.testing.assert_array_equal(boxed.landmarks, astronaut_face.landmarks)
    with pytest.raises(ValueError, match="one entry per image"):
        extractor.detect([astronaut], face_boxes=[])
    with pytest.raises(ValueError, match="invalid face box"):
        extractor.detect([astronaut], face_boxes=[(50, 50, 40, 60)])


# ---- hard inputs ---------------------------------------------------------------------------------------------
def test_missing_face_policies(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 6), (120, 90, 60)).save(tiny)
    with pytest.raises(ValueError, match=r"No face found in .*tiny\.png"):
        dlib_with().detect([str(tiny)])
    full = dlib_with(on_missing_face="full_image").detect([str(tiny)])[0]
    assert full.box == (0.0, 0.0, 8.0, 6.0) and full.score is None and full.num_faces == 0
    assert full.prior.shape == (136,) and np.abs(full.prior).max() <= 1.0
    with pytest.warns(UserWarning, match="tiny.png; using a zero facial prior"):
        priors = dlib_with(on_missing_face="zeros")([str(tiny), str(tiny)])
    assert priors.shape == (2, 136) and not priors.any()
    with pytest.raises(ValueError, match="on_missing_face must be one of"):
        dlib_with(on_missing_face="skip")


def test_grayscale_rgba_and_16bit_images(astronaut, astronaut_face, tmp_path):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    gray_face = dlib_with().detect([gray])[0]
    assert np.abs(np.subtract(gray_face.box, REAL_FACE)).max() <= 8
    assert np.abs(gray_face.prior - astronaut_face.prior).max() < 0.15

    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(dlib_with()(rgba)[0], astronaut_face.prior)
    rgba[:10, :10, 3] = 0
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, like convert_to_rgb

    path16 = tmp_path / "gray16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path16)
    assert Image.open(path16).mode == "I;16"
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(load_image(path16)), expected)
    np.testing.assert_array_equal(np.asarray(load_image(gray.astype(np.uint16) * 257)), expected)
    np.testing.assert_array_equal(np.asarray(load_image(astronaut.astype(np.float32) / 255)), astronaut)
    np.testing.assert_array_equal(np.asarray(load_image(np.moveaxis(astronaut, -1, 0))), astronaut)  # CHW


def test_exif_orientation_is_applied(astronaut, astronaut_face, tmp_path):
    path = tmp_path / "sideways.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.rot90(astronaut)).save(path, exif=exif)  # stored rotated counter-clockwise
    np.testing.assert_array_equal(np.asarray(load_image(path)), astronaut)
    np.testing.assert_array_equal(np.asarray(load_image(Image.open(path))), astronaut)
    np.testing.assert_array_equal(dlib_with()([str(path)])[0], astronaut_face.prior)


def test_huge_image_detects_on_a_downscaled_copy(astronaut, astronaut_face):
    huge = np.repeat(np.repeat(astronaut, 8, axis=0), 8, axis=1)  # 4096 x 4096
    face = dlib_with(detection_max_side=512).detect([huge])[0]
    assert face.image_size == (4096, 4096)
    np.testing.assert_allclose(face.box, np.multiply(REAL_FACE, 8), atol=8 * 4)
    np.testing.assert_allclose(face.landmarks, astronaut_face.landmarks * 8, atol=8 * 4)
    assert np.abs(face.prior - astronaut_face.prior).max() < 0.1  # normalisation is scale-free


def test_unreadable_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="garbage.jpg"):
        load_image(garbage)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.jpg")
    truncated.write_bytes((tmp_path / "ok.jpg").read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.jpg"):
        load_image(str(truncated))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ValueError, match="garbage.jpg"):
        dlib_with(on_missing_face="zeros")([str(garbage)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((5, 5, 2), np.uint8))


# ---- face_alignment (2D-FAN, random weights, no download) ------------------------------------------------------
@pytest.fixture(scope="module")
def fan():
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("face_alignment.models")
    torch.manual_seed(0)
    return models.FAN(4).eval()


@pytest.fixture(scope="module")
def reference_face_alignment(fan):
    """face-alignment's own FaceAlignment around the same network, built without its downloading __init__."""
    import torch
    from face_alignment import FaceAlignment, LandmarksType
    from face_alignment.detection.core import FaceDetector

    reference = FaceAlignment.__new__(FaceAlignment)
    reference.device, reference.dtype, reference.verbose = "cpu", torch.float32, False
    reference.flip_input, reference.landmarks_type, reference.max_batch_size = True, LandmarksType.TWO_D, 1
    reference.face_detector = FaceDetector("cpu", False)  # only its reference_scale is used with given boxes
    reference.face_alignment_net = fan
    return reference


def test_face_alignment_matches_face_alignment_postprocessing(fan, reference_face_alignment, astronaut):
    extractor = FacialPriorExtractor("face_alignment", fan=fan, batch_size=2)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    boxes = [[REAL_FACE], [(10.0, 20.0, 200.0, 230.0, 0.3), (240.0, 70.0, 340.0, 170.0, 0.95)]]
    faces = extractor.detect([astronaut, flipped], face_boxes=boxes)  # one batched FAN call
    expected = [reference_face_alignment.get_landmarks_from_image(astronaut, detected_faces=[REAL_FACE])[0],
                reference_face_alignment.get_landmarks_from_image(flipped, detected_faces=[boxes[1][1][:4]])[0]]
    for face, reference in zip(faces, expected):
        assert face.landmarks.shape == (68, 2)
        np.testing.assert_array_equal(face.landmarks, reference)
        assert face.prior.shape == (136,) and np.abs(face.prior).max() <= 1.0
        np.testing.assert_array_equal(face.prior, normalize_landmarks(reference))
    assert faces[1].box == (240.0, 70.0, 340.0, 170.0) and faces[1].score == 0.95  # highest score chosen


class _StubDetector:
    """Stands in for face-alignment's S3FD: a fixed list of [x0, y0, x1, y1, score] boxes."""

    reference_scale = 195

    def __init__(self, boxes):
        self.boxes, self.calls = boxes, 0

    def detect_from_image(self, image):
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        self.calls += 1
        return [np.array(box, dtype=np.float32) for box in self.boxes]


def test_face_alignment_detector_override_and_policies(fan, reference_face_alignment, astronaut, monkeypatch):
    detector = _StubDetector([])
    with pytest.raises(ValueError, match="No face found in image 0"):
        FacialPriorExtractor("face_alignment", fan=fan, detector=detector).detect(astronaut)
    face = FacialPriorExtractor("face_alignment", fan=fan, detector=detector, on_missing_face="full_image",
                                flip_input=False).detect(astronaut)[0]
    assert face.box == (0.0, 0.0, 512.0, 512.0) and detector.calls == 2
    monkeypatch.setattr(reference_face_alignment, "flip_input", False)
    expected = reference_face_alignment.get_landmarks_from_image(astronaut, detected_faces=[face.box])[0]
    np.testing.assert_array_equal(face.landmarks, expected)


def test_face_alignment_missing_weights_error_names_the_cache(monkeypatch, tmp_path, fan, astronaut):
    from face_alignment import utils as fa_utils
    from face_alignment.detection.sfd import sfd_detector

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(fa_utils, "download_url_to_file", offline)
    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", offline)
    cache = str(tmp_path / "torch" / "hub" / "checkpoints")
    with pytest.raises(FacialPriorWeightsError) as error:
        FacialPriorExtractor("face_alignment").detect(astronaut, face_boxes=[REAL_FACE])
    assert cache in str(error.value) and "2DFAN4-11f355bf06.pth.tar" in str(error.value)
    assert "pre-seed" in str(error.value) and "TORCH_HOME" in str(error.value)
    # the fix names the files to point the backend at (Python options here, --backend-options on the CLI)
    assert error.value.suggested_options == {
        "fan_path": f"{cache}/2DFAN4-11f355bf06.pth.tar",
        "face_detector_kwargs": {"path_to_detector": f"{cache}/s3fd-619a316812.pth"}}
    assert "pass fan_path=" in str(error.value) and "fan=..., detector=..." in str(error.value)
    with pytest.raises(FacialPriorWeightsError, match="s3fd-619a316812.pth") as error:
        FacialPriorExtractor("face_alignment", fan=fan).detect(astronaut)  # detector weights this time
    assert cache in str(error.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        FacialPriorExtractor("face_alignment", fan_path=str(tmp_path / "nope.pth")).detect(
            astronaut, face_boxes=[REAL_FACE])


# ---- insightface_2d106 with a tiny self-built ONNX graph ----------------------------------------------------------
def _gather_graph(path, indices, batch=1):
    """A graph with 2d106det's signature (1x3x192x192 -> 1x212) whose outputs are chosen input values, so the
    test sees exactly what the network receives."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Reshape", ["data", "flat_shape"], ["flat"]),
        helper.make_node("Gather", ["flat", "indices"], ["fc1"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "gather_2d106",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, len(indices)])],
        initializer=[helper.make_tensor("flat_shape", TensorProto.INT64, [2], [0, -1]),
                     helper.make_tensor("indices", TensorProto.INT64, [len(indices)], list(indices))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def gather_indices():
    rng = np.random.default_rng(0)
    return rng.choice(3 * 192 * 192, size=212, replace=False)


@pytest.fixture(scope="module")
def gather_model(tmp_path_factory, gather_indices):
    pytest.importorskip("onnxruntime")
    return _gather_graph(tmp_path_factory.mktemp("onnx") / "gather_2d106.onnx", gather_indices)


def _official_reference(rgb, indices):
    """EmoLA's landmark_features.py on an RGB array: BGR, cv2.resize 192x192, /255, CHW, output[0][0]."""
    import cv2

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    x = (cv2.resize(bgr, (192, 192)).astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    return x.reshape(-1)[indices]


def test_insightface_reproduces_the_official_preprocessing(gather_model, gather_indices, astronaut, tmp_path):
    extractor = FacialPriorExtractor("insightface_2d106", model_path=gather_model)
    assert extractor.dim == 212
    crop = np.ascontiguousarray(astronaut[:400, 50:350])  # non-square: resized, not padded
    priors = extractor([astronaut, crop])
    assert priors.shape == (2, 212) and priors.dtype == np.float32
    np.testing.assert_array_equal(priors[0], _official_reference(astronaut, gather_indices))
    np.testing.assert_array_equal(priors[1], _official_reference(crop, gather_indices))

    red = np.zeros((50, 70, 3), np.uint8)
    red[..., 0] = 255  # RGB red -> network channel 2 (BGR) = 1.0, channels 0 and 1 = 0.0
    channel = gather_indices // (192 * 192)
    np.testing.assert_array_equal(extractor(red)[0], (channel == 2).astype(np.float32))

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    face = extractor.detect([str(path)])[0]  # read with cv2.imread like the official code
    np.testing.assert_array_equal(face.prior, priors[0])
    assert face.box == (0.0, 0.0, 512.0, 512.0) and face.image_size == (512, 512)
    np.testing.assert_allclose(face.landmarks, (priors[0].reshape(106, 2) + 1) * 256, rtol=1e-6)

    boxed = extractor.detect([astronaut], face_boxes=[REAL_FACE])[0]  # optional crop before the official steps
    np.testing.assert_array_equal(boxed.prior, _official_reference(astronaut[76:166, 175:265], gather_indices))


def official_landmark_features(path, session):
    """EmoLA's feature_extraction/landmark/landmark_features.py on one file, step by step."""
    import cv2

    img = cv2.imread(path)                     # BGR, uint8, the whole image (no face detection, no crop)
    img = cv2.resize(img, (192, 192))          # INTER_LINEAR, aspect ratio not kept
    img = img.astype(np.float32) / 255.0       # [0, 1], not InsightFace's own mean / std
    x = img.transpose(2, 0, 1)[None]           # HWC -> CHW, batch of one: 1 x 3 x 192 x 192
    output = session.run(None, {session.get_inputs()[0].name: x})
    return output[0][0]                        # output[0][0]: the 212 outputs of the first image


@pytest.fixture(scope="module")
def photo_files(astronaut, tmp_path_factory):
    """FABA-like files: a baseline 4:2:0 JPEG (AffectNet's kind), an Adobe CMYK JPEG, a JPEG stored sideways with
    an EXIF orientation, and a PNG with transparent pixels."""
    folder = tmp_path_factory.mktemp("photos")
    face = Image.fromarray(np.ascontiguousarray(astronaut[30:230, 120:320]))
    face.save(folder / "faba.jpg", quality=90, subsampling=2)
    face.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    sideways = face.crop((0, 0, 200, 150))
    exif = sideways.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    sideways.save(folder / "rotated.jpg", quality=90, exif=exif)
    rgba = np.dstack([np.asarray(face), np.full((200, 200), 255, np.uint8)])
    rgba[:60, :, 3] = 0  # a transparent band whose colour the file still stores
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    return {path.name: str(path) for path in folder.iterdir()}


def test_insightface_reads_files_as_the_official_script(gather_model, photo_files, tmp_path):
    """A path is decoded with cv2.imread like the official extraction, through every entry point: the extractor,
    `load_faba_instruct` (training priors computed on the fly), the facial-affect pipeline (`emola analyze`) and
    `emola extract-priors`."""
    import cv2
    import onnxruntime

    from transformers_emola import build_tiny_emola
    from transformers_emola.cli import main as emola
    from transformers_emola.data import load_faba_instruct
    from transformers import pipeline

    session = onnxruntime.InferenceSession(gather_model, providers=["CPUExecutionProvider"])
    official = {name: official_landmark_features(path, session) for name, path in photo_files.items()}
    extractor = FacialPriorExtractor("insightface_2d106", model_path=gather_model)
    names = sorted(photo_files)
    priors = extractor([photo_files[name] for name in names])
    for name, prior in zip(names, priors):
        np.testing.assert_array_equal(prior, official[name], err_msg=name)
        np.testing.assert_array_equal(extractor.detect(photo_files[name])[0].prior, official[name], err_msg=name)

    # The test can tell the decoders apart: PIL (load_image) decodes the CMYK JPEG and the transparent PNG to other
    # pixels than cv2.imread, so a backend that decoded files with PIL would give other priors. (The baseline JPEG
    # decodes identically with both here, and both apply the EXIF orientation.)
    for name in ("cmyk.jpg", "transparent.png"):
        pil_rgb = np.asarray(load_image(photo_files[name]))
        assert not np.array_equal(pil_rgb, cv2.imread(photo_files[name])[:, :, ::-1]), name
        assert not np.array_equal(extractor(pil_rgb)[0], official[name]), name
    assert np.asarray(load_image(photo_files["rotated.jpg"])).shape == cv2.imread(photo_files["rotated.jpg"]).shape

    # training data with priors computed on the fly
    rows = [{"id": name, "image": name, "conversations": [{"from": "human", "value": "<image>\nWhat AUs?"},
                                                          {"from": "gpt", "value": "AU12."}]} for name in names]
    dataset = load_faba_instruct(rows, Path(photo_files["faba.jpg"]).parent, split="train",
                                 facial_prior_extractor=extractor)
    for name, prior in zip(dataset["id"], dataset["facial_priors"]):
        np.testing.assert_array_equal(np.float32(prior), official[name], err_msg=name)

    # the facial-affect pipeline on a file
    model, processor = build_tiny_emola(facial_prior_dim=212, facial_prior_backend="insightface_2d106")
    processor.set_facial_prior_extractor(extractor)
    analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    for name in names:
        item = analyzer.detect(analyzer.load(photo_files[name]))
        np.testing.assert_array_equal(item["facial_prior"], official[name], err_msg=name)

    # emola extract-priors
    argv = ["extract-priors", *photo_files.values(), "--out", str(tmp_path / "priors"), "--backend",
            "insightface_2d106", "--backend-options", json.dumps({"model_path": gather_model})]
    assert emola(argv) == 0
    for name in names:
        saved = np.load(tmp_path / "priors" / Path(name).with_suffix(".npy"))
        np.testing.assert_array_equal(saved, official[name], err_msg=name)


def test_insightface_errors(gather_model, tmp_path):
    with pytest.raises(FacialPriorWeightsError, match="(?s)2d106det.onnx, which is not shipped.*model_path=") as error:
        FacialPriorExtractor("insightface_2d106")
    assert error.value.suggested_options == {"model_path": "path/to/2d106det.onnx"}
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        FacialPriorExtractor("insightface_2d106", model_path=str(tmp_path / "absent.onnx"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="Cannot load the ONNX model .*corrupt.onnx"):
        FacialPriorExtractor("insightface_2d106", model_path=str(corrupt))
    wrong = _gather_graph(tmp_path / "wrong.onnx", list(range(10)))
    with pytest.raises(ValueError, match="expected 212 outputs.*got 10"):
        FacialPriorExtractor("insightface_2d106", model_path=wrong)(np.zeros((8, 8, 3), np.uint8))


# ---- precomputed -----------------------------------------------------------------------------------------------
def test_precomputed_reads_faba_layout(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    prior = rng.standard_normal(212).astype(np.float32)
    target = root / prior_path_for_image("FABAInstruct/train/images/a/1.jpg")
    target.parent.mkdir(parents=True)
    np.save(target, prior)
    assert prior_path_for_image("FABAInstruct/train/images/a/1.jpg") == "landmarks/FABAInstruct/train/images/a/1.npy"

    extractor = FacialPriorExtractor("precomputed", root=str(root), image_root=str(tmp_path / "img"))
    assert extractor.dim is None
    by_image = extractor([str(tmp_path / "img" / "FABAInstruct/train/images/a/1.jpg")])
    by_npy = FacialPriorExtractor("precomputed")([str(target)])
    np.testing.assert_array_equal(by_image, prior[None])
    np.testing.assert_array_equal(by_npy, prior[None])

    np.save(tmp_path / "short.npy", prior[:136])
    with pytest.raises(ValueError, match=r"short\.npy: facial prior has dimension 136, expected 212"):
        FacialPriorExtractor("precomputed", dim=212)([str(tmp_path / "short.npy")])
    with pytest.raises(FileNotFoundError, match="other.npy"):
        FacialPriorExtractor("precomputed")([str(tmp_path / "other.npy")])
    with pytest.raises(ValueError, match="not a path"):
        FacialPriorExtractor("precomputed")(np.zeros((4, 4, 3), np.uint8))


# ---- configuration ---------------------------------------------------------------------------------------------
def test_to_dict_from_dict_round_trip(gather_model, fan):
    extractors = [
        dlib_with(upsample=0, on_missing_face="zeros", face_index=1),
        FacialPriorExtractor("insightface_2d106", model_path=gather_model),
        FacialPriorExtractor("precomputed", dim=212, root="priors"),
        FacialPriorExtractor("face_alignment", fan=fan, device="cpu", dtype="float32", batch_size=3),
    ]
    for extractor in extractors:
        saved = json.loads(json.dumps(extractor.to_dict()))  # JSON-serialisable
        assert saved["backend"] == extractor.backend and saved["dim"] == extractor.dim
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = FacialPriorExtractor.from_dict(saved)
        assert rebuilt.to_dict() == saved
    assert "fan" not in extractors[3].to_dict() and extractors[3].to_dict()["face_detector"] == "sfd"
    assert FacialPriorExtractor.from_dict(extractors[3].to_dict(), batch_size=5).batch_size == 5
    with pytest.raises(ValueError, match=r"\['model_path'\] do not apply to the 'dlib' backend"):
        dlib_with(model_path="x.onnx")
    with pytest.raises(ValueError, match="Unknown facial-prior backend 'mediapipe'"):
        FacialPriorExtractor("mediapipe")
    with pytest.raises(ValueError, match="produces 212-d priors, not dim=136"):
        FacialPriorExtractor.from_dict({"backend": "insightface_2d106", "dim": 136, "model_path": gather_model})


def test_draw_landmarks_marks_points_and_box(astronaut, astronaut_face):
    drawn = draw_landmarks(astronaut, astronaut_face)
    assert drawn.size == (512, 512) and drawn.mode == "RGB"
    for x, y in astronaut_face.landmarks[[0, 30, 48]]:
        assert drawn.getpixel((int(x), int(y))) == (255, 0, 0)
    x0, y0, x1, y1 = (int(v) for v in REAL_FACE)
    assert drawn.getpixel((x0, (y0 + y1) // 2)) == (0, 255, 0)  # the face the prior comes from: green
    other = astronaut_face.detections[1].box  # the false detection on the suit: an orange box, no landmarks
    assert drawn.getpixel((int(other[0]), int((other[1] + other[3]) / 2))) == OTHER_FACE_COLOUR
    changed = np.any(np.asarray(drawn) != astronaut, axis=-1)
    outside = np.ones_like(changed)
    points = astronaut_face.landmarks
    face_and_landmarks = (min(REAL_FACE[0], points[:, 0].min()), min(REAL_FACE[1], points[:, 1].min()),
                          max(REAL_FACE[2], points[:, 0].max()), max(REAL_FACE[3], points[:, 1].max()))
    for box in (face_and_landmarks, other):
        bx0, by0, bx1, by1 = (int(round(v)) for v in box)
        outside[max(0, by0 - 3): by1 + 4, max(0, bx0 - 3): bx1 + 4] = False
    assert not changed[outside].any()  # nothing drawn away from the two faces
    only_chosen = dataclasses.replace(astronaut_face, detections=astronaut_face.detections[:1])
    assert np.array_equal(np.asarray(draw_landmarks(astronaut, only_chosen))[400:], astronaut[400:])
    zero = FaceLandmarks(np.zeros(136, np.float32), None, None, None, "x")
    assert np.array_equal(np.asarray(draw_landmarks(astronaut, [zero])), astronaut)


def test_processor_extracts_priors_with_the_saved_backend(tmp_path, astronaut, astronaut_face):
    from transformers_emola import EmolaProcessor
    from transformers_emola import build_tiny_emola

    _, processor = build_tiny_emola(facial_prior_dim=136, facial_prior_backend="dlib")
    processor.set_facial_prior_extractor(dlib_with(upsample=1))
    processor.save_pretrained(tmp_path)
    reloaded = EmolaProcessor.from_pretrained(tmp_path)
    assert reloaded.get_facial_prior_extractor().to_dict() == dlib_with().to_dict()
    prompt = reloaded.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the emotion?"}]}],
        add_generation_prompt=True)
    inputs = reloaded(images=Image.fromarray(astronaut), text=prompt, return_tensors="pt")
    np.testing.assert_array_equal(inputs["facial_priors"].numpy(), astronaut_face.prior[None])


def test_face_alignment_dtype_is_validated(fan):
    with pytest.raises(ValueError, match="torch dtype.*'floaty'"):
        FacialPriorExtractor("face_alignment", fan=fan, dtype="floaty")


def test_extractors_pickle_by_settings(gather_model, astronaut_face, astronaut):
    import pickle

    insight = FacialPriorExtractor("insightface_2d106", model_path=gather_model)
    insight(astronaut)  # holds an onnxruntime session now, which cannot be pickled itself
    copy = pickle.loads(pickle.dumps(insight))
    np.testing.assert_array_equal(copy(astronaut), insight(astronaut))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(dlib_with()))(astronaut)[0], astronaut_face.prior)
