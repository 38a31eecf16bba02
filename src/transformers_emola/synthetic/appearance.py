"""Who the synthetic face is: identity, colours, pose and background, drawn at random apart from the expression."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .expressions import _as_rng


_SKIN_TONES = np.array(
    [[255, 226, 200], [241, 196, 160], [224, 172, 128], [198, 140, 92], [150, 100, 62], [98, 64, 44]], np.float64
)
_HAIR_COLOURS = np.array(
    [[30, 24, 20], [60, 40, 28], [100, 70, 40], [160, 120, 70], [200, 170, 110], [120, 120, 120], [70, 30, 20]],
    np.float64,
)
_IRIS_COLOURS = np.array([[70, 45, 25], [40, 25, 15], [60, 100, 140], [80, 110, 70], [110, 90, 60]], np.float64)


@dataclass(frozen=True)
class FaceAppearance:
    """Everything about a synthetic face except its expression: identity shape, colours, pose and background.

    Rendering the same appearance with different AUs gives the same person, pose and noise with only the expression
    changed, which is what the geometry tests and controlled experiments need.

    Example:

    ```python
    >>> import numpy as np
    >>> from transformers_emola.synthetic import render_face, sample_appearance
    >>> person = sample_appearance(np.random.default_rng(3))
    >>> smiling = render_face({12: 1.0}, appearance=person, size=96)
    >>> resting = render_face({}, appearance=person, size=96)
    >>> bool(smiling.landmarks[48, 1] < resting.landmarks[48, 1])  # the mouth corner moved up
    True

    ```
    """

    # Identity shape, in face units.
    jaw_half_width: float = 0.97
    jaw_height: float = 1.38
    jaw_squareness: float = 2.3
    forehead_height: float = 0.72
    eye_spacing: float = 0.42
    eye_half_width: float = 0.17
    eye_height: float = 0.085
    eye_y: float = -0.33
    brow_y: float = -0.6
    brow_arch: float = 0.07
    brow_thickness: float = 0.05
    brow_inner_x: float = 0.14
    brow_outer_x: float = 0.8
    nose_tip_y: float = 0.02
    nose_half_width: float = 0.2
    mouth_y: float = 0.45
    mouth_half_width: float = 0.3
    upper_lip: float = 0.065
    lower_lip: float = 0.09
    iris_radius: float = 0.075
    gaze: tuple[float, float] = (0.0, 0.0)
    # Colours (RGB 0-255).
    skin: tuple[int, int, int] = (224, 172, 128)
    lips: tuple[int, int, int] = (190, 100, 95)
    hair: tuple[int, int, int] = (60, 40, 28)
    brows: tuple[int, int, int] = (60, 40, 28)
    iris: tuple[int, int, int] = (70, 45, 25)
    clothes: tuple[int, int, int] = (60, 80, 120)
    background: tuple[tuple[int, int, int], tuple[int, int, int]] = ((200, 205, 210), (150, 160, 170))
    background_angle: float = 0.0
    clutter: tuple[tuple[float, float, float, float, int, int, int], ...] = ()
    hair_style: int = 1  # 0 bald, 1 short, 2 with fringe
    # Pose: scale (face half-width as a fraction of the image side), in-plane rotation (degrees), centre offset
    # (fraction of the image side).
    scale: float = 0.28
    rotation: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)
    # Pixel noise standard deviation (0-255 scale) and its seed.
    noise: float = 0.0
    noise_seed: int = 0


def _lerp_palette(palette: np.ndarray, t: float) -> np.ndarray:
    position = t * (len(palette) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(palette) - 1)
    return palette[low] + (palette[high] - palette[low]) * (position - low)


def _colour(values: Iterable[float]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(max(v, 0.0), 255.0))) for v in values)
    return (r, g, b)


def sample_appearance(rng: int | np.random.Generator) -> FaceAppearance:
    """Draw a random identity, colouring, pose and background (the expression is chosen separately)."""
    rng = _as_rng(rng)
    u = rng.uniform
    skin = _lerp_palette(_SKIN_TONES, u(0, 1)) + rng.normal(0, 6, 3)
    lips = skin * np.array([0.82, 0.58, 0.58]) + np.array([30, 8, 12]) + rng.normal(0, 6, 3)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0, 8, 3)
    iris = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 8, 3)
    background = (tuple(_colour(rng.uniform(30, 245, 3))), tuple(_colour(rng.uniform(30, 245, 3))))
    clutter = tuple(
        (float(u(-0.2, 1.0)), float(u(-0.2, 1.0)), float(u(0.1, 0.5)), float(u(0.1, 0.5)))
        + _colour(rng.uniform(30, 245, 3))
        for _ in range(int(rng.integers(0, 4)))
    )
    return FaceAppearance(
        jaw_half_width=u(0.9, 1.04),
        jaw_height=u(1.28, 1.5),
        jaw_squareness=u(2.0, 2.8),
        forehead_height=u(0.62, 0.8),
        eye_spacing=u(0.38, 0.46),
        eye_half_width=u(0.15, 0.19),
        eye_height=u(0.07, 0.1),
        eye_y=u(-0.36, -0.3),
        brow_y=u(-0.64, -0.57),
        brow_arch=u(0.03, 0.1),
        brow_thickness=u(0.035, 0.065),
        brow_inner_x=u(0.11, 0.18),
        brow_outer_x=u(0.74, 0.86),
        nose_tip_y=u(-0.02, 0.08),
        nose_half_width=u(0.16, 0.24),
        mouth_y=u(0.42, 0.5),
        mouth_half_width=u(0.26, 0.34),
        upper_lip=u(0.05, 0.08),
        lower_lip=u(0.07, 0.11),
        iris_radius=u(0.065, 0.085),
        gaze=(float(u(-0.25, 0.25)), float(u(-0.15, 0.15))),
        skin=_colour(skin),
        lips=_colour(lips),
        hair=_colour(hair),
        brows=_colour(hair * 0.8),
        iris=_colour(iris),
        clothes=_colour(rng.uniform(20, 230, 3)),
        background=background,
        background_angle=float(u(0, 2 * math.pi)),
        clutter=clutter,
        hair_style=int(rng.integers(0, 3)),
        scale=u(0.25, 0.3),
        rotation=u(-10, 10),
        offset=(float(u(-0.04, 0.04)), float(u(-0.03, 0.03))),
        noise=u(0, 8),
        noise_seed=int(rng.integers(2**31)),
    )
