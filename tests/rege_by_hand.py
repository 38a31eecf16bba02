"""REGE recomputed from its definition, for tests that check a report against numbers the package did not compute.

The official `eval_FABA.py` (paper mode), written out plainly:

- predicted AUs: every `AU(\\d+)` in the text whose digits are one of FABA's 20 AU numbers ("AU06" is not AU 6);
  label AUs: the label split on ", ";
- per scored AU (1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43): binary F1 = 2 TP / (2 TP + FP + FN); an AU whose labels
  and predictions are all one class is left out (sklearn's 1x1 confusion matrix); S_re = mean F1 x 100;
- S_ge: the PyPI `rouge` package's ROUGE-L F of each (prediction, reference), averaged x 100; samples on which the
  package raises are left out.
"""

import re

import pytest

FABA_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27, 43)
FABA_SCORED_AUS = (1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43)


def predicted_aus(text: str) -> set[int]:
    return {int(digits) for digits in re.findall(r"AU(\d+)", text) if digits in {str(au) for au in FABA_AUS}}


def label_aus(label: str) -> set[int]:
    return {int(piece) for piece in label.split(", ") if piece in {str(au) for au in FABA_AUS}}


def paper_per_au_f1(predictions: list[str], labels: list[str]) -> dict[int, float | None]:
    """AU -> F1 x 100, None when left out."""
    predicted = [predicted_aus(text) for text in predictions]
    actual = [label_aus(label) for label in labels]
    table = {}
    for au in FABA_SCORED_AUS:
        y_pred = [au in aus for aus in predicted]
        y_true = [au in aus for aus in actual]
        if len(set(y_pred) | set(y_true)) == 1:
            table[au] = None
            continue
        tp = sum(p and t for p, t in zip(y_pred, y_true))
        fp = sum(p and not t for p, t in zip(y_pred, y_true))
        fn = sum(t and not p for p, t in zip(y_pred, y_true))
        table[au] = 100 * 2 * tp / (2 * tp + fp + fn)
    return table


def mean_f1(table: dict[int, float | None]) -> float:
    scored = [f1 for f1 in table.values() if f1 is not None]
    return sum(scored) / len(scored) if scored else float("nan")


def package_s_ge(predictions: list[str], references: list[str]) -> float:
    rouge = pytest.importorskip("rouge").Rouge()
    scores = []
    for prediction, reference in zip(predictions, references):
        try:
            scores.append(rouge.get_scores(prediction, reference, avg=True)["rouge-l"]["f"])
        except (ValueError, RecursionError):  # the official script's bare `except` skips the sample
            continue
    return 100 * sum(scores) / len(scores) if scores else float("nan")
