"""Painting a synthetic face from its landmarks: the image agrees with the landmarks by construction."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ..faba import TASKS
from ..facial_prior.priors import normalize_landmarks
from .appearance import FaceAppearance, _colour, sample_appearance
from .expressions import EMOTIONS, _as_rng, _validate_aus, active_aus, sample_aus
from .geometry import _LOWER_INNER, _UPPER_INNER, landmarks_for_aus


_GRADIENT_GRID = 16
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


@dataclass
class SyntheticFace:
    """A rendered face with its exact landmarks and the expression that produced it.

    `landmarks` are (68, 2) float32 pixel coordinates (x, y) in the iBUG 300-W order; `facial_prior` is the same
    136-d normalisation the 68-point landmark backends produce. `emotion` is the emotion whose prototype generated
    `aus`, or None for a free AU combination.
    """

    image: Image.Image
    landmarks: np.ndarray
    aus: dict[int, float]
    emotion: str | None = None
    appearance: FaceAppearance = field(default_factory=FaceAppearance, repr=False)

    @property
    def active_aus(self) -> list[int]:
        return active_aus(self.aus)

    @property
    def facial_prior(self) -> np.ndarray:
        return normalize_landmarks(self.landmarks)


def _shade(colour: Sequence[int], factor: float) -> tuple[int, int, int]:
    return _colour(c * factor for c in colour)


def _mix(first: Sequence[int], second: Sequence[int], weight: float) -> tuple[int, int, int]:
    return _colour(f * (1 - weight) + s * weight for f, s in zip(first, second))


def _background(size: int, look: FaceAppearance) -> Image.Image:
    # The linear gradient is computed on a coarse grid and upsampled: identical look, a tenth of the cost.
    first, second = (np.array(c, np.float32) for c in look.background)
    grid = (np.arange(_GRADIENT_GRID, dtype=np.float32) + 0.5) / _GRADIENT_GRID - 0.5
    ramp = math.cos(look.background_angle) * grid[None, :] + math.sin(look.background_angle) * grid[:, None]
    ramp = np.clip(ramp + 0.5, 0.0, 1.0)[..., None]
    pixels = np.round(first + (second - first) * ramp).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB").resize((size, size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for x, y, w, h, r, g, b in look.clutter:
        box = [x * size, y * size, (x + w) * size, (y + h) * size]
        draw.ellipse(box, fill=(r, g, b)) if w > h else draw.rectangle(box, fill=(r, g, b))
    return image


def _pose(look: FaceAppearance, size: int):
    """Affine map face units -> pixels."""
    angle = math.radians(look.rotation)
    scale = look.scale * size
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([0.5 + look.offset[0], 0.5 + look.offset[1]]) * size
    origin = np.array([0.0, -0.05])  # the face point placed at the image centre

    def to_pixels(points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - origin) @ rotation.T + centre

    return to_pixels, scale


def _arc(x_half: float, top: float, bottom: float, centre_x: float = 0.0, n: int = 15, squareness: float = 2.4):
    """Upper half of a superellipse from (centre_x + x_half, bottom) over `top` to (centre_x - x_half, bottom)."""
    theta = np.linspace(0.0, math.pi, n)
    exponent = 2.0 / squareness
    cos, sin = np.cos(theta), np.sin(theta)
    x = centre_x + x_half * np.sign(cos) * np.abs(cos) ** exponent
    y = bottom - (bottom - top) * np.abs(sin) ** exponent
    return np.stack([x, y], axis=1)


def _xy(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def _paint(points: np.ndarray, aus: dict[int, float], look: FaceAppearance, size: int):
    """Draw the face from its landmarks (face units); returns the image and the landmarks in pixels."""
    to_px, unit = _pose(look, size)
    get = lambda au: aus.get(au, 0.0)  # noqa: E731
    image = _background(size, look)
    draw = ImageDraw.Draw(image)
    px = to_px(points)
    skin, dark_skin = look.skin, _shade(look.skin, 0.72)
    line = lambda width: max(1, int(round(width * unit)))  # noqa: E731

    # Shoulders, neck, hair behind the head, ears.
    chin_y = points[8, 1]
    shoulders = np.array([[-2.2, 3.5], [-2.0, chin_y + 0.55], [-0.6, chin_y + 0.3], [0.6, chin_y + 0.3],
                          [2.0, chin_y + 0.55], [2.2, 3.5]])
    draw.polygon(_xy(to_px(shoulders)), fill=look.clothes)
    neck = np.array([points[4], [points[4, 0] * 0.9, chin_y + 0.5], [points[12, 0] * 0.9, chin_y + 0.5], points[12]])
    draw.polygon(_xy(to_px(neck)), fill=_shade(skin, 0.85))
    jaw_top = points[0, 1]
    head_half = (points[16, 0] - points[0, 0]) / 2
    head_centre = (points[16, 0] + points[0, 0]) / 2
    forehead_top = jaw_top - look.forehead_height - 0.3
    if look.hair_style:
        hair_back = _arc(head_half + 0.1, forehead_top - 0.12, jaw_top + 0.35, head_centre, squareness=2.6)
        draw.polygon(_xy(to_px(hair_back)), fill=look.hair)
    for ear_x, sign in ((points[1, 0], -1), (points[15, 0], 1)):
        ear_centre = to_px(np.array([[ear_x + 0.02 * sign, points[1, 1] + 0.03]]))[0]
        rx, ry = 0.1 * unit, 0.2 * unit
        draw.ellipse([ear_centre[0] - rx, ear_centre[1] - ry, ear_centre[0] + rx, ear_centre[1] + ry],
                     fill=_shade(skin, 0.92), outline=dark_skin)

    # Face: jaw contour closed by a forehead arc.
    forehead = _arc(head_half, forehead_top, jaw_top, head_centre, squareness=2.4)[1:-1]
    outline = np.concatenate([points[0:17], forehead])
    draw.polygon(_xy(to_px(outline)), fill=skin, outline=dark_skin)

    # Cheeks (AU6 raises and reddens them) and folds driven by the AUs.
    blush = _mix(skin, (225, 90, 90), 0.12 + 0.18 * get(6))
    for eye, lower in ((np.arange(36, 42), [41, 40]), (np.arange(42, 48), [47, 46])):
        centre = points[eye].mean(axis=0) + np.array([0.0, 0.34 - 0.1 * get(6)])
        centre[0] += 0.1 * np.sign(centre[0])
        c = to_px(centre[None])[0]
        r = 0.15 * unit
        draw.ellipse([c[0] - r, c[1] - 0.75 * r, c[0] + r, c[1] + 0.75 * r], fill=blush)
        if get(6) >= 0.15:  # infraorbital furrow under the raised cheek
            furrow = points[lower] + np.array([0.0, 0.07])
            furrow = np.concatenate([points[[eye[0]]] + [0, 0.04], furrow, points[[eye[3]]] + [0, 0.04]])
            draw.line(_xy(to_px(furrow)), fill=_shade(skin, 0.8), width=line(0.012 + 0.012 * get(6)), joint="curve")
            outer_corner = points[eye[0]] if eye[0] == 36 else points[45]
            direction = -1.0 if eye[0] == 36 else 1.0
            for k in (-1, 0, 1):  # crow's feet
                start = outer_corner + np.array([0.04 * direction, 0.03 * k])
                end = start + np.array([0.09 * direction, 0.035 * k])
                draw.line(_xy(to_px(np.stack([start, end]))), fill=_shade(skin, 0.8), width=line(0.01))
    fold = get(12) + 0.6 * get(10) + 0.5 * get(9) + 0.3 * get(6)
    if fold >= 0.15:
        for wing, corner in ((31, 48), (35, 54)):
            direction = np.sign(points[wing, 0])
            start = points[wing] + np.array([0.07 * direction, -0.02])
            end = points[corner] + np.array([0.06 * direction, 0.05])
            middle = (start + end) / 2 + np.array([0.05 * direction, 0.0])
            draw.line(_xy(to_px(np.stack([start, middle, end]))), fill=_shade(skin, 0.78),
                      width=line(0.01 + 0.012 * min(fold, 1.0)), joint="curve")
    brow_raise = max(get(1), get(2))
    if brow_raise >= 0.15:  # horizontal forehead lines
        top = min(points[17:27, 1].min(), jaw_top)
        span = 0.25 + 0.35 * get(2) / max(brow_raise, 1e-6)
        for k in range(3):
            y = top - 0.1 - 0.07 * k
            wave = np.array([[-span, y + 0.015], [0.0, y - 0.01], [span, y + 0.015]])
            draw.line(_xy(to_px(wave)), fill=_shade(skin, 0.82), width=line(0.006 + 0.01 * brow_raise), joint="curve")
    if get(4) >= 0.15:  # vertical glabellar lines
        y0 = (points[21, 1] + points[22, 1]) / 2
        for x in (-0.05, 0.05):
            draw.line(_xy(to_px(np.array([[x, y0 - 0.06], [x * 0.7, y0 + 0.08]]))), fill=_shade(skin, 0.75),
                      width=line(0.008 + 0.012 * get(4)))
    if get(9) >= 0.15:  # wrinkles across the nasal bridge
        for k in range(3):
            y = points[28, 1] + 0.05 * k
            draw.line(_xy(to_px(np.array([[-0.08, y + 0.01], [0.0, y - 0.01], [0.08, y + 0.01]]))),
                      fill=_shade(skin, 0.75), width=line(0.01 * get(9) + 0.004), joint="curve")
    if get(17) >= 0.15:  # chin boss bulge under the lower lip
        chin = points[[58, 57, 56]] + np.array([0.0, 0.1])
        chin = np.concatenate([[points[59] + [0.0, 0.12]], chin, [points[55] + [0.0, 0.12]]])
        draw.line(_xy(to_px(chin)), fill=_shade(skin, 0.78), width=line(0.01 + 0.012 * get(17)), joint="curve")

    if look.hair_style:  # hair over the forehead, drawn over the forehead lines
        hairline_top = forehead_top + (0.32 if look.hair_style == 2 else 0.22)
        cap_outer = _arc(head_half + 0.03, forehead_top - 0.04, jaw_top - 0.05, head_centre, squareness=2.6)
        cap_inner = _arc(head_half - 0.04, hairline_top, jaw_top - 0.05, head_centre, squareness=2.0)[::-1]
        draw.polygon(_xy(to_px(np.concatenate([cap_outer, cap_inner]))), fill=look.hair)

    # Nose.
    nose_shadow = _shade(skin, 0.68)
    draw.line(_xy(px[[27, 28, 29, 30]] + (unit * 0.045, 0)), fill=_shade(skin, 0.88), width=line(0.015))
    draw.line(_xy(px[[31, 32, 33, 34, 35]]), fill=nose_shadow, width=line(0.02), joint="curve")
    for index in (32, 34):
        c = px[index] - (0, 0.012 * unit)
        rx, ry = 0.04 * unit, 0.022 * unit
        draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=_shade(skin, 0.45))

    # Brows.
    brow_width = line(look.brow_thickness)
    for brow in (np.arange(17, 22), np.arange(22, 27)):
        draw.line(_xy(px[brow]), fill=look.brows, width=brow_width, joint="curve")

    # Eyes: sclera polygon, iris clipped to the lid opening, lid lines. Closed eyes are a single lid line.
    lash = (35, 25, 25)
    for eye in (np.arange(36, 42), np.arange(42, 48)):
        corner_a, corner_b = px[eye[0]], px[eye[3]]
        upper, lower = px[eye[[1, 2]]], px[eye[[5, 4]]]
        opening = float(np.linalg.norm((lower - upper).mean(axis=0)))
        lid = _xy(px[eye[[0, 1, 2, 3]]])
        if opening >= 1.0:
            draw.polygon(_xy(px[eye]), fill=(238, 236, 232))
            axis = corner_b - corner_a
            middle = (upper.mean(axis=0) + lower.mean(axis=0)) / 2
            radius = look.iris_radius * unit
            rx, ry = min(radius, 0.3 * np.linalg.norm(axis)), min(radius, 0.5 * opening)
            # both eyes look the same way; the vertical gaze is bounded by the lid opening
            centre = middle + axis * 0.5 * look.gaze[0] + (0.0, look.gaze[1] * (0.5 * opening - ry))
            draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry], fill=look.iris)
            rp, rq = rx * 0.45, min(ry, rx * 0.45)
            draw.ellipse([centre[0] - rp, centre[1] - rq, centre[0] + rp, centre[1] + rq], fill=(10, 10, 12))
            draw.line(_xy(px[eye[[3, 4, 5, 0]]]), fill=_shade(skin, 0.7), width=line(0.008))
            draw.line(lid, fill=lash, width=line(0.018), joint="curve")
        else:
            draw.line(lid, fill=lash, width=line(0.02), joint="curve")
            draw.line(_xy(px[eye[[3, 4, 5, 0]]]), fill=lash, width=line(0.012), joint="curve")

    # Mouth: lips, the dark opening, upper teeth.
    draw.polygon(_xy(px[48:60]), fill=look.lips, outline=_shade(look.lips, 0.8))
    gap = points[_LOWER_INNER, 1] - points[_UPPER_INNER, 1]
    if gap.max() * unit >= 1.0:
        draw.polygon(_xy(px[60:68]), fill=(45, 18, 22))
        inner_upper = points[[60, 61, 62, 63, 64]]
        teeth_depth = np.minimum(np.concatenate([[0.0], gap, [0.0]]) * 0.35, 0.05)
        teeth = np.concatenate([inner_upper, (inner_upper + np.stack([np.zeros(5), teeth_depth], axis=1))[::-1]])
        draw.polygon(_xy(to_px(teeth)), fill=(236, 232, 220))
    else:
        draw.line(_xy(px[[60, 61, 62, 63, 64]]), fill=_shade(look.lips, 0.55), width=line(0.012), joint="curve")
    return image, px


def _add_noise(image: Image.Image, look: FaceAppearance) -> Image.Image:
    # Grey Gaussian sensor noise drawn through a 256-entry quantile table: uint8 draws are ~10x cheaper than
    # normal floats, and ImageChops adds with clipping in C.
    if look.noise <= 0:
        return image
    rng = np.random.default_rng(look.noise_seed)
    table = np.clip(np.round(128.0 + look.noise * _NORMAL_QUANTILES), 0, 255).astype(np.uint8)
    noise = table[rng.integers(0, 256, (image.height, image.width), dtype=np.uint8)]
    return ImageChops.add(image, Image.fromarray(noise, "L").convert("RGB"), 1.0, -128)


def render_face(
    aus: Mapping[int, float] | None = None,
    seed: int | np.random.Generator | None = None,
    size: int = 336,
    *,
    appearance: FaceAppearance | None = None,
    emotion: str | None = None,
) -> SyntheticFace:
    """Draw a face showing `aus` ({AU number: intensity in [0, 1]}) at `size` x `size` pixels.

    The appearance (identity, colours, pose, background, noise) comes from `appearance`, else is sampled from
    `seed`, else is the canonical frontal face; it never depends on `aus`, so one seed with different AUs renders
    the same person with different expressions. `emotion` is only recorded on the result.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16 pixels, got {size!r}")
    if emotion is not None and emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {list(EMOTIONS)} or None, got {emotion!r}")
    checked = _validate_aus(aus)
    if appearance is None:
        appearance = FaceAppearance() if seed is None else sample_appearance(_as_rng(seed))
    points = landmarks_for_aus(checked, appearance)
    image, pixels = _paint(points, checked, appearance, int(size))
    image = _add_noise(image, appearance)
    return SyntheticFace(image, pixels.astype(np.float32), checked, emotion, appearance)


def sample_face(
    rng: int | np.random.Generator,
    task: str = "au",
    emotion: str | None = None,
    size: int = 336,
) -> SyntheticFace:
    """Sample an expression for `task` ("au": prototypes and free AU combinations, "emotion": a prototype of
    `emotion` or of a uniformly drawn emotion) and render it with a random appearance."""
    rng = _as_rng(rng)
    if task not in TASKS:
        raise ValueError(f"task must be 'au' or 'emotion', got {task!r}")
    appearance = sample_appearance(rng)
    if task == "emotion" and emotion is None:
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    aus, emotion = sample_aus(rng, emotion)
    return render_face(aus, size=size, appearance=appearance, emotion=emotion)
