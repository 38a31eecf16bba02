"""`pipeline("facial-affect-analysis")`: face images in, EmoLA's explanation *and* machine-readable results out.

For every image the pipeline finds the face with the processor's `FacialPriorExtractor` (the same detection gives
the prior vector the model sees and the box / landmarks it returns, so what you draw is what the model used), asks
the official FABA-Bench AU and/or emotion question in one left-padded `generate` batch, and reads the answers with
the strict REGE parsers (`metrics.parsing.parse_affect`): AUs with their FACS names and supporting sentences, the
emotion class, and the parser's flags (unparsed, negated mentions ignored).
"""

from __future__ import annotations

import os
from collections.abc import Sized
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForImageTextToText, GenerationConfig, Pipeline
from transformers.pipelines.base import no_collate_fn
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .faba import TASK_QUESTIONS, TASKS, normalize_tasks
from .facial_prior import as_prior_array, load_image
from .inference import generate_answers
from .metrics.parsing import parse_affect

TASK_NAME = "facial-affect-analysis"


def resolve_local_image(image: Any) -> Any:
    """`file://` URLs -> local paths; web URLs are refused (this pipeline never downloads); the rest is unchanged."""
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, str):
        if image.startswith("file://"):
            parsed = urlparse(image)
            path = unquote(parsed.path)
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"file URL {image!r} names another host; only local files are read")
            return path
        if image.startswith(("http://", "https://")):
            raise ValueError(f"{image!r} is a web URL: the facial-affect-analysis pipeline reads local files only "
                             "(download the image first, or pass a PIL.Image)")
    return image


def _collate_items(items: list[dict]) -> dict:
    return {"batch": items}


def _is_single_input(image: Any) -> bool:
    return isinstance(image, (str, os.PathLike, dict, np.ndarray)) or torch.is_tensor(image) or hasattr(image, "mode")


class FacialAffectAnalysisPipeline(Pipeline):
    r"""
    Facial affective behaviour analysis with EmoLA: per image, the Action Units (number, FACS name and the sentence
    that supports each), the emotion class, the generated explanations, and the face box and landmarks the facial
    prior was computed from.

    Inputs: a `PIL.Image`, a numpy array, a local path or `file://` URL, a dict `{"image": ..., "facial_prior":
    ..., "face_box": ...}`, or a list of these (batched with `batch_size=`). Call parameters:

    - `tasks` (`"both"` (default), `"au"` or `"emotion"`): which FABA-Bench question(s) to ask.
    - `au_question` / `emotion_question` (`str`): custom prompts instead of the official questions.
    - `facial_priors` (`(num_images, dim)` array): priors to use instead of running the extractor (then
      `face_box` and `landmarks` are `None`). Needed when the processor has no facial-prior extractor.
    - `max_new_tokens` (default 512), `generate_kwargs`: generation settings; decoding is greedy (as in FABA-Bench
      evaluation) unless `do_sample=True` is given.

    Returns per image a dict with `aus` (list of `{"number", "name", "sentence"}`), `emotion` (one of
    `metrics.parsing.EMOTIONS` or `None`), `au_description`, `emotion_description`, `face_box` (`[x0, y0, x1, y1]`
    pixels), `face_score`, `landmarks` (`[[x, y], ...]` pixels) and `flags` (`au_unparsed`, `emotion_unparsed`,
    `negated_aus`, `negated_emotion_keywords`).

    Example:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from transformers import pipeline
    >>> import transformers_emola
    >>> from transformers_emola.pipeline_facial_affect import register_pipeline
    >>> from transformers_emola import build_tiny_emola
    >>> register_pipeline()
    >>> model, processor = build_tiny_emola()
    >>> analyzer = pipeline("facial-affect-analysis", model=model, processor=processor)
    >>> result = analyzer(Image.new("RGB", (32, 32)), facial_priors=np.zeros((1, 136)), max_new_tokens=4)
    >>> sorted(result)
    ['au_description', 'aus', 'emotion', 'emotion_description', 'face_box', 'face_score', 'flags', 'landmarks']

    ```"""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    _pipeline_calls_generate = True
    # FABA-Instruct AU descriptions average 207 words (~300 tokens); leave room so they are not cut mid-sentence.
    _default_generation_config = GenerationConfig(max_new_tokens=512)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "use_facial_prior"):
            raise ValueError(
                f"The {TASK_NAME} pipeline needs an EmolaProcessor (got {type(self.processor).__name__}); load the "
                "model directory with its processor, or pass processor=EmolaProcessor.from_pretrained(...)"
            )

    # ---- parameters --------------------------------------------------------------------------------------------
    def _sanitize_parameters(
        self,
        tasks=None,
        au_question=None,
        emotion_question=None,
        max_new_tokens=None,
        generate_kwargs=None,
        **unexpected,
    ):
        if unexpected:
            raise TypeError(f"{TASK_NAME} pipeline got unexpected parameter(s) {sorted(unexpected)}; valid: tasks, "
                            "au_question, emotion_question, facial_priors, max_new_tokens, generate_kwargs")
        forward_params: dict[str, Any] = {}
        if tasks is not None:
            forward_params["tasks"] = normalize_tasks(tasks)
        questions = {}
        for task, question in (("au", au_question), ("emotion", emotion_question)):
            if question is not None:
                if not isinstance(question, str) or not question.strip():
                    raise ValueError(f"{task}_question must be a non-empty string, got {question!r}")
                questions[task] = question
        if questions:
            forward_params["questions"] = questions
        if generate_kwargs is not None or max_new_tokens is not None:
            generate_kwargs = dict(generate_kwargs or {})
            if max_new_tokens is not None:
                if "max_new_tokens" in generate_kwargs:
                    raise ValueError("max_new_tokens is given twice: as a parameter and in generate_kwargs")
                generate_kwargs["max_new_tokens"] = max_new_tokens
            forward_params["generate_kwargs"] = generate_kwargs
        return {}, forward_params, {}

    def __call__(self, images, facial_priors=None, **kwargs):
        """Analyse one image or a list of images (see the class docstring for inputs, parameters and outputs)."""
        if isinstance(images, tuple):
            images = list(images)
        single = not isinstance(images, list)
        if facial_priors is not None:
            if single and not _is_single_input(images):
                raise ValueError("facial_priors can be given with one image or a list of images; for a dataset or "
                                 "generator yield dicts {'image': ..., 'facial_prior': ...} instead")
            image_list = [images] if single else images
            priors = as_prior_array(facial_priors, num_images=len(image_list))
            items = []
            for image, prior in zip(image_list, priors):
                item = dict(image) if isinstance(image, dict) else {"image": image}
                item["facial_prior"] = prior
                items.append(item)
            images = items[0] if single else items
        return super().__call__(images, **kwargs)

    # ---- steps -------------------------------------------------------------------------------------------------
    def load(self, inputs) -> dict:
        """Read one input as an upright RGB image; returns `{"image", "path", "source", "facial_prior", "face_box"}`
        (`path`: the local file, or None for an in-memory image)."""
        item = dict(inputs) if isinstance(inputs, dict) else {"image": inputs}
        if "image" not in item:
            raise ValueError(f"a dict input needs an 'image' key, got keys {sorted(item)}")
        unknown = sorted(set(item) - {"image", "facial_prior", "face_box"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in a dict input; valid: image, facial_prior, face_box")
        raw = resolve_local_image(item["image"])
        image = load_image(raw)
        source = raw if isinstance(raw, str) else (getattr(image, "filename", "") or "image")
        prior = item.get("facial_prior")
        if prior is not None:
            prior = as_prior_array(prior, num_images=1, name=source)[0]
        return {"image": image, "path": raw if isinstance(raw, str) else None, "source": source,
                "facial_prior": prior, "face_box": item.get("face_box")}

    def detect(self, loaded: dict) -> dict:
        """Add `face` (a `FaceLandmarks` or `None`) and the `facial_prior` the model will get to a `load()` result.

        Priors given by the caller win (no detection). Otherwise the processor's extractor runs once and its
        prior and landmarks are used together. Raises `facial_prior.FaceNotFoundError` when it finds no face.
        """
        item = dict(loaded)
        item["face"] = None
        use_prior = bool(self.processor.use_facial_prior)
        if item["facial_prior"] is None:
            extractor = self.processor.get_facial_prior_extractor()
            if extractor is None:
                if use_prior:
                    raise ValueError(
                        f"No facial prior for {item['source']}: the processor has no facial-prior extractor. Pass "
                        "facial_priors=(num_images, dim), or configure one: processor.set_facial_prior_extractor("
                        "FacialPriorExtractor('face_alignment')) (see docs/facial_priors.md)"
                    )
            else:
                boxes = None if item["face_box"] is None else [item["face_box"]]
                # A file goes to the extractor as a path: insightface_2d106 decodes it with cv2.imread, as the
                # official EmoLA extraction did (PIL decodes some JPEGs differently).
                face = extractor.detect([item.get("path") or item["image"]], face_boxes=boxes)[0]
                item["face"] = face
                item["facial_prior"] = face.prior
        if use_prior:
            config = self.model.config
            item["facial_prior"] = as_prior_array(item["facial_prior"], num_images=1, dim=config.facial_prior_dim,
                                                  backend=config.facial_prior_backend, name=item["source"])[0]
        return item

    def preprocess(self, inputs) -> dict:
        return self.detect(self.load(inputs))

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        # As Pipeline.get_iterator, but batches are lists of preprocessed images: the processor pads the prompts
        # of a batch together (left padding), which the default tensor collate cannot do for several questions.
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            num_workers = min(num_workers, 1)
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        collate_fn = no_collate_fn if batch_size == 1 else _collate_items
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=collate_fn)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def generate_descriptions(
        self, items: list[dict], tasks=TASKS, questions: dict | None = None, generate_kwargs=None
    ) -> list[dict[str, str]]:
        """One generate batch for all (image, question) pairs of `items` (outputs of `preprocess`)."""
        questions = {**TASK_QUESTIONS, **(questions or {})}
        images, prompts, priors = [], [], []
        for item in items:
            for task in tasks:
                images.append(item["image"])
                prompts.append(questions[task])
                priors.append(item["facial_prior"])
        use_prior = bool(self.processor.use_facial_prior)
        kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        config = kwargs.get("generation_config")
        if config is not None and "do_sample" not in kwargs:
            kwargs["do_sample"] = config.do_sample
        answers = generate_answers(
            self.model, self.processor, images, prompts,
            facial_priors=np.stack(priors) if use_prior else None, **kwargs,
        )
        step = len(tasks)
        return [dict(zip(tasks, answers[i * step : (i + 1) * step])) for i in range(len(items))]

    def _forward(self, model_inputs, tasks=TASKS, questions=None, generate_kwargs=None):
        batched = "batch" in model_inputs
        items = model_inputs["batch"] if batched else [model_inputs]
        descriptions = self.generate_descriptions(items, tasks, questions, generate_kwargs)
        outputs = {"descriptions": descriptions, "face": [item["face"] for item in items]}
        return outputs if batched else {key: value[0] for key, value in outputs.items()}

    def postprocess(self, model_outputs) -> dict:
        return build_result(model_outputs["descriptions"], model_outputs["face"])


def build_result(descriptions: dict[str, str], face=None) -> dict:
    """The pipeline's per-image output from the generated texts (`{"au": ..., "emotion": ...}`) and the face."""
    au_text, emotion_text = descriptions.get("au"), descriptions.get("emotion")
    au = parse_affect(au_text, task="au") if au_text is not None else None
    emotion = parse_affect(emotion_text, task="emotion") if emotion_text is not None else None
    landmarks = getattr(face, "landmarks", None)
    box = getattr(face, "box", None)
    return {
        "aus": [{"number": m.number, "name": m.name, "sentence": m.sentence} for m in au.aus] if au else [],
        "emotion": emotion.emotion.name if emotion else None,
        "au_description": au_text,
        "emotion_description": emotion_text,
        "face_box": None if box is None else [float(v) for v in box],
        "face_score": None if getattr(face, "score", None) is None else float(face.score),
        "landmarks": None if landmarks is None else np.asarray(landmarks, dtype=float).round(2).tolist(),
        "flags": {
            "au_unparsed": au.unparsed if au else None,
            "emotion_unparsed": emotion.unparsed if emotion else None,
            "negated_aus": list(au.negated_aus) if au else [],
            "negated_emotion_keywords": list(emotion.negated_emotion_keywords) if emotion else [],
        },
    }


def register_pipeline() -> None:
    """Make `transformers.pipeline("facial-affect-analysis")` build a `FacialAffectAnalysisPipeline` (idempotent)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK_NAME)
    if registered is not None and registered.get("impl") is FacialAffectAnalysisPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME,
        pipeline_class=FacialAffectAnalysisPipeline,
        pt_model=AutoModelForImageTextToText,
        type="multimodal",
    )


__all__ = ["FacialAffectAnalysisPipeline", "build_result", "register_pipeline"]
