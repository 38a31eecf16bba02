"""Expressions of the synthetic faces: which action units (AUs) are drawn, with which intensity, for which emotion."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..faba import AU_NAMES as FACS_AU_NAMES
from ..faba import EMOTION_LABELS, SCORED_AUS


#: The AUs the renderer can draw, in order.
RENDERED_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 24, 25, 26, 43)
#: Their FACS names (the same names the REGE parsers and the structured output use).
AU_NAMES: dict[int, str] = {au: FACS_AU_NAMES[au] for au in RENDERED_AUS}
#: An AU counts as present (label, description) when its intensity is at least this.
AU_THRESHOLD = 0.3

#: Emotion names in the official class order (Happiness 0 ... Fear 6), spelt as FABA-Instruct's labels.
EMOTIONS: tuple[str, ...] = EMOTION_LABELS

#: Core AUs (with typical intensity) that make up each emotion, after EMFACS-style prototypes.
EMOTION_PROTOTYPES: dict[str, dict[int, float]] = {
    "Happiness": {6: 0.8, 12: 1.0},
    "Sadness": {1: 0.9, 4: 0.6, 15: 0.9},
    "Surprise": {1: 1.0, 2: 1.0, 5: 0.9, 25: 0.9, 26: 0.9},
    "Anger": {4: 1.0, 5: 0.6, 7: 0.8},
    "Neutral": {},
    "Disgust": {10: 0.9, 15: 0.5, 17: 0.6},
    "Fear": {1: 0.9, 2: 0.8, 4: 0.7, 5: 1.0, 20: 0.6, 25: 0.8, 26: 0.5},
}
# Optional AUs an emotion sample may add (probability, typical intensity).
_EMOTION_OPTIONAL_AUS: dict[str, dict[int, tuple[float, float]]] = {
    "Happiness": {25: (0.4, 0.6)},
    "Sadness": {17: (0.4, 0.6)},
    "Surprise": {},
    "Anger": {23: (0.5, 0.8), 24: (0.4, 0.7), 17: (0.3, 0.5)},
    "Neutral": {},
    "Disgust": {9: (0.7, 0.8), 4: (0.4, 0.5)},
    "Fear": {},
}


def _validate_aus(aus: Mapping[int, float] | None) -> dict[int, float]:
    if aus is None:
        return {}
    if not isinstance(aus, Mapping):
        raise ValueError(f"aus must be a mapping {{AU number: intensity in [0, 1]}}, got {type(aus).__name__}")
    checked = {}
    for au, intensity in aus.items():
        if isinstance(au, bool) or not isinstance(au, (int, np.integer)) or int(au) not in AU_NAMES:
            raise ValueError(f"aus: AU {au!r} cannot be rendered; supported AUs are {list(RENDERED_AUS)}")
        value = float(intensity)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"aus: intensity of AU{au} must be in [0, 1], got {intensity!r}")
        checked[int(au)] = value
    return checked


def _as_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be an int seed or a numpy Generator, got {type(rng).__name__}")


def active_aus(aus: Mapping[int, float], threshold: float = AU_THRESHOLD) -> list[int]:
    """Sorted AU numbers whose intensity is at least `threshold`."""
    return sorted(int(au) for au, intensity in aus.items() if intensity >= threshold)


def au_label(aus: Mapping[int, float], threshold: float = AU_THRESHOLD) -> str:
    """The FABA eval `label` string: active AU numbers, sorted, joined by ', ' (e.g. "1, 2, 4")."""
    return ", ".join(str(au) for au in active_aus(aus, threshold))


def _emotion_aus(rng: np.random.Generator, emotion: str) -> dict[int, float]:
    aus = {}
    for au, typical in EMOTION_PROTOTYPES[emotion].items():
        aus[au] = float(np.clip(typical * rng.uniform(0.75, 1.15), 0.45, 1.0))
    for au, (probability, typical) in _EMOTION_OPTIONAL_AUS[emotion].items():
        if rng.uniform() < probability:
            aus[au] = float(np.clip(typical * rng.uniform(0.75, 1.25), 0.4, 1.0))
    return _resolve_conflicts(aus, rng)


def _resolve_conflicts(aus: dict[int, float], rng: np.random.Generator) -> dict[int, float]:
    """Drop or add AUs so the combination is drawable and its label matches what the image shows."""
    if 26 in aus and 25 not in aus:  # a dropped jaw always parts the lips here
        aus[25] = max(0.5, aus[26])
    if 24 in aus and 25 in aus:  # pressed lips cannot be apart
        del aus[24]
    if 23 in aus and 24 in aus:
        del aus[23 if rng.uniform() < 0.5 else 24]
    if 12 in aus and 15 in aus:
        del aus[12 if rng.uniform() < 0.5 else 15]
    if 20 in aus and 23 in aus:
        del aus[20 if rng.uniform() < 0.5 else 23]
    if 43 in aus:  # closed eyes hide the upper-lid raise and the lid tightening
        aus.pop(5, None)
        aus.pop(7, None)
    return dict(sorted(aus.items()))


def sample_aus(rng: int | np.random.Generator, emotion: str | None = None) -> tuple[dict[int, float], str | None]:
    """Random AU intensities: an emotion prototype (when `emotion` is given, or half the time) or a free combination.

    Returns (aus, emotion) where emotion is None for a free combination. Every scored AU gets positives.
    """
    rng = _as_rng(rng)
    if emotion is not None:
        if emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {list(EMOTIONS)}, got {emotion!r}")
        return _emotion_aus(rng, emotion), emotion
    if rng.uniform() < 0.5:
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        return _emotion_aus(rng, emotion), emotion
    aus: dict[int, float] = {}
    while not aus:
        for au in RENDERED_AUS:
            probability = 0.22 if au in SCORED_AUS and au != 43 else 0.1
            if rng.uniform() < probability:
                aus[au] = float(rng.uniform(0.9, 1.0) if au == 43 else rng.uniform(0.35, 1.0))
        aus = _resolve_conflicts(aus, rng)
    return aus, None
