"""The vocabulary of facial affective behaviour analysis as FABA-Instruct / FABA-Bench and EmoLA use it.

One home for the words every other module shares: the two tasks and their official questions, the system prompts,
the FACS names of the action units (AUs) and the AU sets of the benchmarks, the emotion classes, and the length of
the facial prior each landmark backend produces. Plain Python (no numpy, no torch), so the torch-free `metrics`
package, the model configuration and the CLI can all import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AU_NAMES",
    "AU_QUESTION",
    "AU_SETS",
    "AUSet",
    "DEFAULT_FACIAL_PRIOR_BACKEND",
    "EMOLA_SYSTEM_PROMPT",
    "EMOTIONS",
    "EMOTION_LABELS",
    "EMOTION_QUESTION",
    "FABA_AUS",
    "FACIAL_PRIOR_BACKENDS",
    "FACIAL_PRIOR_DIMS",
    "MISSING_FACE_POLICIES",
    "SCORED_AUS",
    "TASKS",
    "TASK_QUESTIONS",
    "VICUNA_V1_SYSTEM_PROMPT",
    "normalize_au_set",
    "normalize_tasks",
    "task_question",
]

# ---------------------------------------------------------------------------------------------------------------
# Tasks, questions, prompts
# ---------------------------------------------------------------------------------------------------------------
#: The two FABA-Bench tasks, in the order EmoLA's outputs list them.
TASKS: tuple[str, ...] = ("au", "emotion")

#: The official FABA-Bench questions (`eval_FABA.py`); the released checkpoints were evaluated with exactly these.
AU_QUESTION = "What AUs are conveyed by this face?"
EMOTION_QUESTION = "What emotions are conveyed by this face?"
TASK_QUESTIONS: dict[str, str] = {"au": AU_QUESTION, "emotion": EMOTION_QUESTION}

#: LLaVA's evaluation system prompt ("curious human"), the default of EmoLA's chat template.
EMOLA_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
#: LLaVA's conv_vicuna_v1 system prompt, used by the official *training* scripts (`--version v1`).
VICUNA_V1_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)


def task_question(task: str) -> str:
    """The official FABA-Bench question of `task` ("au" or "emotion")."""
    if task not in TASK_QUESTIONS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return TASK_QUESTIONS[task]


def normalize_tasks(tasks: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """ "au" | "emotion" | "both" | a list of them -> the ordered tuple of tasks to ask about.

    Example:
        >>> normalize_tasks("both"), normalize_tasks(["emotion", "au"])
        (('au', 'emotion'), ('au', 'emotion'))
    """
    if isinstance(tasks, str):
        tasks = TASKS if tasks == "both" else (tasks,)
    tasks = tuple(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be 'au', 'emotion', 'both' or a list of 'au'/'emotion', got {tasks!r}")
    return tuple(task for task in TASKS if task in tasks)


# ---------------------------------------------------------------------------------------------------------------
# Action units
# ---------------------------------------------------------------------------------------------------------------
#: FACS names of the AUs that appear in FABA-Instruct and the AU benchmarks (18, Lip Pucker, is GFT only).
AU_NAMES: dict[int, str] = {
    1: "Inner Brow Raiser",
    2: "Outer Brow Raiser",
    4: "Brow Lowerer",
    5: "Upper Lid Raiser",
    6: "Cheek Raiser",
    7: "Lid Tightener",
    9: "Nose Wrinkler",
    10: "Upper Lip Raiser",
    12: "Lip Corner Puller",
    14: "Dimpler",
    15: "Lip Corner Depressor",
    16: "Lower Lip Depressor",
    17: "Chin Raiser",
    18: "Lip Pucker",
    20: "Lip Stretcher",
    23: "Lip Tightener",
    24: "Lip Pressor",
    25: "Lips Part",
    26: "Jaw Drop",
    27: "Mouth Stretch",
    43: "Eyes Closed",
}


@dataclass(frozen=True)
class AUSet:
    """AUs a benchmark recognises in text (`index`) and the subset that enters the F1 mean (`scored`)."""

    name: str
    index: tuple[int, ...]
    scored: tuple[int, ...]


#: The 20 AUs of the FABA index: an `AU<n>` mention outside it is ignored.
FABA_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27, 43)
#: The 12 AUs whose F1 is averaged into FABA-Bench's AU S_re.
SCORED_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43)

#: AU sets of the official script (`AUIndicesMap` and `select_AUs` in eval_FABA.py), keyed by lower-case name.
AU_SETS: dict[str, AUSet] = {
    "faba": AUSet("faba", FABA_AUS, SCORED_AUS),
    "disfa": AUSet("disfa", (1, 2, 4, 6, 9, 12, 25, 26), (1, 2, 4, 6, 9, 12, 25, 26)),
    "bp4d": AUSet("bp4d", (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24), (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)),
    "gft": AUSet(
        "gft",
        (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 18, 20, 23, 24, 25, 26),
        (1, 2, 4, 6, 10, 12, 14, 15, 23, 24),
    ),
    "emotionet": AUSet(
        "emotionet", (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43), (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43)
    ),
}


def normalize_au_set(au_set: str | AUSet) -> AUSet:
    """The `AUSet` for a name such as "faba" or "BP4D" (case-insensitive); ValueError for an unknown one."""
    if isinstance(au_set, AUSet):
        return au_set
    if not isinstance(au_set, str) or au_set.lower() not in AU_SETS:
        raise ValueError(f"Unknown au_set {au_set!r}; expected one of {sorted(AU_SETS)}.")
    return AU_SETS[au_set.lower()]


# ---------------------------------------------------------------------------------------------------------------
# Emotions
# ---------------------------------------------------------------------------------------------------------------
#: Class order of FABA-Instruct labels (the official `emotions2num`): Happiness 0 ... Fear 6.
EMOTIONS: tuple[str, ...] = ("happiness", "sadness", "surprise", "anger", "neutral", "disgust", "fear")
#: The same classes as FABA-Instruct's annotation files spell their labels ("Happiness", ...).
EMOTION_LABELS: tuple[str, ...] = tuple(name.capitalize() for name in EMOTIONS)

# ---------------------------------------------------------------------------------------------------------------
# Facial priors
# ---------------------------------------------------------------------------------------------------------------
#: Length of the prior vector of each landmark backend (see `facial_prior`); the released checkpoints use
#: InsightFace 2d106 (106 points), the 68-point backends give 136 numbers, as does the synthetic renderer.
FACIAL_PRIOR_DIMS: dict[str, int] = {"insightface_2d106": 212, "face_alignment": 136, "dlib": 136, "synthetic": 136}
#: The extractors of `facial_prior.FacialPriorExtractor`: three landmark models and `.npy` files made beforehand.
FACIAL_PRIOR_BACKENDS: tuple[str, ...] = ("face_alignment", "dlib", "insightface_2d106", "precomputed")
#: face-alignment's 2D-FAN: no licence restriction on its weights (dlib's 68-point model is non-commercial).
DEFAULT_FACIAL_PRIOR_BACKEND = "face_alignment"
#: What a landmark backend does with an image in which it finds no face: report it, use the whole image as the
#: face, or give a zero prior.
MISSING_FACE_POLICIES: tuple[str, ...] = ("error", "full_image", "zeros")
