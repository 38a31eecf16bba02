"""What every backend shares: its options, and for the detector-based ones the face search and the missing-face policy."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
from PIL import Image

from ...faba import FACIAL_PRIOR_DIMS
from ..errors import FaceNotFoundError
from ..faces import FaceDetection, FaceLandmarks, parse_face_boxes, rank_detections
from ..images import load_image
from ..priors import normalize_landmarks

__all__ = ["Backend", "COMMON_DETECTOR_OPTIONS", "DetectorBackend", "require"]


def require(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module!r} is needed for this facial-prior backend: pip install \"transformers-emola[{extra}]\""
        ) from error


class Backend:
    """One way of computing priors. `defaults` lists the JSON-serialisable options, `runtime` the objects that
    may be injected (models already built, e.g. in tests) and are never saved."""

    name: str = ""
    defaults: dict[str, Any] = {}
    runtime: tuple[str, ...] = ()

    def __init__(self, options: dict[str, Any], runtime: dict[str, Any]):
        self.options = options
        for key in self.runtime:
            setattr(self, f"_{key}", runtime.get(key))

    @property
    def dim(self) -> int | None:
        return FACIAL_PRIOR_DIMS.get(self.name)

    def process(self, images: list, sources: list[str], face_boxes: list) -> list[FaceLandmarks]:
        raise NotImplementedError


COMMON_DETECTOR_OPTIONS = {
    "on_missing_face": "error",
    "face_index": 0,
    "batch_size": 8,
    "detection_max_side": 1024,
}


class DetectorBackend(Backend):
    """Backends that find faces, pick one per image and regress 68 landmarks inside its box."""

    def detect_faces(self, image: np.ndarray) -> list[FaceDetection]:
        raise NotImplementedError

    def predict_landmarks(self, images: list[np.ndarray], boxes: list[tuple]) -> list[np.ndarray]:
        raise NotImplementedError

    def _detections(self, array: np.ndarray, boxes: Any, source: str) -> list[FaceDetection]:
        if boxes is not None:
            return parse_face_boxes(boxes, source)
        height, width = array.shape[:2]
        max_side = self.options["detection_max_side"]
        if max_side and max(height, width) > max_side:
            # Detectors are slow and memory-hungry on huge photos; find the face on a smaller copy, then
            # regress the landmarks on the full-resolution image.
            factor = max_side / max(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
            scale_x, scale_y = width / size[0], height / size[1]
            return [FaceDetection((d.box[0] * scale_x, d.box[1] * scale_y, d.box[2] * scale_x, d.box[3] * scale_y),
                                  d.score) for d in self.detect_faces(small)]
        return self.detect_faces(array)

    def process(self, images, sources, face_boxes):
        policy, face_index = self.options["on_missing_face"], self.options["face_index"]
        results: list[FaceLandmarks | None] = [None] * len(images)
        todo: list[tuple[int, np.ndarray, FaceDetection, tuple[FaceDetection, ...], int | None]] = []
        for i, (image, source, boxes) in enumerate(zip(images, sources, face_boxes)):
            array = np.array(load_image(image))
            height, width = array.shape[:2]
            detections = tuple(rank_detections(self._detections(array, boxes, source)))
            if face_index < len(detections):
                todo.append((i, array, detections[face_index], detections, face_index))
                continue
            reason = (f"No face found in {source}" if not detections else
                      f"Only {len(detections)} face(s) found in {source}, but face_index={face_index}")
            if policy == "error":
                raise FaceNotFoundError(f"{reason} (backend {self.name!r})", source, len(detections))
            if policy == "full_image":
                todo.append((i, array, FaceDetection((0.0, 0.0, float(width), float(height))), detections, None))
            else:
                warnings.warn(f"{reason}; using a zero facial prior", stacklevel=4)
                results[i] = FaceLandmarks(np.zeros(self.dim, dtype=np.float32), None, None, None, source,
                                           len(detections), (width, height), detections)
        if todo:
            all_landmarks = self.predict_landmarks([item[1] for item in todo], [item[2].box for item in todo])
            for (i, array, chosen, detections, index), landmarks in zip(todo, all_landmarks):
                landmarks = np.asarray(landmarks, dtype=np.float32)
                results[i] = FaceLandmarks(normalize_landmarks(landmarks), landmarks, tuple(chosen.box), chosen.score,
                                           sources[i], len(detections), (array.shape[1], array.shape[0]), detections,
                                           index)
        return results
