"""FABA-Bench metrics: REGE (`compute_rege`, or the `evaluate` module from `load_rege`), the traditional AU / FER
protocols, and the AU / emotion text parsers shared with model post-processing. No torch imports here: the only
module of the package this one imports is the vocabulary, `transformers_emola.faba` (re-exported for convenience).

Example:
    >>> from transformers_emola.metrics import compute_rege
    >>> result = compute_rege(["AU1 and AU2 are raised."], ["AU1 and AU2 are active."], ["1, 2"], task="au",
    ...                       mode="strict")
    >>> result["s_re"]
    100.0
"""

from __future__ import annotations

from pathlib import Path

from ..faba import AU_NAMES, AU_SETS, EMOTIONS, FABA_AUS, SCORED_AUS, TASKS, AUSet
from .parsing import (
    EMOTION_KEYWORDS,
    PAPER_EMOTION_KEYWORDS,
    AffectAnalysis,
    AUMention,
    ParsedEmotion,
    emotion_label_to_index,
    parse_affect,
    parse_au_label,
    parse_aus,
    parse_emotion,
)
from .rouge_l import RougeError, rouge_l_f
from .scoring import compute_au_f1_folds, compute_fer_accuracy, compute_rege


#: Path of the `evaluate` module script (a metric card README.md lies beside it).
REGE_MODULE_PATH = Path(__file__).resolve().parent / "rege" / "rege.py"


def load_rege(**kwargs):
    """The REGE metric as an `evaluate.EvaluationModule`, loaded from the local script (works offline).

    Keyword arguments go to `evaluate.load` (e.g. `experiment_id`, `keep_in_memory`).

    Example:
        >>> rege = load_rege()
        >>> result = rege.compute(predictions=["AU1 is raised."], references=["AU1 is raised."], labels=["1"],
        ...                       task="au")
        >>> result["s_ge"]
        99.9999995
    """
    try:
        import evaluate
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            'load_rege needs the `evaluate` package: pip install "transformers-emola[eval]"'
        ) from error
    return evaluate.load(str(REGE_MODULE_PATH), **kwargs)


__all__ = [
    "AU_NAMES",
    "AU_SETS",
    "EMOTIONS",
    "EMOTION_KEYWORDS",
    "FABA_AUS",
    "PAPER_EMOTION_KEYWORDS",
    "REGE_MODULE_PATH",
    "SCORED_AUS",
    "TASKS",
    "AUMention",
    "AUSet",
    "AffectAnalysis",
    "ParsedEmotion",
    "RougeError",
    "compute_au_f1_folds",
    "compute_fer_accuracy",
    "compute_rege",
    "emotion_label_to_index",
    "load_rege",
    "parse_affect",
    "parse_au_label",
    "parse_aus",
    "parse_emotion",
    "rouge_l_f",
]
