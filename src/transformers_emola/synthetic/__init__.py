"""Synthetic FABA-Instruct: procedurally drawn faces whose expression is driven by Action Units.

Why: FABA-Instruct images cannot ship with the project and no weights can be downloaded, yet the whole pipeline
(facial prior -> EmoLA -> REGE) must run end to end offline, and we must be able to test that the facial prior is
wired and useful. Every face here is *drawn from* its 68 iBUG 300-W landmarks, so the landmarks are exact, the image
agrees with them, and the Action Units (AUs) that moved the landmarks are the ground truth.

Layout of a face (face units, x to the image right, y down, origin at the nose tip, face half-width ~1):
the AUs displace the neutral landmarks (`landmarks_for_aus`), an affine pose maps them to pixels, and the painter
draws the jaw/forehead outline, brows, eyes (closed when AU43), nose and lips (the mouth opening dark) from them.

| module | holds |
|---|---|
| `expressions` | the AUs drawn, emotion prototypes, `sample_aus`, labels |
| `appearance` | identity, colours, pose, background: `FaceAppearance`, `sample_appearance` |
| `geometry` | `landmarks_for_aus`: the 68 landmarks of an expression |
| `rendering` | `render_face`, `sample_face`: the image painted from the landmarks |
| `descriptions` | the questions and the AU / emotion descriptions |
| `dataset` | `synthetic_faba_sample`, `write_synthetic_faba`: FABA-Instruct's layout on disk |

Example:

```python
>>> from transformers_emola.synthetic import render_face, describe_aus
>>> face = render_face({6: 0.8, 12: 1.0}, seed=0, size=128)
>>> face.image.size, face.landmarks.shape, face.active_aus
((128, 128), (68, 2), [6, 12])
>>> "AU12" in describe_aus(face.aus, rng=0)
True

```
"""

from ..faba import SCORED_AUS
from .appearance import FaceAppearance, sample_appearance
from .dataset import SyntheticSample, synthetic_faba_sample, write_synthetic_faba
from .descriptions import AU_QUESTIONS, EMOTION_QUESTIONS, describe_aus, describe_emotion
from .expressions import (
    AU_NAMES,
    AU_THRESHOLD,
    EMOTION_PROTOTYPES,
    EMOTIONS,
    RENDERED_AUS,
    active_aus,
    au_label,
    sample_aus,
)
from .geometry import landmarks_for_aus
from .rendering import SyntheticFace, render_face, sample_face

__all__ = [
    "AU_NAMES",
    "AU_QUESTIONS",
    "AU_THRESHOLD",
    "EMOTIONS",
    "EMOTION_PROTOTYPES",
    "EMOTION_QUESTIONS",
    "RENDERED_AUS",
    "SCORED_AUS",
    "FaceAppearance",
    "SyntheticFace",
    "SyntheticSample",
    "active_aus",
    "au_label",
    "describe_aus",
    "describe_emotion",
    "landmarks_for_aus",
    "render_face",
    "sample_appearance",
    "sample_aus",
    "sample_face",
    "synthetic_faba_sample",
    "write_synthetic_faba",
]
