"""The texts of the synthetic samples: the questions and the AU / emotion descriptions (the answers to learn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .expressions import AU_NAMES, AU_THRESHOLD, EMOTIONS, _as_rng, _validate_aus, active_aus


AU_QUESTIONS: tuple[str, ...] = (
    "In this face, what are the discernible action units?",
    "What AUs are conveyed by this face?",
    "What action units are present in this face?",
    "Which facial action units can you identify in this image?",
    "Describe the action units shown by this face.",
    "List the active facial action units of this person.",
)
EMOTION_QUESTIONS: tuple[str, ...] = (
    "What is the emotion of this face?",
    "What emotions are conveyed by this face?",
    "Which emotion does this facial expression show?",
    "Describe the emotion expressed by this face.",
    "How does this person feel, judging by the face?",
    "What is the facial expression of this person?",
)

# The wording below is kept free of the substrings the official emotion parser treats as negations
# ('no', 'not', 'nor', ... -- so also 'nose', 'normal', 'another'), and each emotion's text only uses that
# emotion's keywords, so both the paper-faithful and the strict REGE parsers recover the label.
_DEGREES = ((0.5, "slightly"), (0.8, "clearly"), (1.01, "strongly"))
_AU_CUES: dict[int, tuple[str, ...]] = {
    1: ("the inner ends of the eyebrows are {deg} raised", "the inner brows are {deg} lifted upward"),
    2: ("the outer parts of the eyebrows are {deg} raised", "the outer brows are {deg} lifted"),
    4: ("the eyebrows are {deg} lowered and drawn together", "the brows are {deg} pulled down toward the eyes"),
    5: ("the upper eyelids are {deg} raised, widening the eyes", "the eyes are {deg} widened by raised upper lids"),
    6: ("the cheeks are {deg} raised, narrowing the eyes from below", "the cheeks are {deg} lifted toward the eyes"),
    7: ("the eyelids are {deg} tightened", "the lower lids are {deg} tensed and raised"),
    9: ("the skin of the nasal bridge is {deg} wrinkled", "the nasal bridge is {deg} wrinkled upward"),
    10: ("the upper lip is {deg} raised", "the upper lip is {deg} lifted, deepening the nasolabial folds"),
    12: ("the lip corners are {deg} pulled up into a smile", "the corners of the mouth are {deg} pulled upward"),
    15: ("the lip corners are {deg} pulled down", "the corners of the mouth are {deg} turned downward"),
    17: ("the chin is {deg} raised, pushing the lower lip up", "the chin boss is {deg} pushed upward"),
    20: ("the lips are {deg} stretched sideways", "the mouth is {deg} stretched horizontally"),
    23: ("the lips are {deg} tightened and thinned", "the lips are {deg} narrowed and tense"),
    24: ("the lips are {deg} pressed together", "the lips are {deg} pressed firmly against each other"),
    25: ("the lips are {deg} parted", "the lips are {deg} apart, showing the teeth"),
    26: ("the jaw is {deg} dropped, opening the mouth", "the mouth is {deg} opened by a lowered jaw"),
    43: ("the eyes are closed", "the eyelids are fully shut"),
}
_AU_INTROS = (
    "This face shows the following action units:",
    "The facial expression displays several action units:",
    "Looking at this face, the active action units are:",
    "In this image, the following facial action units can be seen:",
    "The face of this person reveals these action units:",
    "Several muscle movements are visible in this face:",
)
_AU_ITEMS = ("{i}. AU{n} - {name}: {cue}.", "AU{n} ({name}): {cue}.")
_AU_OUTROS_EMOTION = (
    "Together, these movements suggest {emotion}.",
    "Overall, this combination points to {emotion}.",
    "These action units are typical of {emotion}.",
)
_AU_OUTROS_GENERIC = (
    "Together, these movements shape the overall expression.",
    "Overall, the face shows a combination of these muscle movements.",
    "These action units describe the current facial configuration.",
)
_AU_RESTING = (
    "The face is at rest: the brows, eyes and mouth stay in their relaxed default position, "
    "and the expression is calm and neutral without active action units.",
    "All facial muscles appear at rest. The eyebrows are level, the eyes are open at their usual size "
    "and the lips are closed, so the face shows a calm, neutral expression.",
    "This face shows a resting expression: the brows are level, the eyelids are relaxed and the mouth "
    "is closed, which indicates a neutral state with only baseline muscle tone.",
)

# Noun phrase naming each emotion with the official keyword, used in the first sentence.
_EMOTION_NOUNS = {
    "Happiness": "happiness",
    "Sadness": "sadness",
    "Surprise": "surprise",
    "Anger": "anger",
    "Neutral": "a neutral mood",
    "Disgust": "disgust",
    "Fear": "fear",
}
_EMOTION_OPENINGS = (
    "The face shows {emotion}.",
    "The emotion conveyed by this face is {emotion}.",
    "This person appears to express {emotion}.",
    "The expression in this image reflects {emotion}.",
    "The dominant emotion here is {emotion}.",
    "This facial expression suggests {emotion}.",
)
_EMOTION_CUE_PHRASES = {
    1: "raised inner brows",
    2: "lifted outer brows",
    4: "lowered, knitted brows",
    5: "widened eyes",
    6: "raised cheeks",
    7: "tightened eyelids",
    9: "a wrinkled nasal bridge",
    10: "a raised upper lip",
    12: "lip corners pulled up into a smile",
    15: "downturned lip corners",
    17: "a raised chin",
    20: "lips stretched sideways",
    23: "thin, tightened lips",
    24: "firmly pressed lips",
    25: "parted lips",
    26: "a dropped jaw",
    43: "closed eyes",
}
_EMOTION_CUE_SENTENCES = (
    "Visible cues include {cues}.",
    "This is shown by {cues}.",
    "The face has {cues}.",
    "The main signs are {cues}.",
)
_EMOTION_RESTING_CUES = (
    "The brows, eyes and mouth are at rest.",
    "The facial muscles are at rest and the lips are closed.",
    "The eyebrows are level and the mouth is closed.",
)
_EMOTION_SUMMARIES = {
    "Happiness": ("The look is cheerful and joyful.", "The person seems happy and cheerful.", "It is a joyful face."),
    "Sadness": ("The overall look is somber.", "The face carries a sense of distress.", "It is a somber face."),
    "Surprise": ("The look conveys astonishment.", "The person seems surprised.", "It is a startled face."),
    "Anger": ("The look is stern and irritated.", "The person seems irate.", "It is a stern face."),
    "Neutral": ("The look is calm.", "The person seems calm and composed.", "It is a calm face."),
    "Disgust": ("The look conveys distaste.", "The person seems disgusted.", "It is a face of disapproval."),
    "Fear": ("The look conveys anxiety.", "The person seems gripped by panic.", "It is a face of apprehension."),
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _degree(intensity: float) -> str:
    return next(word for limit, word in _DEGREES if intensity < limit)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_aus(
    aus: Mapping[int, float],
    rng: int | np.random.Generator | None = None,
    emotion: str | None = None,
    threshold: float = AU_THRESHOLD,
) -> str:
    """A FABA-style AU description naming every active AU as "AU<n> - <name>: <cue>." and no other AU.

    `emotion` (the prototype the AUs came from, if any) adds a closing sentence naming it.
    """
    rng = _as_rng(rng)
    aus = _validate_aus(aus)
    if emotion is not None and emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {list(EMOTIONS)} or None, got {emotion!r}")
    present = active_aus(aus, threshold)
    if not present:
        return _pick(rng, _AU_RESTING)
    item = _pick(rng, _AU_ITEMS)
    parts = [_pick(rng, _AU_INTROS)]
    for i, au in enumerate(present, start=1):
        cue = _pick(rng, _AU_CUES[au]).format(deg=_degree(aus[au]))
        parts.append(item.format(i=i, n=au, name=AU_NAMES[au], cue=cue))
    if emotion is not None and emotion != "Neutral":
        parts.append(_pick(rng, _AU_OUTROS_EMOTION).format(emotion=emotion.lower()))
    else:
        parts.append(_pick(rng, _AU_OUTROS_GENERIC))
    return " ".join(parts)


def describe_emotion(
    emotion: str,
    aus: Mapping[int, float] | None = None,
    rng: int | np.random.Generator | None = None,
    threshold: float = AU_THRESHOLD,
) -> str:
    """A FABA-style emotion description: the emotion keyword in the first sentence, then the visible cues."""
    rng = _as_rng(rng)
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {list(EMOTIONS)}, got {emotion!r}")
    aus = _validate_aus(aus)
    present = active_aus(aus, threshold)
    parts = [_pick(rng, _EMOTION_OPENINGS).format(emotion=_EMOTION_NOUNS[emotion])]
    if present:
        cues = _join([_EMOTION_CUE_PHRASES[au] for au in present])
        parts.append(_pick(rng, _EMOTION_CUE_SENTENCES).format(cues=cues))
    else:
        parts.append(_pick(rng, _EMOTION_RESTING_CUES))
    parts.append(_pick(rng, _EMOTION_SUMMARIES[emotion]))
    return " ".join(parts)
