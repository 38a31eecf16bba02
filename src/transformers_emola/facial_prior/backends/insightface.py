"""The "insightface_2d106" backend: InsightFace's `2d106det.onnx`, fed exactly as the official EmoLA code (212 numbers).

The released EmoLA checkpoints were trained on these features. The ONNX file is not redistributed here.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import FacialPriorWeightsError
from ..faces import FaceLandmarks, parse_face_boxes, rank_detections
from ..images import load_image
from .base import Backend, require

__all__ = ["InsightFace2d106Backend"]


class InsightFace2d106Backend(Backend):
    """InsightFace `2d106det.onnx` fed exactly as EmoLA's `feature_extraction/landmark/landmark_features.py`:
    whole image, BGR, `cv2.resize` to 192x192 (INTER_LINEAR), /255, CHW float32; the prior is `output[0][0]`.
    No face detection (FABA images are face crops); `face_boxes` crops the image first."""

    name = "insightface_2d106"
    defaults = {"model_path": None, "providers": ["CPUExecutionProvider"], "batch_size": 8}
    runtime = ("session",)
    input_size = 192

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        self.cv2 = require("cv2", "insightface")
        if self._session is None:
            path = options["model_path"]
            if path is None:
                raise FacialPriorWeightsError(
                    "The insightface_2d106 backend needs InsightFace's landmark model 2d106det.onnx, which is not "
                    "shipped with transformers-emola: take it from InsightFace's model zoo (e.g. inside the buffalo_l "
                    "pack).", suggested_options={"model_path": "path/to/2d106det.onnx"},
                )
            if not os.path.isfile(path):
                raise FileNotFoundError(f"InsightFace landmark model not found: {path}")
            ort = require("onnxruntime", "insightface")
            try:
                self._session = ort.InferenceSession(os.fspath(path), providers=list(options["providers"]))
            except Exception as error:  # onnxruntime raises its own exception types for corrupt files
                raise ValueError(f"Cannot load the ONNX model {path}: {error}") from error
        model_input = self._session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(shape[1:], (3, 192, 192))):
            raise ValueError(f"{options['model_path'] or 'the ONNX session'}: expected an input of shape "
                             f"(N, 3, 192, 192) like 2d106det.onnx, got {shape}")
        self.dynamic_batch = not isinstance(shape[0], int)

    def _bgr(self, image, source: str) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            # cv2.imread, as the official code: same decoder, same handling of alpha / 16-bit / EXIF.
            if not os.path.exists(image):
                raise FileNotFoundError(f"Image file not found: {os.fspath(image)}")
            bgr = self.cv2.imread(os.fspath(image))
            if bgr is not None:
                return bgr
        return np.ascontiguousarray(np.asarray(load_image(image))[:, :, ::-1])

    def preprocess(self, image, source: str, box=None) -> tuple[np.ndarray, tuple, tuple[int, int]]:
        """-> (3, 192, 192) float32 network input, the (x0, y0, x1, y1) region it covers, the image size."""
        bgr = self._bgr(image, source)
        height, width = bgr.shape[:2]
        region = (0.0, 0.0, float(width), float(height))
        if box is not None:
            candidates = rank_detections(parse_face_boxes(box, source))
            if not candidates:
                raise ValueError(f"{source}: face_boxes is empty")
            x0, y0, x1, y1 = candidates[0].box
            x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
            x1, y1 = min(width, int(round(x1))), min(height, int(round(y1)))
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"{source}: face box {candidates[0].box} lies outside the {width}x{height} image")
            bgr, region = bgr[y0:y1, x0:x1], (float(x0), float(y0), float(x1), float(y1))
        resized = self.cv2.resize(bgr, (self.input_size, self.input_size))
        return (resized.astype(np.float32) / 255.0).transpose(2, 0, 1), region, (width, height)

    def process(self, images, sources, face_boxes):
        inputs, regions, sizes = [], [], []
        for image, source, box in zip(images, sources, face_boxes):
            tensor, region, size = self.preprocess(image, source, box)
            inputs.append(tensor)
            regions.append(region)
            sizes.append(size)
        batch = np.stack(inputs)
        chunks = [batch] if self.dynamic_batch else [batch[i : i + 1] for i in range(len(batch))]
        outputs = np.concatenate(
            [np.asarray(self._session.run(None, {self.input_name: chunk})[0]).reshape(len(chunk), -1)
             for chunk in chunks]
        ).astype(np.float32)
        if outputs.shape[1] != self.dim:
            raise ValueError(f"{self.options['model_path'] or 'the ONNX session'}: expected {self.dim} outputs per "
                             f"image (106 x/y pairs, like 2d106det.onnx), got {outputs.shape[1]}")
        results = []
        for prior, region, source, size in zip(outputs, regions, sources, sizes):
            x0, y0, x1, y1 = region
            # Network output is in [-1, 1] over its input, which is the (resized) region.
            landmarks = (prior.reshape(-1, 2) + 1.0) * np.array([(x1 - x0) / 2, (y1 - y0) / 2]) + np.array([x0, y0])
            results.append(FaceLandmarks(prior.copy(), landmarks.astype(np.float32), region, None, source, 1, size))
        return results
