"""Facial-prior arrays: the one converter every caller uses, the one `.npy` reader and writer, and the landmark layout.

Priors reach EmoLA from many places (the extractor, `.npy` files, a dataset column, a user's tensor); all of them go
through `as_prior_array`, so a wrong shape, length or value reads the same everywhere and names its input.

Landmark layout shared by every 68-point source (face-alignment, dlib, the synthetic renderer): the (x, y) pixel
coordinates are mapped into [-1, 1] relative to the square that encloses the landmarks themselves, centred on their
bounding box, and flattened as (x0, y0, x1, y1, ...). Normalising by the landmarks' own extent (not by a detector's
box) makes the features of different backends comparable: they only differ by landmark placement.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..jobs import atomic_file

__all__ = [
    "as_prior_array", "load_prior", "normalize_landmarks", "prior_path_for_image", "prior_statistics", "save_prior",
]


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


def prior_statistics(priors: Any, min_std: float = 1e-3) -> tuple[list[float], list[float]]:
    """Per-dimension mean and std of `(N, D)` training priors: the `facial_prior_mean` / `facial_prior_std` a config
    stores to standardise its inputs. `min_std` floors the std, so a coordinate that hardly moves in training is not
    blown up at test time.

    Example:
        >>> prior_statistics([[0.0, 1.0], [2.0, 1.0]])
        ([1.0, 1.0], [1.0, 0.001])
    """
    array = as_prior_array(priors, name="training priors").astype(np.float64)
    if len(array) < 2:
        raise ValueError(f"prior statistics need at least 2 training priors, got {len(array)}")
    return array.mean(0).tolist(), np.maximum(array.std(0), min_std).tolist()


def as_prior_array(
    priors: Any,
    *,
    num_images: int | None = None,
    dim: int | None = None,
    backend: str | None = None,
    name: str = "facial_priors",
) -> np.ndarray:
    """Any facial-prior input (array, tensor, nested lists; one vector or one row per image) -> `(N, D)` float32.

    Args:
        priors: a `(D,)` vector or a `(N, D)` array / tensor / list of rows.
        num_images: when given, the number of rows required (one prior per image).
        dim: when given, the prior length required (e.g. `model.config.facial_prior_dim`).
        backend: the backend the model was trained with, named in the error when `dim` does not match.
        name: what to call the input in errors (a file, an image, an argument).

    Raises:
        ValueError: not numbers, not `(N, D)`, the wrong number of rows or length, NaN or inf.

    Example:
        >>> as_prior_array([0.5, -0.5]).shape, as_prior_array([[0, 1], [2, 3]], num_images=2, dim=2).dtype
        ((1, 2), dtype('float32'))
        >>> as_prior_array([[0.0] * 10], dim=136, name="face.npy")
        Traceback (most recent call last):
        ...
        ValueError: face.npy: facial prior has dimension 10, expected 136
    """
    if type(priors).__module__.startswith("torch"):
        priors = priors.detach().cpu().float().numpy()
    try:
        array = np.asarray(priors)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name}: facial priors must be numbers of shape (num_images, dim): {error}") from None
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name}: facial priors must be numbers, got dtype {array.dtype}")
    shape = array.shape
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0 or (num_images is not None and array.shape[0] != num_images):
        images = "" if num_images is None else f"{num_images} image(s) and "
        raise ValueError(f"{name}: facial priors must have shape (num_images, dim), one row per image; got {images}"
                         f"shape {shape}")
    if dim is not None and array.shape[1] != dim:
        trained = f" (the model was trained with {backend!r} priors: use that backend)" if backend else ""
        raise ValueError(f"{name}: facial prior has dimension {array.shape[1]}, expected {dim}{trained}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: facial prior contains NaN or inf")
    return array


def load_prior(path: str | os.PathLike, *, dim: int | None = None, backend: str | None = None) -> np.ndarray:
    """Read one prior `.npy` file (FABA-Instruct ships them; `emola extract-priors` writes them) as `(D,)` float32.

    A `(1, D)` file, as some extractors save it, is accepted. Errors name the file: `FileNotFoundError` when it is
    missing, `ValueError` when it cannot be read or holds no valid prior (see `as_prior_array`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"facial prior file not found: {path}")
    try:
        prior = np.load(path, allow_pickle=False)
    except Exception as error:  # corrupt, or not an .npy file
        raise ValueError(f"cannot read facial prior {path}: {type(error).__name__}: {error}") from error
    return as_prior_array(prior, num_images=1, dim=dim, backend=backend, name=path)[0]


def save_prior(path: str | os.PathLike, prior: np.ndarray) -> None:
    """Write a prior as a float32 `.npy` file that is either complete or absent, even after a kill."""
    with atomic_file(path, "wb") as handle:
        np.save(handle, np.asarray(prior, dtype=np.float32))


def prior_path_for_image(image: str) -> str:
    """Default `.npy` location (relative) of an annotated image's prior: `landmarks/<image path>.npy`."""
    return str(PurePosixPath("landmarks") / PurePosixPath(Path(image).as_posix()).with_suffix(".npy"))
