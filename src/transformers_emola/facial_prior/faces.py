"""What a backend finds in an image: the face boxes, the one face chosen, and the prior computed from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FaceDetection", "FaceLandmarks", "parse_face_boxes", "rank_detections"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceDetection:
    """One face box `(x0, y0, x1, y1)` in pixels, with the detector's score when it gives one."""

    box: Box
    score: float | None = None


@dataclass
class FaceLandmarks:
    """The face chosen in one image and the prior computed from it.

    `landmarks` are pixel coordinates in the original (EXIF-upright) image; `box` is (x0, y0, x1, y1) in pixels.
    Both are `None` when the prior did not come from a face (the "zeros" policy, precomputed files).
    `detections` lists every face found (by the detector, or given as boxes), best first; the prior comes from
    `detections[face_index]`, and `face_index` is `None` when it does not come from one of them (the whole image
    or a zero prior under `on_missing_face`, a precomputed file).
    """

    prior: np.ndarray
    landmarks: np.ndarray | None
    box: Box | None
    score: float | None
    source: str
    num_faces: int = 0
    image_size: tuple[int, int] | None = None  # (width, height)
    detections: tuple[FaceDetection, ...] = ()
    face_index: int | None = None


def parse_face_boxes(boxes: Any, name: str) -> list[FaceDetection]:
    """(4,), (5,), (M, 4) or (M, 5) boxes (x0, y0, x1, y1[, score]) -> detections; errors name the image."""
    if isinstance(boxes, (list, tuple)) and boxes and np.ndim(boxes[0]) == 1:
        rows = [np.asarray(row, dtype=np.float64) for row in boxes]  # rows may mix 4 and 5 values
    else:
        array = np.asarray(boxes, dtype=np.float64)
        if array.size == 0:
            return []
        rows = list(array[None, :] if array.ndim == 1 else array) if array.ndim in (1, 2) else [array]
    detections = []
    for row in rows:
        if row.ndim != 1 or len(row) not in (4, 5):
            raise ValueError(f"{name}: face boxes must be (x0, y0, x1, y1[, score]) rows, i.e. of shape (4,), (5,), "
                             f"(M, 4) or (M, 5); got a row of shape {row.shape}")
        x0, y0, x1, y1 = (float(v) for v in row[:4])
        if not np.isfinite(row).all() or x1 <= x0 or y1 <= y0:
            raise ValueError(f"{name}: invalid face box {row.tolist()} (need finite x0 < x1 and y0 < y1)")
        detections.append(FaceDetection((x0, y0, x1, y1), float(row[4]) if len(row) == 5 else None))
    return detections


def rank_detections(detections: list[FaceDetection]) -> list[FaceDetection]:
    """Highest detector score first; boxes without a score rank after scored ones, larger first."""

    def key(detection):
        x0, y0, x1, y1 = detection.box
        score = detection.score if detection.score is not None else -np.inf
        return (-score, -(x1 - x0) * (y1 - y0))

    return sorted(detections, key=key)
