"""`FacialPriorExtractor`: images in, `facial_priors` `(N, dim)` out, with the backend chosen by name.

Backends (the name and the options are saved with the processor, so `from_pretrained` rebuilds the same one):

| backend | what | dim |
|---|---|---|
| `"face_alignment"` (default) | 2D-FAN of the `face-alignment` package + its face detector | 136 |
| `"dlib"` | dlib HOG detector + 68-point shape predictor (**iBUG 300-W: non-commercial use only**) | 136 |
| `"insightface_2d106"` | InsightFace `2d106det.onnx`, fed as the official EmoLA code (released checkpoints) | 212 |
| `"precomputed"` | `.npy` files in the FABA-Instruct layout | any |
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..faba import DEFAULT_FACIAL_PRIOR_BACKEND, FACIAL_PRIOR_DIMS, MISSING_FACE_POLICIES
from .backends import BACKENDS
from .faces import FaceLandmarks
from .images import as_image_list, source_name

__all__ = ["FacialPriorExtractor"]


class FacialPriorExtractor:
    """Images -> `facial_priors` `(N, dim)` float32, with the backend chosen by name.

    Args:
        backend (`str`, defaults to `"face_alignment"`): `"face_alignment"` (136-d), `"dlib"` (136-d, iBUG 300-W
            licence: non-commercial only), `"insightface_2d106"` (212-d, the released EmoLA features) or
            `"precomputed"` (`.npy` files).
        **options: backend settings, all saved by `to_dict()`:
            - face_alignment / dlib: `on_missing_face` (`"error"` | `"full_image"` | `"zeros"`), `face_index` (0 =
              highest detector score), `batch_size`, `detection_max_side` (detect on a copy downscaled to this size).
            - face_alignment: `device`, `dtype`, `face_detector` (a face-alignment detector, `"sfd"`),
              `face_detector_kwargs`, `flip_input` (face-alignment's test-time flip, default True), `fan_path`.
            - dlib: `upsample`, `adjust_threshold` (passed to `detector.run`), `predictor_path`.
            - insightface_2d106: `model_path` (the `2d106det.onnx` file, not shipped), `providers`, `batch_size`.
            - precomputed: `root`, `image_root`, `dim`.
            Models built elsewhere can be injected and are not saved: `fan=`/`detector=` (face_alignment),
            `detector=`/`predictor=` (dlib), `session=` (insightface_2d106).

    Example:
    ```python
    >>> import skimage.data
    >>> from transformers_emola import FacialPriorExtractor
    >>> extractor = FacialPriorExtractor("dlib")
    >>> priors = extractor([skimage.data.astronaut()])
    >>> priors.shape, priors.dtype, bool(abs(priors).max() <= 1)
    ((1, 136), dtype('float32'), True)
    >>> FacialPriorExtractor.from_dict(extractor.to_dict()).backend
    'dlib'

    ```
    """

    def __init__(self, backend: str = DEFAULT_FACIAL_PRIOR_BACKEND, **options: Any):
        if backend not in BACKENDS:
            raise ValueError(f"Unknown facial-prior backend {backend!r}; choose one of {list(BACKENDS)}")
        cls = BACKENDS[backend]
        runtime = {key: options.pop(key) for key in list(options) if key in cls.runtime}
        if backend != "precomputed" and "dim" in options:
            dim = options.pop("dim")
            if dim is not None and dim != FACIAL_PRIOR_DIMS[backend]:
                raise ValueError(f"Backend {backend!r} produces {FACIAL_PRIOR_DIMS[backend]}-d priors, not dim={dim}")
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            valid = sorted(cls.defaults) + list(cls.runtime)
            raise ValueError(f"Option(s) {unknown} do not apply to the {backend!r} backend; valid options: {valid}")
        merged = json.loads(json.dumps(cls.defaults))  # deep copy of the defaults
        for key, value in options.items():
            merged[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
        self._validate(backend, merged)
        self._injected = runtime
        self._backend = cls(merged, runtime)

    @staticmethod
    def _validate(backend: str, options: dict) -> None:
        if "on_missing_face" in options and options["on_missing_face"] not in MISSING_FACE_POLICIES:
            raise ValueError(f"on_missing_face must be one of {MISSING_FACE_POLICIES}, "
                             f"got {options['on_missing_face']!r}")
        if "face_index" in options and (not isinstance(options["face_index"], int) or options["face_index"] < 0):
            raise ValueError(f"face_index must be a non-negative int, got {options['face_index']!r}")
        if not isinstance(options.get("batch_size", 1), int) or options.get("batch_size", 1) < 1:
            raise ValueError(f"batch_size must be a positive int, got {options['batch_size']!r}")
        side = options.get("detection_max_side")
        if side is not None and (not isinstance(side, int) or side < 16):
            raise ValueError(f"detection_max_side must be None or an int >= 16, got {side!r}")
        if backend == "precomputed" and options["dim"] is not None and (
            not isinstance(options["dim"], int) or options["dim"] < 1
        ):
            raise ValueError(f"dim must be a positive int, got {options['dim']!r}")

    # ---- description / serialisation -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def dim(self) -> int | None:
        """Length of the prior vector (136, 212, or the precomputed files' size when given)."""
        return self._backend.dim

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._backend.options)

    @property
    def batch_size(self) -> int:
        return self._backend.options["batch_size"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (backend, dim and options); injected models are not included."""
        return {"backend": self.backend, "dim": self.dim, **json.loads(json.dumps(self._backend.options))}

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> "FacialPriorExtractor":
        """Rebuild an extractor from `to_dict()` output; `overrides` replace saved options (e.g. `device`)."""
        config = {**dict(config), **overrides}
        backend = config.pop("backend", DEFAULT_FACIAL_PRIOR_BACKEND)
        return cls(backend, **config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict())})"

    def __reduce__(self):
        # Pickle the settings (and injected models), not loaded detectors or ONNX sessions, which cannot be
        # pickled: data-loader workers started with "spawn" rebuild them lazily.
        return _rebuild_extractor, (self.to_dict(), self._injected)

    # ---- extraction -------------------------------------------------------------------------------------------
    def detect(self, images: Any, face_boxes: Sequence | None = None) -> list[FaceLandmarks]:
        """One `FaceLandmarks` per image (the chosen face), processed in batches of `batch_size`.

        Args:
            images: a path, `PIL.Image` or HWC RGB numpy array, or a list of them.
            face_boxes: optional, one entry per image: `None` (run the detector) or boxes `(x0, y0, x1, y1[, score])`
                of shape (4,), (5,), (M, 4) or (M, 5) that replace the detector for that image.
        """
        images = as_image_list(images)
        sources = [source_name(image, i) for i, image in enumerate(images)]
        if face_boxes is None:
            face_boxes = [None] * len(images)
        face_boxes = list(face_boxes)
        if len(face_boxes) != len(images):
            raise ValueError(f"face_boxes must have one entry per image: {len(face_boxes)} for {len(images)} images")
        results: list[FaceLandmarks] = []
        size = self.batch_size
        for start in range(0, len(images), size):
            stop = start + size
            results.extend(self._backend.process(images[start:stop], sources[start:stop], face_boxes[start:stop]))
        return results

    def __call__(self, images: Any, face_boxes: Sequence | None = None) -> np.ndarray:
        """Priors as a float32 array of shape `(num_images, dim)`."""
        faces = self.detect(images, face_boxes=face_boxes)
        if not faces:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        sizes = {face.prior.shape[0] for face in faces}
        if len(sizes) != 1:
            raise ValueError(f"Priors of different sizes {sorted(sizes)} cannot be stacked; set dim=")
        return np.stack([face.prior for face in faces]).astype(np.float32)


def _rebuild_extractor(config: dict, injected: dict) -> FacialPriorExtractor:
    return FacialPriorExtractor.from_dict(config, **injected)
