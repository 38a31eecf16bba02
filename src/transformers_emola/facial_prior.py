"""The facial prior expert: turns face images into the `facial_priors` vector EmoLA consumes.

Landmark layout shared by every 68-point source (face-alignment, dlib, the synthetic renderer): the (x, y) pixel
coordinates are mapped into [-1, 1] relative to the square that encloses the landmarks themselves, centred on
their bounding box, and flattened as (x0, y0, x1, y1, ...). Normalising by the landmarks' own extent (not by a
detector's box) makes the features of different backends comparable: they only differ by landmark placement.

Backends (the name and the output size are saved with the processor so `from_pretrained` rebuilds the same one):

| backend | what | dim |
|---|---|---|
| `"face_alignment"` (default) | 2D-FAN of the `face-alignment` package + its face detector | 136 |
| `"dlib"` | dlib HOG detector + 68-point shape predictor (**iBUG 300-W: non-commercial use only**) | 136 |
| `"insightface_2d106"` | InsightFace `2d106det.onnx`, fed as the official EmoLA code (released checkpoints) | 212 |
| `"precomputed"` | `.npy` files in the FABA-Instruct layout | any |

Optional packages are imported only when a backend needs them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from .configuration_emola import FACIAL_PRIOR_DIMS

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND_DIMS",
    "DEFAULT_BACKEND",
    "FaceLandmarks",
    "FacialPriorExtractor",
    "FacialPriorWeightsError",
    "PriorExtractionReport",
    "draw_landmarks",
    "extract_priors_for_annotations",
    "load_image",
    "normalize_landmarks",
    "prior_path_for_image",
    "read_annotation_rows",
]

# Output size of each landmark backend ("precomputed" takes whatever its files hold); one table for the package.
BACKEND_DIMS = {name: dim for name, dim in FACIAL_PRIOR_DIMS.items() if name != "synthetic"}
DEFAULT_BACKEND = "face_alignment"
BACKENDS = ("face_alignment", "dlib", "insightface_2d106", "precomputed")
MISSING_FACE_POLICIES = ("error", "full_image", "zeros")

DLIB_LICENSE_NOTE = (
    "dlib's 68-point shape predictor (shipped by face_recognition_models) is trained on iBUG 300-W, whose licence "
    "forbids commercial use. Use the 'face_alignment' backend for commercial work."
)
_dlib_license_warned = False

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def normalize_landmarks(points: np.ndarray) -> np.ndarray:
    """Map `(K, 2)` pixel landmarks to a flat `(2K,)` float32 vector in [-1, 1] (x0, y0, x1, y1, ...)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"landmarks must have shape (K, 2), got {points.shape}")
    low, high = points.min(axis=0), points.max(axis=0)
    center = (low + high) / 2.0
    half_side = max(float((high - low).max()) / 2.0, 1e-6)
    normalized = np.clip((points - center) / half_side, -1.0, 1.0)
    return normalized.astype(np.float32).reshape(-1)


class FacialPriorWeightsError(OSError):
    """Raised when a backend's pretrained weights are neither cached nor downloadable (e.g. offline machines)."""


def _require(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module!r} is needed for this facial-prior backend: pip install \"transformers-emola[{extra}]\""
        ) from error


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------
def _composite_on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels carry arbitrary colour; put them on white, as transformers' `convert_to_rgb` does."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """PIL cannot convert 16-bit / 32-bit / float greyscale to RGB without clipping; scale it to 8 bits first."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        array = array.astype(np.uint16) >> 8
    elif image.mode == "I":
        array = np.clip(array, 0, 65535)
        array = array >> 8 if array.max() > 255 else array
    else:  # "F"
        array = np.nan_to_num(array.astype(np.float64))
        array = array * 255.0 if array.max() <= 1.0 else array
        array = np.clip(np.rint(array), 0, 255)
    return Image.fromarray(array.astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_bit_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def _apply_exif_orientation(image: Image.Image, name: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # malformed EXIF must not make a readable image unusable
        logger.warning("Ignoring unreadable EXIF orientation of %s: %s", name, error)
        return image


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """HWC (or CHW, or HW) numpy array -> PIL image; dtype decides the value range."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as transformers' image processors also accept
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"{name}: float image arrays must hold values in [0, 1], got "
                             f"[{np.nanmin(array):.3g}, {np.nanmax(array):.3g}]; pass uint8 for 0-255 data")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"{name}: integer image arrays must hold 0-255 (or be uint16), got "
                             f"[{array.min()}, {array.max()}]")
        array = array.astype(np.uint8)
    else:
        raise ValueError(f"{name}: unsupported image dtype {array.dtype}")
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def load_image(image: ImageInput) -> Image.Image:
    """Read any supported image input as an upright 8-bit RGB `PIL.Image`.

    Accepts a file path, a `PIL.Image` or a numpy array (HWC RGB; HW grey; RGBA; uint8, uint16 or float in [0, 1];
    torch tensors too). EXIF orientation is applied (phone photos are stored sideways), greyscale is replicated,
    alpha is composited on white and 16-bit data is scaled to 8 bits. Errors name the file.

    Example:
    ```python
    >>> import numpy as np
    >>> from transformers_emola.facial_prior import load_image
    >>> load_image(np.zeros((4, 6), dtype=np.uint16)).size
    (6, 4)

    ```
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        if os.path.isdir(path):
            raise ValueError(f"Cannot read image {path}: it is a directory")
        try:
            with Image.open(path) as opened:
                opened.load()  # decode now, so truncated files fail here and name the file
                loaded = _apply_exif_orientation(opened, path)
                loaded = _to_rgb(loaded)
                loaded.load()
        except Image.DecompressionBombError as error:
            raise ValueError(f"Cannot read image {path}: {error}") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"Cannot read image {path}: {type(error).__name__}: {error}") from error
        loaded.filename = path  # keep the source name for messages and the precomputed backend
        return loaded
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "PIL image"
        return _to_rgb(_apply_exif_orientation(image, name))
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _to_rgb(_array_to_pil(image, "image array"))
    raise TypeError(f"Unsupported image type {type(image).__name__}: expected a path, PIL.Image or numpy array")


def _source_name(image: Any, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    filename = getattr(image, "filename", "") if isinstance(image, Image.Image) else ""
    if filename:
        return str(filename)
    kind = "PIL image" if isinstance(image, Image.Image) else type(image).__name__
    return f"image {index} ({kind})"


def _as_image_list(images: Any) -> list:
    """A single image or a batch of images -> list."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if type(images).__module__.startswith("torch"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"Unsupported images type {type(images).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FaceLandmarks:
    """The face chosen in one image and the prior computed from it.

    `landmarks` are pixel coordinates in the original (EXIF-upright) image; `box` is (x0, y0, x1, y1) in pixels.
    Both are `None` when the prior did not come from a face (the "zeros" policy, precomputed files).
    """

    prior: np.ndarray
    landmarks: np.ndarray | None
    box: tuple[float, float, float, float] | None
    score: float | None
    source: str
    num_faces: int = 0
    image_size: tuple[int, int] | None = None  # (width, height)


@dataclass
class _Candidate:
    box: tuple[float, float, float, float]
    score: float | None


def _parse_boxes(boxes: Any, name: str) -> list[_Candidate]:
    """(4,), (5,), (M, 4) or (M, 5) boxes (x0, y0, x1, y1[, score]) -> candidates."""
    if isinstance(boxes, (list, tuple)) and boxes and np.ndim(boxes[0]) == 1:
        rows = [np.asarray(row, dtype=np.float64) for row in boxes]  # rows may mix 4 and 5 values
    else:
        array = np.asarray(boxes, dtype=np.float64)
        if array.size == 0:
            return []
        rows = list(array[None, :] if array.ndim == 1 else array) if array.ndim in (1, 2) else [array]
    candidates = []
    for row in rows:
        if row.ndim != 1 or len(row) not in (4, 5):
            raise ValueError(f"{name}: face boxes must be (x0, y0, x1, y1[, score]) rows, i.e. of shape (4,), (5,), "
                             f"(M, 4) or (M, 5); got a row of shape {row.shape}")
        x0, y0, x1, y1 = (float(v) for v in row[:4])
        if not np.isfinite(row).all() or x1 <= x0 or y1 <= y0:
            raise ValueError(f"{name}: invalid face box {row.tolist()} (need finite x0 < x1 and y0 < y1)")
        candidates.append(_Candidate((x0, y0, x1, y1), float(row[4]) if len(row) == 5 else None))
    return candidates


def _rank_candidates(candidates: list[_Candidate]) -> list[_Candidate]:
    """Highest detector score first; boxes without a score rank after scored ones, larger first."""

    def key(candidate):
        x0, y0, x1, y1 = candidate.box
        score = candidate.score if candidate.score is not None else -np.inf
        return (-score, -(x1 - x0) * (y1 - y0))

    return sorted(candidates, key=key)


# ---------------------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------------------
class _Backend:
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
        return BACKEND_DIMS.get(self.name)

    def process(self, images: list, sources: list[str], face_boxes: list) -> list[FaceLandmarks]:
        raise NotImplementedError


_COMMON_DETECTOR_OPTIONS = {
    "on_missing_face": "error",
    "face_index": 0,
    "batch_size": 8,
    "detection_max_side": 1024,
}


class _DetectorBackend(_Backend):
    """Backends that find faces, pick one per image and regress 68 landmarks inside its box."""

    def detect_faces(self, image: np.ndarray) -> list[_Candidate]:
        raise NotImplementedError

    def predict_landmarks(self, images: list[np.ndarray], boxes: list[tuple]) -> list[np.ndarray]:
        raise NotImplementedError

    def _candidates(self, array: np.ndarray, boxes: Any, source: str) -> list[_Candidate]:
        if boxes is not None:
            return _parse_boxes(boxes, source)
        height, width = array.shape[:2]
        max_side = self.options["detection_max_side"]
        if max_side and max(height, width) > max_side:
            # Detectors are slow and memory-hungry on huge photos; find the face on a smaller copy, then
            # regress the landmarks on the full-resolution image.
            factor = max_side / max(height, width)
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
            found = self.detect_faces(small)
            scale_x, scale_y = width / size[0], height / size[1]
            return [
                _Candidate((c.box[0] * scale_x, c.box[1] * scale_y, c.box[2] * scale_x, c.box[3] * scale_y), c.score)
                for c in found
            ]
        return self.detect_faces(array)

    def process(self, images, sources, face_boxes):
        policy, face_index = self.options["on_missing_face"], self.options["face_index"]
        results: list[FaceLandmarks | None] = [None] * len(images)
        todo: list[tuple[int, np.ndarray, _Candidate, int]] = []
        for i, (image, source, boxes) in enumerate(zip(images, sources, face_boxes)):
            array = np.array(load_image(image))
            height, width = array.shape[:2]
            candidates = _rank_candidates(self._candidates(array, boxes, source))
            if face_index < len(candidates):
                todo.append((i, array, candidates[face_index], len(candidates)))
                continue
            reason = (f"No face found in {source}" if not candidates else
                      f"Only {len(candidates)} face(s) found in {source}, but face_index={face_index}")
            if policy == "error":
                raise ValueError(f"{reason} (backend {self.name!r}); use on_missing_face='full_image' or 'zeros' "
                                 "to get a prior anyway, or pass face_boxes")
            if policy == "full_image":
                todo.append((i, array, _Candidate((0.0, 0.0, float(width), float(height)), None), len(candidates)))
            else:
                warnings.warn(f"{reason}; using a zero facial prior", stacklevel=4)
                results[i] = FaceLandmarks(np.zeros(self.dim, dtype=np.float32), None, None, None, source,
                                           len(candidates), (width, height))
        if todo:
            all_landmarks = self.predict_landmarks([item[1] for item in todo], [item[2].box for item in todo])
            for (i, array, candidate, count), landmarks in zip(todo, all_landmarks):
                landmarks = np.asarray(landmarks, dtype=np.float32)
                results[i] = FaceLandmarks(normalize_landmarks(landmarks), landmarks, tuple(candidate.box),
                                           candidate.score, sources[i], count, (array.shape[1], array.shape[0]))
        return results


class _FaceAlignmentBackend(_DetectorBackend):
    """2D-FAN (Bulat & Tzimiropoulos, 2017) from `face-alignment`, with that package's own crop and decoding."""

    name = "face_alignment"
    defaults = {
        **_COMMON_DETECTOR_OPTIONS,
        "device": "cpu",
        "dtype": "float32",
        "face_detector": "sfd",
        "face_detector_kwargs": {},
        "flip_input": True,
        "fan_path": None,
    }
    runtime = ("fan", "detector")

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        _require("face_alignment", "face")
        import torch

        dtype = options["dtype"]
        self.torch_dtype = getattr(torch, dtype.replace("torch.", ""), None) if isinstance(dtype, str) else dtype
        if not isinstance(self.torch_dtype, torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32', got {dtype!r}")
        options["dtype"] = str(self.torch_dtype).replace("torch.", "")
        if self._fan is not None:
            self._fan = self._fan.to(options["device"], dtype=self.torch_dtype).eval()

    @staticmethod
    def weights_directory() -> str:
        """Where face-alignment caches its downloads (torch.hub's checkpoint folder)."""
        import torch

        return os.path.join(torch.hub.get_dir(), "checkpoints")

    def weight_urls(self) -> dict[str, str]:
        """Every file face-alignment would download for this configuration (FAN and the face detector)."""
        from face_alignment import api as fa_api

        urls = {}
        if self._fan is None and self.options["fan_path"] is None:
            urls["2DFAN-4"] = fa_api.models_urls["2DFAN-4"]
        if self._detector is None and "path_to_detector" not in self.options["face_detector_kwargs"]:
            package = self._detector_module().__name__
            for module_name, module in list(sys.modules.items()):
                if module_name.startswith(package) and isinstance(getattr(module, "models_urls", None), dict):
                    urls.update(module.models_urls)
        return urls

    def _weights_error(self, what: str, error: Exception) -> FacialPriorWeightsError:
        directory = self.weights_directory()
        files = "\n".join(f"  {os.path.join(directory, os.path.basename(url))}   (from {url})"
                          for url in self.weight_urls().values())
        return FacialPriorWeightsError(
            f"Could not obtain the face-alignment weights for {what}: {type(error).__name__}: {error}\n"
            f"face-alignment downloads its weights with torch.hub and looks for them in {directory} "
            "(set TORCH_HOME to move it). On an offline machine pre-seed that folder by copying these files "
            f"there from a machine with network access:\n{files}\n"
            "or pass fan_path=... / face_detector_kwargs={'path_to_detector': ...}, or build the models yourself "
            "(FacialPriorExtractor('face_alignment', fan=..., detector=...))."
        )

    @property
    def fan(self):
        if self._fan is None:
            import torch
            from face_alignment import api as fa_api
            from face_alignment import utils as fa_utils
            from face_alignment.models import FAN

            url = fa_api.models_urls["2DFAN-4"]
            path = self.options["fan_path"]
            if path is not None:
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"fan_path does not exist: {path}")
            else:
                try:
                    path = fa_utils.load_file_from_url(url)
                except Exception as error:  # URLError, HTTPError, timeouts, permission errors
                    raise self._weights_error("the 2D-FAN landmark network", error) from error
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                fan = FAN(4)
                fan.load_state_dict(state)
            except Exception as error:
                raise FacialPriorWeightsError(f"Cannot load 2D-FAN weights from {path}: {error} "
                                              "(delete the file to download it again)") from error
            self._fan = fan.to(self.options["device"], dtype=self.torch_dtype).eval()
        return self._fan

    def _detector_module(self):
        name = self.options["face_detector"]
        try:
            return importlib.import_module(f"face_alignment.detection.{name}")
        except ModuleNotFoundError as error:
            raise ValueError(f"face-alignment has no face detector {name!r} "
                             "(choose e.g. 'sfd', 'blazeface', 'dlib')") from error

    @property
    def detector(self):
        if self._detector is None:
            module = self._detector_module()
            try:
                self._detector = module.FaceDetector(device=self.options["device"], verbose=False,
                                                     **self.options["face_detector_kwargs"])
            except (OSError, RuntimeError) as error:  # URLError is an OSError
                raise self._weights_error(f"the {self.options['face_detector']!r} face detector", error) from error
        return self._detector

    @property
    def reference_scale(self) -> float:
        """face-alignment sizes its crop from the box with a detector-specific reference scale."""
        from face_alignment.utils import REFERENCE_SCALE

        if self._detector is not None:
            return float(getattr(self._detector, "reference_scale", REFERENCE_SCALE))
        prop = getattr(self._detector_module().FaceDetector, "reference_scale", None)
        try:
            return float(prop.fget(None)) if isinstance(prop, property) else float(REFERENCE_SCALE)
        except Exception:
            return float(REFERENCE_SCALE)

    def detect_faces(self, image):
        return _parse_boxes(self.detector.detect_from_image(image.copy()), "face-alignment detector output")

    def predict_landmarks(self, images, boxes):
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, flip, get_preds_fromhm

        # Same geometry as FaceAlignment.get_landmarks_from_image, batched over images.
        reference_scale = self.reference_scale
        centers, scales, crops = [], [], []
        for image, d in zip(images, boxes):
            center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
            center[1] = center[1] - (d[3] - d[1]) * CENTER_Y_OFFSET
            scale = (d[2] - d[0] + d[3] - d[1]) / reference_scale
            centers.append(center)
            scales.append(scale)
            crops.append(crop(image, center, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0)
        fan = self.fan
        with torch.no_grad():
            batch = torch.from_numpy(np.stack(crops)).to(self.options["device"], dtype=self.torch_dtype)
            heatmaps = fan(batch)
            heatmaps = (heatmaps[-1] if isinstance(heatmaps, (list, tuple)) else heatmaps).detach()
            if self.options["flip_input"]:
                flipped = fan(flip(batch))
                flipped = flipped[-1] if isinstance(flipped, (list, tuple)) else flipped
                heatmaps += flip(flipped.detach(), is_label=True)
            heatmaps = heatmaps.to(device="cpu", dtype=torch.float32).numpy()
        landmarks = []
        for i, (center, scale) in enumerate(zip(centers, scales)):
            _, points, _ = get_preds_fromhm(heatmaps[i : i + 1], center, scale)
            landmarks.append(points.reshape(-1, 2))
        return landmarks


@functools.lru_cache(maxsize=4)
def _load_dlib_predictor(path: str):
    """The 68-point model is ~100 MB and takes seconds to parse: share it between extractors."""
    import dlib

    return dlib.shape_predictor(path)


class _DlibBackend(_DetectorBackend):
    """dlib HOG face detector + the 68-point shape predictor shipped in `face_recognition_models`.

    Licence: that predictor is trained on iBUG 300-W, whose licence forbids commercial use (warned once at run
    time); prefer the "face_alignment" backend for commercial work."""

    name = "dlib"
    defaults = {**_COMMON_DETECTOR_OPTIONS, "upsample": 1, "adjust_threshold": 0.0, "predictor_path": None}
    runtime = ("detector", "predictor")

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        self.dlib = _require("dlib", "dlib")
        global _dlib_license_warned
        if not _dlib_license_warned:
            _dlib_license_warned = True
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
        return [_Candidate((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
                for r, s in zip(rectangles, scores)]

    def predict_landmarks(self, images, boxes):
        landmarks = []
        for image, (x0, y0, x1, y1) in zip(images, boxes):
            rectangle = self.dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = self.predictor(image, rectangle)
            landmarks.append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32))
        return landmarks


class _InsightFace2d106Backend(_Backend):
    """InsightFace `2d106det.onnx` fed exactly as EmoLA's `feature_extraction/landmark/landmark_features.py`:
    whole image, BGR, `cv2.resize` to 192x192 (INTER_LINEAR), /255, CHW float32; the prior is `output[0][0]`.
    No face detection (FABA images are face crops); `face_boxes` crops the image first."""

    name = "insightface_2d106"
    defaults = {"model_path": None, "providers": ["CPUExecutionProvider"], "batch_size": 8}
    runtime = ("session",)
    input_size = 192

    def __init__(self, options, runtime):
        super().__init__(options, runtime)
        self.cv2 = _require("cv2", "insightface")
        if self._session is None:
            path = options["model_path"]
            if path is None:
                raise ValueError(
                    "The insightface_2d106 backend needs model_path='.../2d106det.onnx'. The file is not shipped "
                    "with transformers-emola: take it from InsightFace's model zoo (e.g. inside the buffalo_l pack)."
                )
            if not os.path.isfile(path):
                raise FileNotFoundError(f"InsightFace landmark model not found: {path}")
            ort = _require("onnxruntime", "insightface")
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
            candidates = _rank_candidates(_parse_boxes(box, source))
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


class _PrecomputedBackend(_Backend):
    """Priors read from `.npy` files (FABA-Instruct ships them; `emola extract-priors` writes them).

    Inputs are `.npy` paths (relative ones are resolved against `root`), or image paths when `root` and
    `image_root` are set: `image_root/<rel>.jpg` -> `root/landmarks/<rel>.npy` (see `prior_path_for_image`)."""

    name = "precomputed"
    defaults = {"root": None, "image_root": None, "dim": None, "batch_size": 64}

    @property
    def dim(self):
        return self.options["dim"]

    def npy_path(self, image, source: str) -> str:
        if isinstance(image, Image.Image) and getattr(image, "filename", ""):
            image = image.filename
        if not isinstance(image, (str, os.PathLike)):
            raise ValueError(f"The precomputed backend reads .npy files: {source} is not a path "
                             "(pass facial_priors explicitly, or use a landmark backend)")
        path, root = os.fspath(image), self.options["root"]
        if path.endswith(".npy"):
            return os.path.join(root, path) if root and not os.path.isabs(path) else path
        image_root = self.options["image_root"]
        if not root or not image_root:
            raise ValueError(f"The precomputed backend got the image {path}: pass its .npy file, or set root= and "
                             "image_root= so that image_root/<rel> maps to root/landmarks/<rel>.npy")
        relative = os.path.relpath(path, image_root) if os.path.isabs(path) else path
        if relative.startswith(".."):
            raise ValueError(f"{path} is not inside image_root {image_root}")
        return os.path.join(root, prior_path_for_image(relative))

    def process(self, images, sources, face_boxes):
        if any(box is not None for box in face_boxes):
            raise ValueError("The precomputed backend does not use face_boxes")
        results = []
        dim = self.options["dim"]
        for image, source in zip(images, sources):
            path = self.npy_path(image, source)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Precomputed facial prior not found: {path} (for {source})")
            try:
                prior = np.load(path, allow_pickle=False)
            except Exception as error:
                raise ValueError(f"Cannot read facial prior {path}: {error}") from error
            prior = np.asarray(prior)
            if prior.ndim == 2 and prior.shape[0] == 1:
                prior = prior[0]
            expected = dim if dim is not None else (results[0].prior.shape[0] if results else None)
            if prior.ndim != 1 or (expected is not None and prior.shape[0] != expected) or not prior.size:
                want = f"({expected},)" if expected is not None else "(dim,)"
                raise ValueError(f"Facial prior {path} has shape {prior.shape}; expected {want}")
            if not np.issubdtype(prior.dtype, np.number):
                raise ValueError(f"Facial prior {path} has non-numeric dtype {prior.dtype}")
            results.append(FaceLandmarks(prior.astype(np.float32), None, None, None, source))
        return results


_BACKEND_CLASSES = {cls.name: cls for cls in (_FaceAlignmentBackend, _DlibBackend, _InsightFace2d106Backend,
                                              _PrecomputedBackend)}


# ---------------------------------------------------------------------------------------------------------------
# Extractor
# ---------------------------------------------------------------------------------------------------------------
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

    def __init__(self, backend: str = DEFAULT_BACKEND, **options: Any):
        if backend not in _BACKEND_CLASSES:
            raise ValueError(f"Unknown facial-prior backend {backend!r}; choose one of {list(_BACKEND_CLASSES)}")
        cls = _BACKEND_CLASSES[backend]
        runtime = {key: options.pop(key) for key in list(options) if key in cls.runtime}
        if backend != "precomputed" and "dim" in options:
            dim = options.pop("dim")
            if dim is not None and dim != BACKEND_DIMS[backend]:
                raise ValueError(f"Backend {backend!r} produces {BACKEND_DIMS[backend]}-d priors, not dim={dim}")
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
        backend = config.pop("backend", DEFAULT_BACKEND)
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
        images = _as_image_list(images)
        sources = [_source_name(image, i) for i, image in enumerate(images)]
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


# ---------------------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------------------
# iBUG 68-point contours: jaw, brows, nose bridge, lower nose, eyes, outer and inner lips; (start, stop, closed).
_CONTOURS_68 = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
                (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]


def draw_landmarks(image: ImageInput, faces: FaceLandmarks | Sequence[FaceLandmarks]) -> Image.Image:
    """Draw face boxes (green), 68-point contours (cyan) and landmarks (red) on a copy of `image`.

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
        if face.box is not None:
            draw.rectangle([float(v) for v in face.box], outline=(0, 255, 0), width=width)
            if face.score is not None:
                draw.text((face.box[0] + 2, face.box[1] + 2), f"{face.score:.2f}", fill=(0, 255, 0))
        if face.landmarks is None:
            continue
        points = [tuple(float(v) for v in p) for p in np.asarray(face.landmarks)[:, :2]]
        if len(points) == 68:
            for start, stop, closed in _CONTOURS_68:
                line = points[start:stop] + (points[start : start + 1] if closed else [])
                draw.line(line, fill=(0, 255, 255), width=width)
        for x, y in points:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0))
    return canvas


# ---------------------------------------------------------------------------------------------------------------
# Batch extraction to .npy files (FABA-Instruct layout)
# ---------------------------------------------------------------------------------------------------------------
def prior_path_for_image(image: str) -> str:
    """Default `.npy` location (relative) of an image's prior: `landmarks/<image path>.npy`."""
    return str(PurePosixPath("landmarks") / PurePosixPath(Path(image).as_posix()).with_suffix(".npy"))


def read_annotation_rows(path: str | os.PathLike) -> list[dict]:
    """FABA-Instruct annotation rows from a `.json` list or a `.jsonl` file; each needs a relative `image`."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            if path.endswith(".jsonl"):
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read annotations {path}: {error}") from error
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of annotation rows, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
            raise ValueError(f"{path}: row {index} has no 'image' path")
        if row.get("landmark") is not None and not isinstance(row["landmark"], str):
            raise ValueError(f"{path}: row {index} has a non-string 'landmark'")
    return rows


@dataclass
class PriorExtractionReport:
    """What a batch extraction did: files written, files already there, and failures (image, outputs, error)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` to `path` so that the file is either complete or absent, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json_atomic(path: Path, payload: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def extract_priors_for_annotations(
    rows: Sequence[dict],
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    extractor: FacialPriorExtractor,
    *,
    overwrite: bool = False,
    progress: bool = True,
    failures_file: str | None = "failures.json",
) -> PriorExtractionReport:
    """Write one prior `.npy` per annotated image, in the FABA-Instruct layout.

    Each row's prior goes to `out_dir/<row["landmark"]>` when the row has one, else to
    `out_dir/landmarks/<image path>.npy`. Resumable (existing files are skipped unless `overwrite`), atomic
    (no half-written file after a kill) and failure-tolerant: a failing image is recorded with its error, the
    others are still written; the failures are also saved as JSON in `out_dir/failures_file`.
    """
    from tqdm.auto import tqdm

    image_root, out_dir = Path(image_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PriorExtractionReport()
    outputs: dict[str, list[str]] = {}
    for row in rows:
        relative = row.get("landmark") or prior_path_for_image(row["image"])
        targets = outputs.setdefault(row["image"], [])
        if relative not in targets:
            targets.append(relative)

    todo: list[tuple[str, list[str]]] = []
    resolved_out = out_dir.resolve()
    for image, targets in outputs.items():
        bad = [t for t in targets if os.path.isabs(t) or not (out_dir / t).resolve().is_relative_to(resolved_out)]
        if bad:
            report.failures.append({"image": image, "outputs": targets,
                                    "error": f"ValueError: output path(s) {bad} are not inside {out_dir}"})
            continue
        pending = [t for t in targets if overwrite or not (out_dir / t).is_file()]
        report.skipped.extend(t for t in targets if t not in pending)
        if pending:
            todo.append((image, pending))

    def write(targets: list[str], face: FaceLandmarks) -> None:
        for target in targets:
            save_npy_atomic(out_dir / target, face.prior.astype(np.float32))
            report.written.append(target)

    with tqdm(total=len(todo), desc="extract-priors", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), extractor.batch_size):
            batch = todo[start : start + extractor.batch_size]
            try:
                faces = extractor.detect([str(image_root / image) for image, _ in batch])
                results = [(item, face, None) for item, face in zip(batch, faces)]
            except (FacialPriorWeightsError, ImportError):
                raise  # a broken set-up, not a bad image: every image would fail the same way
            except Exception:  # isolate the failing image(s): redo this batch one by one
                results = []
                for item in batch:
                    try:
                        results.append((item, extractor.detect([str(image_root / item[0])])[0], None))
                    except (FacialPriorWeightsError, ImportError):
                        raise
                    except Exception as error:
                        results.append((item, None, error))
            for (image, targets), face, error in results:
                if face is not None:
                    try:
                        write(targets, face)
                    except Exception as write_error:
                        error = write_error
                if error is not None:
                    report.failures.append({"image": image, "outputs": targets,
                                            "error": f"{type(error).__name__}: {error}"})
                bar.update(1)
    if failures_file:
        _write_json_atomic(out_dir / failures_file, report.failures)
    return report
