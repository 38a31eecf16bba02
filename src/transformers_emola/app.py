"""`emola app`: a web page (Gradio) for facial affect analysis with EmoLA, and its `/analyze` API.

People who look at faces would rather see than read JSON: drop a photo in, see the face box and landmarks the
facial prior came from, the model's description, the AUs (number, FACS name, supporting sentence) and the emotion.
Everything is the `facial-affect-analysis` pipeline: `PhotoAnalyzer` adds what a server needs on top of it (one
model loaded once, every bad input turned into a readable answer instead of an exception) and `build_app` lays out
the page. Gradio is imported only by `build_app`, so the rest of the package works without the `[app]` extra.

API: `gradio_client.Client(url).predict(image, task, api_name="/analyze")` returns `(description, result,
annotated_image)`; `result` is a dict with `status` ("ok" or one of `FAILURE_STATUSES`), `error`, `aus`,
`emotion`, the descriptions, the face box / score / landmarks and how the face was obtained.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .analysis import draw_analysis
from .faba import normalize_tasks
from .facial_prior import FaceNotFoundError

logger = logging.getLogger(__name__)

#: The endpoint `gradio_client` calls: `client.predict(image, task, api_name="/analyze")`.
ANALYZE_API_NAME = "analyze"
#: `model=TINY_MODEL` builds a tiny random EmoLA offline (tests and demos of the page; its text is gibberish).
TINY_MODEL = "tiny"
#: `result["status"]` of a request that got no analysis.
FAILURE_STATUSES = ("no_image", "unreadable", "too_large", "no_face", "bad_request", "error")
#: Photos above this many pixels are refused (a 50 MP phone photo passes; decoding more risks the server's memory).
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
#: Landmark backends the page can use ("precomputed" needs .npy files next to a dataset, not uploads).
APP_BACKENDS = ("face_alignment", "dlib", "insightface_2d106")

TASK_CHOICES = [("Action units", "au"), ("Emotion", "emotion"), ("Both", "both")]
DECODING_CHOICES = [("Greedy (as in FABA-Bench)", "greedy"), ("Sampling", "sampling")]
MISSING_FACE_CHOICES = [
    ("Report it (no analysis)", "error"),
    ("Use the whole image as the face", "full_image"),
    ("Use a zero facial prior", "zeros"),
]
MISSING_FACE_OPTION_LABEL = "If no face is found"
FACE_SOURCES = {"error": "detected", "full_image": "whole_image", "zeros": "zero_prior"}
AU_TABLE_HEADERS = ["AU", "FACS name", "Supporting sentence"]
#: How the description of a request without analysis starts (plain text: no emoji font needed to read it).
NOT_ANALYSED = "Not analysed:"
APP_EXTRA_HINT = 'pip install "transformers-emola[app]"'
DLIB_NOTE = ("dlib's 68-point landmark model is licensed for non-commercial use only (iBUG 300-W); use the "
             "face_alignment backend for commercial work.")


class PhotoRequestError(ValueError):
    """A request the app answers with a message instead of an analysis; `status` is one of `FAILURE_STATUSES`."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _import_gradio():
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"The EmoLA web app needs Gradio: {APP_EXTRA_HINT}") from error
    return gradio


def load_app_pipeline(
    model: str | os.PathLike,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    device: str | int | None = None,
    dtype: str = "auto",
):
    """The `facial-affect-analysis` pipeline of `model` (a folder, a Hub id, or `"tiny"`), with faces required.

    Detection always runs with `on_missing_face="error"`; the app applies the page's choice itself, per request.
    `"tiny"` saves a tiny random EmoLA (`tiny.build_tiny_emola`) to a temporary folder and loads that, so
    the page and its tests run offline; its answers are random text.
    """
    from .analysis import load_analyzer

    if backend is not None and backend not in APP_BACKENDS:
        raise ValueError(f"backend {backend!r} cannot analyse uploaded photos; choose one of {list(APP_BACKENDS)}")
    if os.fspath(model) == TINY_MODEL:
        from .tiny import build_tiny_emola

        tiny_model, tiny_processor = build_tiny_emola()
        with tempfile.TemporaryDirectory(prefix="emola-app-tiny-") as folder:  # loaded into memory, then deleted
            tiny_model.save_pretrained(folder)
            tiny_processor.save_pretrained(folder)
            return load_analyzer(folder, backend=backend, on_missing_face="error", backend_options=backend_options,
                                 device=device, dtype=dtype)
    return load_analyzer(model, backend=backend, on_missing_face="error", backend_options=backend_options,
                         device=device, dtype=dtype)


def _failure(status: str, message: str, task: Any) -> tuple[str, dict, None]:
    result = {
        "status": status, "error": message, "task": task if isinstance(task, str) else None,
        "aus": [], "emotion": None, "au_description": None, "emotion_description": None,
        "face_source": None, "face_box": None, "face_score": None, "landmarks": None, "flags": None,
        "image_size": None, "generation": None, "seconds": None,
    }
    return f"{NOT_ANALYSED} {message}", result, None


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not low <= number <= high:
        raise PhotoRequestError("bad_request", f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


class PhotoAnalyzer:
    """One photo in, `(description, result, annotated image)` out, never an exception: the server's request handler.

    Args:
        pipeline: a `FacialAffectAnalysisPipeline` (see `load_app_pipeline`); it is used by one request at a time.
        on_missing_face: the default for requests that do not choose (`"error"`, `"full_image"` or `"zeros"`).
        max_new_tokens: the default answer length.
        max_image_pixels: larger photos are refused with a message (before they are decoded).
    """

    def __init__(self, pipeline, on_missing_face: str = "error", max_new_tokens: int = 512,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_new_tokens_limit: int = 2048):
        if on_missing_face not in FACE_SOURCES:
            raise ValueError(f"on_missing_face must be one of {list(FACE_SOURCES)}, got {on_missing_face!r}")
        if not 1 <= max_new_tokens <= max_new_tokens_limit:
            raise ValueError(f"max_new_tokens must be from 1 to {max_new_tokens_limit}, got {max_new_tokens}")
        self.pipeline = pipeline
        self.on_missing_face = on_missing_face
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit
        self.max_image_pixels = max_image_pixels

    @property
    def backend(self) -> str | None:
        """The landmark backend's name (None when the model needs no facial prior)."""
        extractor = self.pipeline.processor.get_facial_prior_extractor()
        return None if extractor is None else extractor.backend

    def warm_up(self) -> None:
        """Run detection and one generated token on a synthetic face, so the landmark models are loaded (or their
        missing weights reported) when the server starts rather than on the first visitor's photo."""
        from .synthetic import EMOTION_PROTOTYPES, render_face

        face = render_face(EMOTION_PROTOTYPES["Happiness"], seed=3, size=224).image
        try:
            self.pipeline(face, tasks="emotion", max_new_tokens=1)
        except FaceNotFoundError:
            pass  # the landmark models are loaded all the same

    # ---- the request -------------------------------------------------------------------------------------------
    def analyze(self, image=None, task="both", max_new_tokens=None, decoding="greedy", temperature=0.7,
                top_p=0.9, on_missing_face=None) -> tuple[str, dict, Image.Image | None]:
        """Analyse one photo (a Gradio file payload, a path, a PIL image or an array).

        Returns the description (or a message starting with `NOT_ANALYSED`), the structured result (`status` says
        which), and the photo with the face box, landmarks, AUs and emotion drawn on it (None when nothing was
        analysed).
        """
        started = time.perf_counter()
        try:
            tasks = self._tasks(task)
            generation = self._generation(max_new_tokens, decoding, temperature, top_p)
            policy = self.on_missing_face if on_missing_face in (None, "") else on_missing_face
            if policy not in FACE_SOURCES:
                raise PhotoRequestError("bad_request", f"on_missing_face must be one of {list(FACE_SOURCES)}, "
                                                       f"got {policy!r}")
            photo, name = self._read_photo(image)
            result, face_source = self._run(photo, name, tasks, generation, policy)
        except PhotoRequestError as error:
            logger.info("analyze: %s (%s)", error.status, error)
            return _failure(error.status, str(error), task)
        except Exception as error:  # noqa: BLE001  (the server must answer, whatever went wrong)
            logger.exception("analyze failed")
            return _failure("error", f"The analysis failed: {type(error).__name__}: {error}", task)
        result = {"status": "ok", "error": None, "task": task, **result, "face_source": face_source,
                  "image_size": list(photo.size), "generation": generation,
                  "seconds": round(time.perf_counter() - started, 3)}
        logger.info("analyze: ok (%s, %.2f s)", name, result["seconds"])
        return self._description(result, tasks), result, draw_analysis(photo, result)

    def _tasks(self, task) -> tuple[str, ...]:
        if not isinstance(task, str) or task not in ("au", "emotion", "both"):
            raise PhotoRequestError("bad_request", f"task must be 'au', 'emotion' or 'both', got {task!r}")
        return normalize_tasks(task)

    def _generation(self, max_new_tokens, decoding, temperature, top_p) -> dict:
        tokens = self.max_new_tokens if max_new_tokens in (None, "") else max_new_tokens
        settings = {"max_new_tokens": _whole_number(tokens, "max_new_tokens", 1, self.max_new_tokens_limit)}
        if decoding == "greedy":
            settings["do_sample"] = False
        elif decoding == "sampling":
            try:
                temperature, top_p = float(temperature), float(top_p)
            except (TypeError, ValueError):
                raise PhotoRequestError("bad_request", f"temperature and top_p must be numbers, got "
                                                       f"{temperature!r} and {top_p!r}") from None
            if not (0.0 < temperature <= 10.0 and 0.0 < top_p <= 1.0):
                raise PhotoRequestError("bad_request", f"sampling needs 0 < temperature <= 10 and 0 < top_p <= 1, "
                                                       f"got {temperature} and {top_p}")
            settings.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            raise PhotoRequestError("bad_request", f"decoding must be 'greedy' or 'sampling', got {decoding!r}")
        return settings

    def _read_photo(self, image) -> tuple[Image.Image, str]:
        """An upright RGB photo and the name to use in messages; PhotoRequestError for anything unusable."""
        from .facial_prior import load_image

        if isinstance(image, dict):  # a Gradio file payload: {"path": ..., "orig_name": ...}
            path = image.get("path")
            name = image.get("orig_name") or (os.path.basename(path) if path else "")
            image = path
        elif isinstance(image, (str, os.PathLike)):
            name = os.path.basename(os.fspath(image))
        else:
            name = ""
        name = name or "the photo"
        if image is None or (isinstance(image, str) and not image):
            raise PhotoRequestError("no_image", "No photo given: upload one, take one with the webcam, or pick an "
                                                "example.")
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as probe:  # reads the header only: the size costs nothing
                        size = probe.size
            except Image.DecompressionBombError as error:  # so large that Pillow refuses to even open it
                raise PhotoRequestError("too_large", f"{name} is too large to analyse: {error} Downscale it to at "
                                                     f"most {self._megapixels()}.") from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
                cause = f"{type(error).__name__}: {error}".replace(path, name)
                raise PhotoRequestError("unreadable", f"Cannot read {name} as an image ({cause}).") from None
            self._check_size(size, name)
        try:
            photo = load_image(image)
        except (ValueError, TypeError, OSError) as error:
            if isinstance(image, (str, os.PathLike)):  # load_image's message names the file: name it as uploaded
                message = str(error).replace(os.fspath(image), name)
            else:
                message = f"Cannot read {name} as an image: {error}"
            raise PhotoRequestError("unreadable", message) from None
        self._check_size(photo.size, name)
        return photo, name

    def _megapixels(self) -> str:
        return f"{self.max_image_pixels / 1e6:g} megapixels (--max-image-pixels)"

    def _check_size(self, size: tuple[int, int], name: str) -> None:
        width, height = size
        if width * height > self.max_image_pixels:
            raise PhotoRequestError("too_large", f"{name} is {width} x {height} pixels, too large to analyse; "
                                                 f"downscale it to at most {self._megapixels()}.")

    def _run(self, photo: Image.Image, name: str, tasks, generation: dict, policy: str) -> tuple[dict, str | None]:
        settings = dict(generation)
        kwargs = {"tasks": tasks, "max_new_tokens": settings.pop("max_new_tokens"), "generate_kwargs": settings}
        if not self.pipeline.processor.use_facial_prior and self.backend is None:
            return self.pipeline(photo, **kwargs), None
        try:
            return self.pipeline(photo, **kwargs), "detected"
        except FaceNotFoundError:
            if policy == "error":
                raise PhotoRequestError("no_face", self.no_face_message(name)) from None
        if policy == "full_image":
            width, height = photo.size
            return self.pipeline({"image": photo, "face_box": [0.0, 0.0, float(width), float(height)]},
                                 **kwargs), FACE_SOURCES[policy]
        zeros = np.zeros((1, self.pipeline.model.config.facial_prior_dim), dtype=np.float32)
        return self.pipeline(photo, facial_priors=zeros, **kwargs), FACE_SOURCES[policy]

    def no_face_message(self, name: str) -> str:
        return (f"No face found in {name} (landmark backend {self.backend!r}), so it was not analysed. Try a photo "
                f"where the face is clearly visible, or choose what to do instead: on this page, Advanced → "
                f"'{MISSING_FACE_OPTION_LABEL}' ('Use the whole image as the face' or 'Use a zero facial prior'); "
                "in the API, on_missing_face='full_image' or 'zeros'; when starting the server, "
                "`emola app --on-missing-face full_image` (or zeros).")

    @staticmethod
    def _description(result: dict, tasks) -> str:
        texts = {"au": result["au_description"], "emotion": result["emotion_description"]}
        if len(tasks) == 1:
            return texts[tasks[0]]
        return f"Action units:\n{texts['au']}\n\nEmotion:\n{texts['emotion']}"


# ---- what the page shows next to the API's outputs ---------------------------------------------------------------
def au_table_rows(result: dict) -> list[list[str]]:
    """Rows of the page's AU table: `["AU6", "Cheek Raiser", the sentence that names it]`."""
    return [[f"AU{au['number']}", au["name"], au["sentence"]] for au in (result or {}).get("aus") or ()]


def emotion_text(result: dict) -> str:
    result = result or {}
    if result.get("status") != "ok":
        return ""
    if result.get("emotion"):
        return result["emotion"].capitalize()
    if result.get("emotion_description") is None:
        return "(not asked)"
    return "(the answer names no emotion)"


def status_markdown(result: dict) -> str:
    """One line above the results: what went wrong, or which face was used."""
    result = result or {}
    if result.get("status") in (None, ""):
        return ""
    if result["status"] != "ok":
        return f"**Not analysed ({result['status'].replace('_', ' ')}):** {result['error']}"
    width, height = result["image_size"]
    source = result.get("face_source")
    if source == "detected":
        box = ", ".join(f"{value:.0f}" for value in result["face_box"])
        score = "" if result.get("face_score") is None else f", detector score {result['face_score']:.2f}"
        face = f"face found at [{box}]{score}"
    elif source == "whole_image":
        face = "no face found: the whole image was used as the face"
    elif source == "zero_prior":
        face = "no face found: analysed with a zero facial prior"
    else:
        face = "the model uses no facial prior"
    return f"**Analysed** ({width} x {height} px; {face}; {result['seconds']:.1f} s)"


def example_images(directory: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """Example photos generated offline, as `(path, task, label)`: scikit-image's astronaut (when scikit-image is
    installed) and synthetic faces of `transformers_emola.synthetic`. Written once to `directory` (default: a
    folder in the temporary directory, where Gradio may serve files from)."""
    from .synthetic import EMOTION_PROTOTYPES, render_face

    folder = Path(directory) if directory is not None else Path(tempfile.gettempdir()) / "emola-app-examples"
    folder.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, Any, str, str]] = []
    try:
        import skimage.data

        images.append(("astronaut.png", skimage.data.astronaut(), "both", "Astronaut (scikit-image)"))
    except ImportError:
        logger.info("scikit-image is not installed: the astronaut example is left out")
    for emotion, seed in (("Happiness", 3), ("Surprise", 0)):
        face = render_face(EMOTION_PROTOTYPES[emotion], seed=seed, size=336, emotion=emotion)
        images.append((f"synthetic_{emotion.lower()}.png", face.image, "both", f"Synthetic face: {emotion.lower()}"))
    examples = []
    for filename, pixels, task, label in images:
        path = folder / filename
        if not path.is_file():
            partial = folder / f".{filename}.{os.getpid()}.partial.png"
            (Image.fromarray(pixels) if isinstance(pixels, np.ndarray) else pixels).save(partial)
            os.replace(partial, path)
        examples.append((str(path), task, label))
    return examples


def _intro(model_name: str, backend: str | None) -> str:
    if model_name == TINY_MODEL:
        model_line = ("**Model:** a tiny *random* EmoLA built offline (for tests and demos of this page: its "
                      "descriptions are gibberish). Start `emola app --model DIR_OR_HUB_ID` for real answers.")
    else:
        model_line = f"**Model:** `{model_name}`"
    landmark_line = "" if backend is None else f" · **Landmarks:** `{backend}`"
    note = f"\n\n*{DLIB_NOTE}*" if backend == "dlib" else ""
    return (
        "# EmoLA: facial affect analysis\n"
        "[EmoLA](https://arxiv.org/abs/2404.05052) (Li et al., ECCV 2024) describes the facial **action units "
        "(AUs)** and the **emotion** of a face. Upload a photo (or take one with the webcam), choose what to "
        "analyse and press **Analyze**: the page shows the face and landmarks the model was given, its description, "
        "the AUs it names and the emotion.\n\n"
        f"{model_line}{landmark_line}{note}"
    )


def build_app(
    model: str | os.PathLike | Any,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    on_missing_face: str = "error",
    *,
    device: str | int | None = None,
    dtype: str = "auto",
    max_new_tokens: int = 512,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_queue_size: int | None = 64,
    examples: bool = True,
    warm_up: bool = True,
    delete_cache: tuple[int, int] | None = (3600, 3600),
    model_name: str | None = None,
):
    """The EmoLA page as a `gradio.Blocks` (call `.launch()` on it), with the model loaded once and requests queued.

    Args:
        model: a checkpoint folder or Hub id, `"tiny"` (a tiny random model, built offline: for tests and demos),
            or a ready `facial-affect-analysis` pipeline (its processor's extractor is used as it is).
        backend / backend_options: the landmark backend and its options (default: the processor's saved one, else
            the model's `facial_prior_backend`; `"dlib"` is for non-commercial use only).
        on_missing_face: the page's default when no face is found: `"error"` (say so), `"full_image"`, `"zeros"`.
        device / dtype: where and in which precision the model runs (default: cuda if available; the checkpoint's).
        max_new_tokens: the default answer length; `max_image_pixels`: larger photos are refused with a message.
        max_queue_size: requests waiting beyond this are turned away (None: no limit).
        examples: show the offline example photos (`example_images`).
        warm_up: analyse a synthetic face before serving, so a missing landmark model fails here, not on a visitor.
        delete_cache: `(every, older_than)` seconds: Gradio deletes uploaded photos and results older than that
            (faces are personal data; None keeps them until the server stops).
        model_name: how the page names the model (default: `model`).
    """
    gr = _import_gradio()
    from .pipeline_facial_affect import FacialAffectAnalysisPipeline

    if isinstance(model, FacialAffectAnalysisPipeline):
        if backend is not None or backend_options:
            raise ValueError("backend / backend_options apply to a model loaded by build_app; for a ready pipeline "
                             "set its processor's facial-prior extractor instead")
        pipeline, default_name = model, getattr(model.model, "name_or_path", "") or "EmoLA"
    else:
        pipeline = load_app_pipeline(model, backend=backend, backend_options=backend_options, device=device,
                                     dtype=dtype)
        default_name = os.fspath(model)
    analyzer = PhotoAnalyzer(pipeline, on_missing_face=on_missing_face, max_new_tokens=max_new_tokens,
                             max_image_pixels=max_image_pixels)
    if warm_up:
        analyzer.warm_up()

    def analyze(image, task, max_new_tokens, decoding, temperature, top_p, on_missing_face):
        return analyzer.analyze(image, task, max_new_tokens, decoding, temperature, top_p, on_missing_face)

    def show_details(result):
        return status_markdown(result), au_table_rows(result), emotion_text(result)

    with gr.Blocks(title="EmoLA: facial affect analysis", analytics_enabled=False, delete_cache=delete_cache) as app:
        gr.Markdown(_intro(model_name or default_name, analyzer.backend), elem_id="emola-intro")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(label="Face photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                 elem_id="emola-photo")
                task = gr.Radio(TASK_CHOICES, value="both", label="Analyse", elem_id="emola-task")
                with gr.Accordion("Advanced", open=False, elem_id="emola-advanced"):
                    tokens = gr.Slider(1, analyzer.max_new_tokens_limit, value=max_new_tokens, step=1,
                                       label="Max new tokens (per question)")
                    decoding = gr.Radio(DECODING_CHOICES, value="greedy", label="Decoding")
                    temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling)")
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (sampling)")
                    missing_face = gr.Radio(MISSING_FACE_CHOICES, value=on_missing_face,
                                            label=MISSING_FACE_OPTION_LABEL, elem_id="emola-missing-face")
                run = gr.Button("Analyze", variant="primary", elem_id="emola-analyze")
                if examples:
                    shown = example_images()
                    gr.Examples([[path, example_task] for path, example_task, _ in shown], inputs=[photo, task],
                                example_labels=[label for _, _, label in shown], label="Examples")
            with gr.Column(scale=1):
                status = gr.Markdown(elem_id="emola-status")
                annotated = gr.Image(label="Face box, landmarks and the face used", type="pil", format="png",
                                     interactive=False, elem_id="emola-annotated")
                emotion = gr.Textbox(label="Emotion", interactive=False, elem_id="emola-emotion")
                aus = gr.Dataframe(headers=AU_TABLE_HEADERS, value=[], label="Action units",
                                   interactive=False, wrap=True, elem_id="emola-aus")
                description = gr.Textbox(label="The model's description", lines=8, interactive=False,
                                         elem_id="emola-description")
                with gr.Accordion("Result as JSON (what /analyze returns)", open=False):
                    result = gr.JSON(label="Result", elem_id="emola-result")
        run.click(
            analyze,
            inputs=[photo, task, tokens, decoding, temperature, top_p, missing_face],
            outputs=[description, result, annotated],
            api_name=ANALYZE_API_NAME,
            api_description="Analyse one face photo: returns (description, result with aus/emotion, annotated "
                            "image). task: 'au', 'emotion' or 'both'.",
            preprocess=False,  # the photo is read by PhotoAnalyzer, so unreadable files get a message, not a 500
            concurrency_limit=1,
        ).then(show_details, inputs=[result], outputs=[status, aus, emotion], api_visibility="private")
    app.queue(max_size=max_queue_size, default_concurrency_limit=1)
    return app


__all__ = [
    "ANALYZE_API_NAME",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "FAILURE_STATUSES",
    "NOT_ANALYSED",
    "PhotoAnalyzer",
    "PhotoRequestError",
    "TINY_MODEL",
    "au_table_rows",
    "build_app",
    "emotion_text",
    "example_images",
    "load_app_pipeline",
    "status_markdown",
]
