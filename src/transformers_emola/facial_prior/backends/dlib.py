"""The "dlib" backend: dlib's HOG face detector and its 68-point shape predictor (fully offline).

Licence: the predictor (shipped by `face_recognition_models`) is trained on iBUG 300-W, whose licence forbids
commercial use; a warning says so once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import numpy as np

from ..faces import FaceDetection
from .base import COMMON_DETECTOR_OPTIONS, DetectorBackend, require

__all__ = ["DLIB_LICENSE_NOTE", "DlibBackend"]

DLIB_LICENSE_NOTE = (
    "dlib's 68-point shape predictor (shipped by face_recognition_models) is trained on iBUG 300-W, whose licence "
    "forbids commercial use. Use the 'face_alignment' backend for commercial work."
)
license_warned = False  # the licence note is shown once per process


@functools.lru_cache(maxsize=4)
def _load_dlib_predictor(path: str):
    """The 68-point model is ~100 MB and takes seconds to parse: share it between extractors."""
    import dlib

    return dlib.shape_predictor(path)


class DlibBackend(DetectorBackend):
    """dlib HOG face detector + the 68-point shape predictor shipped in `face_recognition_models`.

    Licence: that predictor is trained on iBUG 300-W, whose licence forbids commercial use (warned once at run
    time); prefer the "face_alignment" backend for commercial work."""

    name = "dlib"
    defaults = {**COMMON_DETECTOR_OPTIONS, "upsample": 1, "adjust_threshold": 0.0, "predictor_path": None}
    runtime = ("detector", "predictor")

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        self.dlib = require("dlib", "dlib")
        global license_warned
        if not license_warned:
            license_warned = True
            warnings.warn(DLIB_LICENSE_NOTE, UserWarning, stacklevel=4)

    @staticmethod
    def default_predictor_path() -> str:
        # face_recognition_models' __init__ imports pkg_resources (gone from recent setuptools): find it without
        # importing it.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError('face_recognition_models is needed for the dlib backend: '
                              'pip install "transformers-emola[dlib]"')
        root = list(spec.submodule_search_locations)[0]
        return os.path.join(root, "models", "shape_predictor_68_face_landmarks.dat")

    @property
    def detector(self):
        if self._detector is None:
            self._detector = self.dlib.get_frontal_face_detector()
        return self._detector

    @property
    def predictor(self):
        if self._predictor is None:
            path = self.options["predictor_path"] or self.default_predictor_path()
            if not os.path.isfile(path):
                raise FileNotFoundError(f"dlib 68-point shape predictor not found: {path}")
            self._predictor = _load_dlib_predictor(os.path.abspath(path))
        return self._predictor

    def detect_faces(self, image):
        rectangles, scores, _ = self.detector.run(image, self.options["upsample"], self.options["adjust_threshold"])
        return [FaceDetection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
                for r, s in zip(rectangles, scores)]

    def predict_landmarks(self, images, boxes):
        landmarks = []
        for image, (x0, y0, x1, y1) in zip(images, boxes):
            rectangle = self.dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = self.predictor(image, rectangle)
            landmarks.append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32))
        return landmarks
