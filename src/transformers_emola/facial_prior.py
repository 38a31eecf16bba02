"""The facial prior expert: turns face images into the `facial_priors` vector EmoLA consumes.

Landmark layout shared by every 68-point source (face-alignment, dlib, the synthetic renderer): the (x, y) pixel
coordinates are mapped into [-1, 1] relative to the square that encloses the landmarks themselves, centred on
their bounding box, and flattened as (x0, y0, x1, y1, ...). Normalising by the landmarks' own extent (not by a
detector's box) makes the features of different backends comparable: they only differ by landmark placement.
"""

from __future__ import annotations

import numpy as np


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
