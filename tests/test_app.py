"""`emola app`: the real command serves a tiny EmoLA (dlib landmarks) on localhost; `gradio_client` and headless
Chromium drive it like a user would.

The server answers are compared with the `facial-affect-analysis` pipeline run here on the same image (the tiny
model is built from a fixed seed, so both processes hold the same weights): the API must return exactly what the
pipeline says, the annotated image must carry the landmarks the model saw, and every bad input must come back as a
readable message while the next request is still served.
"""

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the app needs the [app] extra: pip install "transformers-emola[app]"')
gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("dlib", reason="the app is tested with the dlib landmark backend")
skimage_data = pytest.importorskip("skimage.data")

from headless_chromium import HeadlessChromium, find_chromium  # noqa: E402

from transformers_emola.app import (  # noqa: E402
    MISSING_FACE_OPTION_LABEL,
    au_table_rows,
    emotion_text,
    load_app_pipeline,
    status_markdown,
)
from transformers_emola.facial_prior import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 8
SERVER_START_TIMEOUT_S = 300  # importing torch + transformers + gradio on a busy 2-core machine
REQUEST_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """`emola app --model tiny --backend dlib --port P`, as a user starts it; its URL."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    log_path = folder / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "transformers_emola.cli", "app", "--model", "tiny", "--backend", "dlib",
               "--port", str(port), "--max-new-tokens", str(MAX_NEW_TOKENS)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    request.getfixturevalue("reference")  # computed here while the server starts
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"emola app exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"emola app did not serve {url} within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return gradio_client.Client(server, verbose=False, analytics_enabled=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


def analyze(client, image, task="both", **options):
    """`client.predict(image, task, api_name="/analyze")` with a time limit; `image` is a path or None."""
    payload = None if image is None else gradio_client.handle_file(str(image))
    job = client.submit(payload, task, api_name="/analyze", **options)
    return job.result(timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The astronaut and variants of it that a user might upload, plus a face-less grey image."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(skimage_data.astronaut())
    astronaut.save(folder / "astronaut.png")
    astronaut.convert("L").save(folder / "grey_astronaut.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(512)[None, :] < 40, 0, 255).repeat(512, 0).astype(np.uint8)))
    rgba.save(folder / "transparent_astronaut.png")
    upright = Image.fromarray(skimage_data.astronaut()[0:300, 60:460])  # 400 x 300: rotation changes the size
    upright.save(folder / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": how phones store portrait photos
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "phone.png", exif=exif)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(folder / "grey.png")
    return folder


@pytest.fixture(scope="module")
def reference(photos):
    """What the facial-affect-analysis pipeline (same tiny model, dlib) says about the photos, computed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dlib's licence note, tested in test_facial_prior.py
        pipeline = load_app_pipeline("tiny", backend="dlib")
    return {name: pipeline(load_image(photos / name), tasks="both", max_new_tokens=MAX_NEW_TOKENS)
            for name in ("astronaut.png", "upright.png")}


def test_analyze_returns_the_pipelines_description_result_and_an_annotated_image(client, photos, reference):
    expected = reference["astronaut.png"]
    description, result, annotated_path = analyze(client, photos / "astronaut.png", "both")

    assert result["status"] == "ok" and result["error"] is None
    assert description == f"Action units:\n{expected['au_description']}\n\nEmotion:\n{expected['emotion_description']}"
    for key in ("aus", "emotion", "au_description", "emotion_description", "face_box", "face_score", "landmarks",
                "flags"):
        assert result[key] == expected[key], key
    assert result["face_source"] == "detected" and result["image_size"] == [512, 512]
    assert result["generation"] == {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}

    photo = np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))
    annotated = np.asarray(Image.open(annotated_path).convert("RGB"))
    assert annotated.shape[0] == 512 and annotated.shape[1] > 512  # the photo, then the AU / emotion panel
    points = np.rint(np.asarray(expected["landmarks"])).astype(int)
    assert len(points) == 68
    for x, y in points:  # every landmark the model saw is drawn as a red dot on the photo
        assert tuple(annotated[y, x]) == (255, 0, 0) != tuple(photo[y, x])
    x0, y0, x1, y1 = (round(v) for v in expected["face_box"])
    assert tuple(annotated[(y0 + y1) // 2, x0]) == (0, 255, 0)  # the face box, green
    assert np.array_equal(annotated[:60, :60], photo[:60, :60])  # away from the face: the photo, untouched

    description, result, _ = analyze(client, photos / "astronaut.png", "emotion")
    assert description == expected["emotion_description"]
    assert result["au_description"] is None and result["aus"] == [] and result["emotion"] == expected["emotion"]


def test_no_face_is_a_readable_message_naming_the_option_and_the_server_answers_again(client, photos, reference):
    description, result, annotated = analyze(client, photos / "grey.png", "au")
    assert result["status"] == "no_face" and annotated is None
    assert description == f"Not analysed: {result['error']}"
    assert "No face found in grey.png" in description
    assert "--on-missing-face" in description and MISSING_FACE_OPTION_LABEL in description

    _, whole, annotated = analyze(client, photos / "grey.png", "au", on_missing_face="full_image")
    assert whole["status"] == "ok" and whole["face_source"] == "whole_image"
    assert whole["face_box"] == [0.0, 0.0, 64.0, 64.0] and annotated is not None
    _, zeros, _ = analyze(client, photos / "grey.png", "au", on_missing_face="zeros")
    assert zeros["status"] == "ok" and zeros["face_source"] == "zero_prior" and zeros["face_box"] is None

    _, again, _ = analyze(client, photos / "astronaut.png", "au")
    assert again["status"] == "ok" and again["face_box"] == reference["astronaut.png"]["face_box"]


def _png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` x `height` pixels (a decompression bomb's calling card)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_corrupt_huge_and_missing_photos_get_messages_and_the_server_answers_again(client, photos, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"this is not a JPEG")
    jpeg = io.BytesIO()
    Image.open(photos / "astronaut.png").save(jpeg, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (tmp_path / "huge.png").write_bytes(_png_claiming_size(10_000, 10_000))  # 100 MP: over the app's 64 MP limit
    (tmp_path / "bomb.png").write_bytes(_png_claiming_size(20_000, 20_000))  # 400 MP: Pillow refuses to open it

    description, result, annotated = analyze(client, tmp_path / "photo.jpg", "au")
    assert result["status"] == "unreadable" and annotated is None
    assert description.startswith("Not analysed: Cannot read photo.jpg as an image")
    assert "UnidentifiedImageError" in description
    _, result, _ = analyze(client, tmp_path / "cut.jpg", "au")
    assert result["status"] == "unreadable" and "cut.jpg" in result["error"] and "truncated" in result["error"]
    _, result, _ = analyze(client, tmp_path / "huge.png", "au")
    assert result["status"] == "too_large"
    assert "10000 x 10000 pixels" in result["error"] and "--max-image-pixels" in result["error"]
    _, result, _ = analyze(client, tmp_path / "bomb.png", "au")
    assert result["status"] == "too_large" and "bomb.png is too large" in result["error"]
    assert "--max-image-pixels" in result["error"]
    description, result, _ = analyze(client, None, "au")
    assert result["status"] == "no_image" and "upload" in description
    _, result, _ = analyze(client, photos / "astronaut.png", "sadness")
    assert result["status"] == "bad_request" and "'au', 'emotion' or 'both'" in result["error"]

    _, again, _ = analyze(client, photos / "astronaut.png", "au")
    assert again["status"] == "ok" and again["landmarks"] is not None


def test_grey_transparent_and_exif_rotated_photos_are_analysed_upright(client, photos, reference):
    for name in ("grey_astronaut.png", "transparent_astronaut.png"):
        _, result, _ = analyze(client, photos / name, "au")
        assert result["status"] == "ok" and result["image_size"] == [512, 512], name
        box = result["face_box"]  # the same face as in the colour photo (detection runs on other pixels)
        assert np.allclose(box, reference["astronaut.png"]["face_box"], atol=12), (name, box)

    assert Image.open(photos / "phone.png").size == (300, 400)  # stored sideways
    _, result, annotated = analyze(client, photos / "phone.png", "both")
    upright = reference["upright.png"]
    assert result["status"] == "ok" and result["image_size"] == [400, 300]
    assert result["face_box"] == upright["face_box"] and result["landmarks"] == upright["landmarks"]
    assert result["au_description"] == upright["au_description"]
    assert Image.open(annotated).height == 300


def test_page_tables_from_a_parsed_answer():
    from transformers_emola.pipeline_facial_affect import build_result

    parsed = build_result({"au": "The cheeks are raised (AU6). AU12 pulls the lip corners up. AU4 is not present.",
                           "emotion": "She looks happy."})
    result = {"status": "ok", **parsed, "image_size": [640, 480], "face_source": "detected", "seconds": 1.25,
              "face_box": [10.0, 20.0, 110.0, 140.0], "face_score": 0.5}
    assert au_table_rows(result) == [["AU6", "Cheek Raiser", "The cheeks are raised (AU6)."],
                                     ["AU12", "Lip Corner Puller", "AU12 pulls the lip corners up."]]
    assert emotion_text(result) == "Happiness"
    assert status_markdown(result) == ("**Analysed** (640 x 480 px; face found at [10, 20, 110, 140], "
                                       "detector score 0.50; 1.2 s)")
    assert emotion_text({**result, "emotion": None, "emotion_description": None}) == "(not asked)"
    failed = {"status": "no_face", "error": "No face found in x.png"}
    assert status_markdown(failed) == "**Not analysed (no face):** No face found in x.png"
    assert au_table_rows(failed) == [] and emotion_text(failed) == ""


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys):
    from transformers_emola import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the [app] extra were not installed
    assert cli.main(["app", "--model", "tiny"]) == 2
    assert 'pip install "transformers-emola[app]"' in capsys.readouterr().err


def test_chromium_renders_the_page_and_analyses_an_upload(server, client, photos, reference, tmp_path):
    """A real browser: the page names EmoLA and has its controls; uploading the astronaut and pressing Analyze
    shows the pipeline's description, the annotated image and the status line. Saves a screenshot (also to
    $EMOLA_APP_SCREENSHOT when set: that is how docs/images/app.png is made)."""
    binary = find_chromium()
    if binary is None:
        message = ("headless Chromium not found (Debian: apt-get install -y chromium, or set $CHROMIUM); "
                   ".ci/run installs it")
        if os.environ.get("EMOLA_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    browser = HeadlessChromium(binary, tmp_path / "profile", log_path=tmp_path / "chromium.log")
    try:
        browser.page("Page.navigate", url=server)
        labels = ["EmoLA: facial affect analysis", "non-commercial", "Advanced", "Examples", "Astronaut (scikit-image)",
                  "Synthetic face: happiness", "The model's description", "Action units", "Emotion", "Analyze"]
        try:  # the page is built by JavaScript: wait until every part is there
            page_text = "(document.body?.innerText ?? '')"
            browser.wait_for(f"{json.dumps(labels)}.every(label => {page_text}.includes(label))", 90)
        except TimeoutError:
            pass  # the assertion below names what is missing
        text = browser.evaluate("document.body.innerText")
        assert [label for label in labels if label not in text] == []
        assert browser.evaluate("document.title") == "EmoLA: facial affect analysis"
        choices = browser.evaluate("[...document.querySelectorAll('#emola-task label')].map(l => l.innerText.trim())")
        assert choices == ["Action units", "Emotion", "Both"]
        assert browser.evaluate("document.querySelector('#emola-analyze').innerText.trim()") == "Analyze"
        assert browser.evaluate("document.querySelectorAll('#emola-photo input[type=file]').length") == 1

        browser.evaluate("[...document.querySelectorAll('#emola-advanced button')][0].click()")
        browser.wait_for(f"document.body.innerText.includes({MISSING_FACE_OPTION_LABEL!r})")
        text = browser.evaluate("document.body.innerText")
        assert "Max new tokens" in text and "Greedy (as in FABA-Bench)" in text and "Sampling" in text

        browser.set_files("#emola-photo input[type=file]", [str(photos / "astronaut.png")])
        browser.wait_for("document.querySelector('#emola-photo img') !== null")
        browser.evaluate("document.querySelector('#emola-analyze').click()")
        status = browser.wait_for("(document.querySelector('#emola-status') || {}).innerText.includes('Analysed') "
                                  "&& document.querySelector('#emola-status').innerText", timeout=REQUEST_TIMEOUT_S)
        expected = reference["astronaut.png"]
        box = ", ".join(f"{v:.0f}" for v in expected["face_box"])
        assert f"512 x 512 px; face found at [{box}]" in status
        browser.wait_for("document.querySelector('#emola-annotated img') !== null")
        shown = browser.evaluate("document.querySelector('#emola-description textarea').value")
        assert shown == (f"Action units:\n{expected['au_description']}\n\nEmotion:\n"
                         f"{expected['emotion_description']}")
        header = browser.evaluate("[...document.querySelectorAll('#emola-aus th')].map(h => h.innerText.trim())")
        assert header[-3:] == ["AU", "FACS name", "Supporting sentence"], header
        browser.evaluate("window.scrollTo(0, 0)")
        screenshot = tmp_path / "app.png"
        browser.screenshot(screenshot)
    finally:
        browser.close()
    with Image.open(screenshot) as shot:
        assert shot.width >= 1200 and shot.height >= 800  # the window, less a scrollbar
        if os.environ.get("EMOLA_APP_SCREENSHOT"):  # for the docs: 256 colours keep the PNG small
            shot.convert("RGB").quantize(256).save(os.environ["EMOLA_APP_SCREENSHOT"], optimize=True)


def test_space_example_builds_the_same_app(monkeypatch):
    import runpy

    monkeypatch.setenv("EMOLA_MODEL", "tiny")
    monkeypatch.setenv("EMOLA_BACKEND", "dlib")
    monkeypatch.setattr(sys, "argv", ["app.py"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        namespace = runpy.run_path(str(ROOT / "examples" / "app.py"), run_name="space")  # not "__main__": no launch
    demo = namespace["demo"]
    config = demo.get_config_file()
    assert [d.get("api_name") for d in config["dependencies"] if d.get("api_visibility") == "public"] == ["analyze"]
    assert any("EmoLA" in str(c.get("props", {}).get("value", "")) for c in config["components"])
