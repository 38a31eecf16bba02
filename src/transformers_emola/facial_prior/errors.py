"""The two failures of prior extraction that a caller must tell apart from a bad image.

Each keeps `reason` (what happened, in plain words) apart from the fix, because the fix is worded differently for
a Python caller (`on_missing_face="zeros"`) and on the command line (`--on-missing-face zeros`): `str(error)` gives
the Python wording, `emola`'s commands word `reason` and `suggested_options` as options.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FaceNotFoundError", "FacialPriorWeightsError"]


class FaceNotFoundError(ValueError):
    """A landmark backend found no face (or fewer than `face_index + 1`) in an image, under `on_missing_face="error"`.

    Attributes:
        reason: e.g. "No face found in photo.jpg (backend 'dlib')".
        source: the image's name.
        num_faces: how many faces were found.
    """

    def __init__(self, reason: str, source: str = "", num_faces: int = 0):
        self.reason = reason
        self.source = source
        self.num_faces = num_faces
        super().__init__(f"{reason}; use on_missing_face='full_image' or 'zeros' to get a prior anyway, or pass "
                         "face_boxes")


class FacialPriorWeightsError(OSError):
    """A backend's model files are neither found nor downloadable (an offline machine, a file not shipped).

    A set-up problem, not a bad image: batch jobs stop at once instead of failing every image the same way.

    Attributes:
        reason: what is missing and where it was looked for.
        suggested_options: backend options that point the backend at the files, e.g. `{"model_path": "..."}`.
        python_hint: a further fix only a Python caller has (e.g. injecting a model built elsewhere).
    """

    def __init__(self, reason: str, suggested_options: dict[str, Any] | None = None, python_hint: str = ""):
        self.reason = reason
        self.suggested_options = dict(suggested_options or {})
        self.python_hint = python_hint
        message = reason
        if self.suggested_options:
            given = ", ".join(f"{key}={value!r}" for key, value in self.suggested_options.items())
            message += f"\nTo use files you have, pass {given}"
        if python_hint:
            message += f"\n{python_hint}"
        super().__init__(message)
