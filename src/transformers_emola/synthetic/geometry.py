"""Geometry of the synthetic faces: the 68 iBUG 300-W landmarks of a neutral face, moved by the action units."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .appearance import FaceAppearance
from .expressions import _validate_aus


_R_BROW = np.array([17, 18, 19, 20, 21])  # outer -> inner (subject's right, image left)
_L_BROW = np.array([26, 25, 24, 23, 22])  # outer -> inner
_UPPER_LIDS = np.array([37, 38, 43, 44])
_LOWER_LIDS = np.array([41, 40, 47, 46])  # paired with _UPPER_LIDS (same x)
_MOUTH_CORNERS = np.array([48, 54, 60, 64])
_UPPER_OUTER = np.array([49, 50, 51, 52, 53])
_LOWER_OUTER = np.array([59, 58, 57, 56, 55])  # same left-to-right order as _UPPER_OUTER
_UPPER_INNER = np.array([61, 62, 63])
_LOWER_INNER = np.array([67, 66, 65])  # paired with _UPPER_INNER
# Inner-lip point under each outer-lip point (left to right), used to thin lips and keep them ordered.
_UPPER_OUTER_PAIR = np.array([61, 61, 62, 63, 63])
_LOWER_OUTER_PAIR = np.array([67, 67, 66, 65, 65])
_NEAR_CORNERS = np.array([49, 53, 59, 55])


def _neutral_landmarks(look: FaceAppearance) -> np.ndarray:
    points = np.zeros((68, 2))
    # Jaw 0-16: a superellipse arc from ear level (subject's right) round the chin.
    phi = np.linspace(0.0, math.pi, 17)
    exponent = 2.0 / look.jaw_squareness
    cos, sin = np.cos(phi), np.sin(phi)
    jaw_top = look.eye_y - 0.02
    points[0:17, 0] = -look.jaw_half_width * np.sign(cos) * np.abs(cos) ** exponent
    points[0:17, 1] = jaw_top + look.jaw_height * np.abs(sin) ** exponent
    # Brows 17-21 (outer -> inner), mirrored to 22-26 (inner -> outer).
    t = np.linspace(0.0, 1.0, 5)
    brow_x = -(look.brow_outer_x - (look.brow_outer_x - look.brow_inner_x) * t)
    brow_y = look.brow_y - look.brow_arch * np.sin(math.pi * (0.15 + 0.7 * t)) + 0.03 * (1 - t)
    points[17:22] = np.stack([brow_x, brow_y], axis=1)
    points[22:27] = np.stack([-brow_x[::-1], brow_y[::-1]], axis=1)
    # Nose: bridge 27-30 down to the tip, base 31-35 left to right.
    points[27:31, 0] = 0.0
    points[27:31, 1] = np.linspace(look.eye_y - 0.04, look.nose_tip_y, 4)
    base = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    points[31:36, 0] = look.nose_half_width * base
    points[31:36, 1] = look.nose_tip_y + np.array([0.04, 0.075, 0.085, 0.075, 0.04])
    # Eyes: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid (subject's right); 42-47 mirrored.
    w, h_up, h_low = look.eye_half_width, look.eye_height, look.eye_height * 0.85
    for centre_x, idx in ((-look.eye_spacing, np.arange(36, 42)), (look.eye_spacing, np.arange(42, 48))):
        offsets = np.array(
            [[-w, 0.01], [-0.35 * w, -h_up], [0.35 * w, -h_up], [w, 0.0], [0.35 * w, h_low], [-0.35 * w, h_low]]
        )
        if centre_x > 0:  # left eye starts at its inner corner: mirror the right eye's template
            offsets = offsets[[3, 2, 1, 0, 5, 4]] * np.array([-1.0, 1.0])
        points[idx] = offsets + np.array([centre_x, look.eye_y])
    # Mouth: outer 48-59, inner 60-67 (closed: inner upper and lower lips coincide).
    mw, my, up, low = look.mouth_half_width, look.mouth_y, look.upper_lip, look.lower_lip
    points[48] = (-mw, my)
    points[49:54] = np.stack(
        [mw * np.array([-0.6, -0.22, 0.0, 0.22, 0.6]), my - up * np.array([0.8, 1.0, 0.85, 1.0, 0.8])], axis=1
    )
    points[54] = (mw, my)
    points[55:60] = np.stack(
        [mw * np.array([0.6, 0.25, 0.0, -0.25, -0.6]), my + low * np.array([0.8, 0.98, 1.0, 0.98, 0.8])], axis=1
    )
    points[60:68, 0] = mw * np.array([-0.85, -0.4, 0.0, 0.4, 0.85, 0.4, 0.0, -0.4])
    points[60:68, 1] = my
    return points


def landmarks_for_aus(aus: Mapping[int, float] | None, appearance: FaceAppearance | None = None) -> np.ndarray:
    """The 68 landmarks (face units, before pose) of `appearance` showing `aus` ({AU: intensity in [0, 1]})."""
    look = appearance or FaceAppearance()
    a = _validate_aus(aus)
    get = lambda au: a.get(au, 0.0)  # noqa: E731
    points = _neutral_landmarks(look)
    side = np.sign(np.round(points[:, 0], 6))  # -1 image left, +1 image right, 0 on the midline

    def move(indices, dy=0.0, outward=0.0):
        indices = np.asarray(indices)
        points[indices, 1] += dy
        points[indices, 0] += outward * side[indices]

    # Brows.
    inner = np.array([0.0, 0.15, 0.4, 0.75, 1.0])
    outer = np.array([1.0, 0.8, 0.5, 0.2, 0.0])
    for brow in (_R_BROW, _L_BROW):
        move(brow, dy=-0.14 * get(1) * inner - 0.12 * get(2) * outer)
        move(brow, dy=0.09 * get(4) * np.array([0.5, 0.6, 0.75, 0.9, 1.0]))
        move(brow, outward=-0.07 * get(4) * np.array([0.0, 0.15, 0.35, 0.65, 1.0]))
        move(brow, dy=0.035 * get(9) * inner)
    # Eyelids.
    move(_UPPER_LIDS, dy=-0.045 * get(5) + 0.02 * get(7) + 0.012 * get(4))
    move(_LOWER_LIDS, dy=-0.025 * get(6) - 0.035 * get(7))
    move([36, 45], dy=-0.012 * get(6))
    # Nose (wings pulled up by the nose wrinkler and the upper lip raiser).
    move(np.arange(31, 36), dy=-0.045 * get(9) - 0.015 * get(10))
    move([31, 35], outward=0.02 * get(9))
    # Lips.
    a12, a15, a20, a23 = get(12), get(15), get(20), get(23)
    move(_MOUTH_CORNERS, dy=-0.1 * a12 + 0.075 * a15 + 0.02 * a20, outward=0.07 * a12 - 0.01 * a15 + 0.08 * a20)
    move(_MOUTH_CORNERS, outward=-0.06 * a23 - 0.02 * get(24))
    move(_NEAR_CORNERS, dy=-0.045 * a12 + 0.035 * a15, outward=0.03 * a12 + 0.04 * a20 - 0.03 * a23)
    move([61, 63, 65, 67], dy=-0.04 * a12 + 0.03 * a15, outward=0.025 * a12 + 0.03 * a20)
    move([50, 52, 56, 58], dy=-0.015 * a12 + 0.01 * a15)
    # AU10 upper lip raiser.
    move(_UPPER_OUTER, dy=-get(10) * np.array([0.05, 0.07, 0.06, 0.07, 0.05]))
    move(_UPPER_INNER, dy=-0.015 * get(10))
    # AU17 chin raiser: chin and lower lip pushed up, corners slightly down.
    a17 = get(17)
    move(_LOWER_OUTER, dy=-0.04 * a17)
    move(np.concatenate([_UPPER_INNER, _LOWER_INNER]), dy=-0.025 * a17)
    move(_MOUTH_CORNERS, dy=0.02 * a17)
    move([6, 7, 8, 9, 10], dy=-a17 * np.array([0.01, 0.03, 0.04, 0.03, 0.01]))
    # AU25 lips part and AU26 jaw drop.
    a25, a26 = get(25), get(26)
    move(_UPPER_INNER, dy=-0.02 * a25 * np.array([0.7, 1.0, 0.7]))
    move(_UPPER_OUTER[1:4], dy=-0.01 * a25)
    move(_LOWER_INNER, dy=(0.045 * a25 + 0.17 * a26) * np.array([0.75, 1.0, 0.75]))
    move(_LOWER_OUTER, dy=0.04 * a25 * np.array([0.5, 0.8, 1.0, 0.8, 0.5]))
    move(_LOWER_OUTER, dy=0.17 * a26 * np.array([0.6, 0.9, 1.0, 0.9, 0.6]))
    move(_MOUTH_CORNERS, dy=0.04 * a26, outward=-0.03 * a26)
    move([49, 53], dy=0.01 * a26)
    jaw = np.arange(2, 15)
    move(jaw, dy=0.18 * a26 * np.sin(math.pi * (jaw - 2) / 12) ** 1.5)
    # Lip thinning (AU20 stretch, AU23 tighten, AU24 press): outer lip contour pulled toward the inner one.
    thickness = (1 - 0.3 * a20) * (1 - 0.35 * a23) * (1 - 0.45 * get(24))
    for outer_lip, pair in ((_UPPER_OUTER, _UPPER_OUTER_PAIR), (_LOWER_OUTER, _LOWER_OUTER_PAIR)):
        points[outer_lip, 1] = points[pair, 1] + (points[outer_lip, 1] - points[pair, 1]) * thickness
    # AU24 presses the lips shut: inner lips meet in the middle, the lower lip follows.
    a24 = get(24)
    if a24 > 0:
        middle = (points[_UPPER_INNER, 1] + points[_LOWER_INNER, 1]) / 2
        shift_low = (middle - points[_LOWER_INNER, 1]) * a24
        points[_UPPER_INNER, 1] += (middle - points[_UPPER_INNER, 1]) * a24
        points[_LOWER_INNER, 1] += shift_low
        points[_LOWER_OUTER, 1] += shift_low[[0, 0, 1, 2, 2]]
    # AU43 closes the eyes: the upper lids come down onto the lower lids (eye aspect ratio -> 0).
    a43 = get(43)
    points[_UPPER_LIDS, 1] += (points[_LOWER_LIDS, 1] - points[_UPPER_LIDS, 1]) * a43
    # Keep every contour ordered: lids and lips never cross.
    points[_UPPER_LIDS, 1] = np.minimum(points[_UPPER_LIDS, 1], points[_LOWER_LIDS, 1])
    points[_LOWER_INNER, 1] = np.maximum(points[_LOWER_INNER, 1], points[_UPPER_INNER, 1])
    points[_UPPER_OUTER, 1] = np.minimum(points[_UPPER_OUTER, 1], points[_UPPER_OUTER_PAIR, 1] - 0.015)
    points[_LOWER_OUTER, 1] = np.maximum(points[_LOWER_OUTER, 1], points[_LOWER_OUTER_PAIR, 1] + 0.015)
    return points
