"""Drawing what a backend saw: every face it found, the one the prior comes from, and its landmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .faces import FaceLandmarks
from .images import ImageInput, load_image

__all__ = ["CHOSEN_COLOUR", "LANDMARK_COLOUR", "OTHER_FACE_COLOUR", "draw_landmarks"]

CHOSEN_COLOUR = (0, 255, 0)  # the box of the face the prior comes from
OTHER_FACE_COLOUR = (255, 200, 0)  # boxes of the other faces found
LANDMARK_COLOUR = (255, 0, 0)
CONTOUR_COLOUR = (0, 255, 255)

# iBUG 68-point contours: jaw, brows, nose bridge, lower nose, eyes, outer and inner lips; (start, stop, closed).
_CONTOURS_68 = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
                (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]


def draw_landmarks(image: ImageInput, faces: FaceLandmarks | Sequence[FaceLandmarks]) -> Image.Image:
    """Draw, on a copy of `image`, every face a backend found and what the prior was computed from.

    The face the prior comes from gets a thick green box and its 68-point contours (cyan) and landmarks (red); the
    other faces found (`FaceLandmarks.detections`) get a thin orange box. Each box is labelled with its rank
    (`#1` = highest detector score) and score.

    Example:
    ```python
    >>> import numpy as np
    >>> from transformers_emola.facial_prior import FaceLandmarks, draw_landmarks
    >>> face = FaceLandmarks(np.zeros(4), np.array([[10.0, 10.0], [20.0, 12.0]]), (5, 5, 25, 25), 1.0, "demo")
    >>> draw_landmarks(np.zeros((32, 32, 3), np.uint8), face).getpixel((10, 10))
    (255, 0, 0)

    ```
    """
    canvas = load_image(image).copy()
    if isinstance(faces, FaceLandmarks):
        faces = [faces]
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 256))
    radius = max(1, round(min(canvas.size) / 300))
    for face in faces:
        for rank, detection in enumerate(face.detections):
            if rank != face.face_index:
                draw.rectangle([float(v) for v in detection.box], outline=OTHER_FACE_COLOUR, width=max(1, width // 2))
                _label(draw, detection.box, rank, detection.score, OTHER_FACE_COLOUR)
        if face.box is not None:
            draw.rectangle([float(v) for v in face.box], outline=CHOSEN_COLOUR, width=width)
            _label(draw, face.box, face.face_index, face.score, CHOSEN_COLOUR)
        if face.landmarks is None:
            continue
        points = [tuple(float(v) for v in p) for p in np.asarray(face.landmarks)[:, :2]]
        if len(points) == 68:
            for start, stop, closed in _CONTOURS_68:
                line = points[start:stop] + (points[start : start + 1] if closed else [])
                draw.line(line, fill=CONTOUR_COLOUR, width=width)
        for x, y in points:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=LANDMARK_COLOUR)
    return canvas


def _label(draw: ImageDraw.ImageDraw, box, rank: int | None, score: float | None, colour) -> None:
    parts = ([] if rank is None else [f"#{rank + 1}"]) + ([] if score is None else [f"{score:.2f}"])
    if parts:
        draw.text((box[0] + 2, box[1] + 2), " ".join(parts), fill=colour)
