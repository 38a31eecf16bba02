"""The facial prior expert: turns face images into the `facial_priors` vector EmoLA consumes.

| module | holds |
|---|---|
| `extractor` | `FacialPriorExtractor`: images -> `(N, dim)` priors, the backend chosen by name |
| `backends/` | one module per backend (face_alignment, dlib, insightface_2d106, precomputed) |
| `priors` | `as_prior_array` (every prior input -> validated `(N, D)` float32), `load_prior` / `save_prior` (`.npy`), the landmark normalisation |
| `images` | `load_image` (any input -> upright RGB), `find_images`, `output_names` |
| `faces` | `FaceLandmarks` (the chosen face, its landmarks and prior) and `FaceDetection` |
| `errors` | `FaceNotFoundError`, `FacialPriorWeightsError` |
| `drawing` | `draw_landmarks`: every face found, the chosen one highlighted |
| `extraction` | the batch job behind `emola extract-priors` |

Optional packages (face-alignment, dlib, onnxruntime) are imported only when a backend needs them.
"""

from ..faba import DEFAULT_FACIAL_PRIOR_BACKEND as DEFAULT_BACKEND
from ..faba import FACIAL_PRIOR_DIMS
from .drawing import draw_landmarks
from .errors import FaceNotFoundError, FacialPriorWeightsError
from .extraction import PriorExtractionReport, extract_priors, extract_priors_for_annotations, read_annotation_rows
from .extractor import FacialPriorExtractor
from .faces import FaceDetection, FaceLandmarks
from .images import find_images, load_image, output_names
from .priors import (
    as_prior_array,
    load_prior,
    normalize_landmarks,
    prior_path_for_image,
    prior_statistics,
    save_prior,
)

#: Output size of each landmark backend ("precomputed" takes whatever its files hold).
BACKEND_DIMS = {name: dim for name, dim in FACIAL_PRIOR_DIMS.items() if name != "synthetic"}

__all__ = [
    "BACKEND_DIMS",
    "DEFAULT_BACKEND",
    "FaceDetection",
    "FaceLandmarks",
    "FaceNotFoundError",
    "FacialPriorExtractor",
    "FacialPriorWeightsError",
    "PriorExtractionReport",
    "as_prior_array",
    "draw_landmarks",
    "extract_priors",
    "extract_priors_for_annotations",
    "find_images",
    "load_image",
    "load_prior",
    "normalize_landmarks",
    "output_names",
    "prior_path_for_image",
    "prior_statistics",
    "read_annotation_rows",
    "save_prior",
]
