"""REGE (FABA-Bench) and the traditional AU / expression protocols, as pure functions.

S_rege = S_re + S_ge, both on a 0-100 scale:
* S_re (recognition): emotion -> accuracy of the class parsed from the text; AU -> mean per-AU F1 over the scored
  AUs of the AU set (12 for FABA), AUs parsed from the text.
* S_ge (generation): ROUGE-L F of the text against the reference description (pltrdy `rouge`), averaged.

`mode="paper"` reproduces `emollava/eval/eval_FABA.py` of the official EmoLA code exactly; `mode="strict"` applies
the fixes listed in `metrics/rege/README.md`. No torch, no model code here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..faba import EMOTIONS, TASKS, AUSet, normalize_au_set
from .parsing import (
    MODES,
    emotion_label_to_index,
    parse_au_label,
    parse_aus,
    parse_emotion,
)
from .rouge_l import RougeError, rouge_l_f


__all__ = ["compute_au_f1_folds", "compute_fer_accuracy", "compute_rege"]


def _check_task(task) -> str:
    if not isinstance(task, str) or task.lower() not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {list(TASKS)}.")
    return task.lower()


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {list(MODES)}.")
    return mode


def _as_list(values, name: str) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list (one entry per sample), got {type(values).__name__}.")
    return list(values)


def _check_strings(values: list, name: str) -> None:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(value).__name__}: {value!r:.80}")


def _convert_each(values: list, convert, name: str) -> list:
    """`convert` every value; a ValueError names the failing position (e.g. "labels[3]: ...")."""
    converted = []
    for i, value in enumerate(values):
        try:
            converted.append(convert(value))
        except ValueError as error:
            raise ValueError(f"{name}[{i}]: {error}") from None
    return converted


def _mean(values) -> float:
    """np.mean as the official script takes it (pairwise summation), NaN without a warning for no values."""
    return float(np.mean(np.asarray(values, dtype=np.float64))) if len(values) else math.nan


def _binary_scores(tp: int, fp: int, fn: int, tn: int) -> tuple[float, float]:
    """Accuracy and F1 as the official `get_acc_F1` computes them (F1 = 0 when TP = 0)."""
    accuracy = (tp + tn) / (tp + tn + fp + fn)
    if tp == 0:
        return accuracy, 0.0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return accuracy, 2 * precision * recall / (precision + recall)


def _au_f1_table(pred_sets: list[set[int]], target_sets: list[set[int]], scored: Sequence[int], mode: str) -> dict:
    """Per-AU F1 / accuracy (0-100) and the S_re mean over the scored AUs.

    paper: an AU whose targets and predictions are all one class is skipped (sklearn gives a 1x1 confusion matrix
    and the official indexing raises); strict: only an AU with no positive anywhere is undefined.
    """
    per_au_f1: dict[int, float | None] = {}
    per_au_accuracy: dict[int, float | None] = {}
    undefined = []
    f1s, accuracies = [], []
    n = len(target_sets)
    for au in scored:
        tp = fp = fn = 0
        for predicted, target in zip(pred_sets, target_sets):
            p, t = au in predicted, au in target
            if p and t:
                tp += 1
            elif p:
                fp += 1
            elif t:
                fn += 1
        tn = n - tp - fp - fn
        single_class = tp + fp + fn == 0 or tn == 0 and fp == 0 and fn == 0
        if (mode == "paper" and single_class) or (mode == "strict" and tp + fp + fn == 0):
            per_au_f1[au] = per_au_accuracy[au] = None
            undefined.append(au)
            continue
        accuracy, f1 = _binary_scores(tp, fp, fn, tn)
        f1s.append(f1)
        accuracies.append(accuracy)
        per_au_f1[au] = f1 * 100
        per_au_accuracy[au] = accuracy * 100
    return {
        "s_re": _mean(f1s) * 100,
        "per_au_f1": per_au_f1,
        "per_au_accuracy": per_au_accuracy,
        "au_accuracy": _mean(accuracies) * 100,
        "undefined_aus": undefined,
    }


def compute_rege(
    predictions: Sequence[str],
    references: Sequence[str],
    labels: Sequence,
    task: str,
    mode: str = "paper",
    au_set: str | AUSet = "faba",
    *,
    return_details: bool = False,
) -> dict:
    """REGE of FABA-Bench: recognition (S_re) plus generation (S_ge) of generated facial-affect descriptions.

    Args:
        predictions: the model's texts, one per sample.
        references: the reference descriptions (the `gpt4` field of FABA-Instruct), one per sample.
        labels: ground truth per sample: AU strings such as "1, 2, 4" (or lists of ints) for `task="au"`; class
            indices 0-6 or names ("Sadness") for `task="emotion"` (order: happiness, sadness, surprise, anger,
            neutral, disgust, fear).
        task: "au" or "emotion".
        mode: "paper" (the official evaluation, exactly) or "strict" (documented fixes, see the metric card).
        au_set: "faba" (default), "disfa", "bp4d", "gft" or "emotionet": which AUs are recognised and scored.
        return_details: add a "details" list with each sample's parse, ROUGE-L and correctness.

    Returns:
        A dict with `s_re`, `s_ge`, `s_rege` (0-100, 0-100, 0-200), `num_samples`, `num_rouge_failures` (paper: left
        out of S_ge as the official script does; strict: scored 0) and, for AU, `per_au_f1` / `per_au_accuracy`
        (AU -> 0-100, None when left out), `au_accuracy`, `undefined_aus` (AUs left out of the mean); for emotion,
        `accuracy` (= s_re), `confusion_matrix` (7x7 list, rows = label, columns = prediction),
        `num_parser_fallbacks` (paper: texts the official parser would crash on), `num_unparsed` (strict: texts
        without an emotion keyword, counted wrong) and `num_no_keyword` (both modes: texts without an emotion
        keyword; paper mode scores them as happiness, the official default). A mean over nothing (every AU left out, every ROUGE failed in
        paper mode) is NaN, as in the official script.

    Example:
        >>> result = compute_rege(["The person looks sad."], ["The person shows sadness."], ["Sadness"],
        ...                       task="emotion", mode="strict")
        >>> result["s_re"], round(result["s_ge"], 2)
        (100.0, 50.0)
    """
    task = _check_task(task)
    mode = _check_mode(mode)
    au_set = normalize_au_set(au_set)
    predictions = _as_list(predictions, "predictions")
    references = _as_list(references, "references")
    labels = _as_list(labels, "labels")
    if not (len(predictions) == len(references) == len(labels)):
        raise ValueError(
            f"predictions, references and labels must have the same length, got {len(predictions)}, "
            f"{len(references)} and {len(labels)}."
        )
    if not predictions:
        raise ValueError("predictions is empty: there is nothing to score.")
    _check_strings(predictions, "predictions")
    _check_strings(references, "references")

    # S_ge
    rouge_scores: list[float | None] = []
    for prediction, reference in zip(predictions, references):
        try:
            rouge_scores.append(rouge_l_f(prediction, reference, official_recursion_limit=mode == "paper"))
        except RougeError:
            rouge_scores.append(None)
    failures = sum(score is None for score in rouge_scores)
    if mode == "paper":
        s_ge = _mean([score for score in rouge_scores if score is not None]) * 100
    else:
        s_ge = _mean([0.0 if score is None else score for score in rouge_scores]) * 100

    result: dict = {"task": task, "mode": mode, "num_samples": len(predictions)}
    details = []
    if task == "au":
        targets = _convert_each(labels, lambda label: set(parse_au_label(label, mode=mode, au_set=au_set)), "labels")
        predicted = [set(parse_aus(text, mode=mode, au_set=au_set)) for text in predictions]
        table = _au_f1_table(predicted, targets, au_set.scored, mode)
        result["au_set"] = au_set.name
        s_re = table.pop("s_re")
        result.update({"s_re": s_re, "s_ge": s_ge, "s_rege": s_re + s_ge})
        result.update(table)
        if return_details:
            details = [
                {"predicted_aus": sorted(p), "label_aus": sorted(t), "exact_match": p == t}
                for p, t in zip(predicted, targets)
            ]
    else:
        targets = _convert_each(labels, emotion_label_to_index, "labels")
        parsed = [parse_emotion(text, mode=mode) for text in predictions]
        correct = sum(p.index == t for p, t in zip(parsed, targets))
        accuracy = correct / len(targets) * 100
        matrix = [[0] * len(EMOTIONS) for _ in EMOTIONS]
        for p, t in zip(parsed, targets):
            if p.index is not None:
                matrix[t][p.index] += 1
        result.update({"s_re": accuracy, "s_ge": s_ge, "s_rege": accuracy + s_ge, "accuracy": accuracy})
        result["confusion_matrix"] = matrix
        result["num_parser_fallbacks"] = sum(p.fallback for p in parsed)
        result["num_unparsed"] = sum(p.unparsed for p in parsed)
        # answers without any emotion keyword: paper mode scores them as happiness (the official default), strict
        # mode as wrong; either way the score alone does not show them
        result["num_no_keyword"] = sum(p.rule in ("default", "unparsed") for p in parsed)
        if return_details:
            details = [
                {"predicted_emotion": p.name, "label_emotion": EMOTIONS[t], "keyword": p.keyword, "rule": p.rule,
                 "correct": p.index == t}
                for p, t in zip(parsed, targets)
            ]  # fmt: skip
    result["num_rouge_failures"] = failures
    if return_details:
        for row, score in zip(details, rouge_scores):
            row["rouge_l"] = score
        result["details"] = details
    return result


# --------------------------------------------------------------------------------------------------------------
# Traditional protocols
# --------------------------------------------------------------------------------------------------------------

_OFFICIAL_FER_NAMES = {name.capitalize(): index for index, name in enumerate(EMOTIONS)}


def compute_fer_accuracy(pred_labels: Sequence, labels: Sequence, mode: str = "paper") -> dict:
    """7-class expression accuracy (RAF-DB / AffectNet protocol of the official `eval_emotion.py`).

    The model is asked for one emotion word; the official script maps the stripped output verbatim ("Surprise",
    "Fear", ...) and counts anything else as wrong. Class indices are accepted as already-mapped predictions.

    Args:
        pred_labels: model outputs (emotion names or free text) or class indices, one per sample.
        labels: ground truth: class indices (EMOTIONS order) or names, case-insensitive.
        mode: "paper" (exact capitalised names, as the official script) or "strict" (case-insensitive name, else the
            strict free-text parser).

    Returns:
        {"accuracy" (0-100), "num_samples", "num_unrecognized", "per_class_accuracy" (name -> 0-100, None without
        samples), "confusion_matrix" (7x7, rows = label, columns = prediction; unrecognised outputs not included)}.

    Example:
        >>> compute_fer_accuracy(["Surprise", "fear", "Anger"], ["Surprise", "Fear", "Anger"])["accuracy"]
        66.66666666666666
    """
    mode = _check_mode(mode)
    pred_labels = _as_list(pred_labels, "pred_labels")
    labels = _as_list(labels, "labels")
    if len(pred_labels) != len(labels):
        raise ValueError(
            f"pred_labels and labels must have the same length, got {len(pred_labels)} and {len(labels)}."
        )
    if not labels:
        raise ValueError("labels is empty: there is nothing to score.")
    targets = _convert_each(labels, emotion_label_to_index, "labels")
    predicted: list[int | None] = []
    for i, prediction in enumerate(pred_labels):
        if isinstance(prediction, str):
            text = prediction.strip()
            if mode == "paper":
                predicted.append(_OFFICIAL_FER_NAMES.get(text))
            elif text.lower().strip(" .!") in EMOTIONS:
                predicted.append(EMOTIONS.index(text.lower().strip(" .!")))
            else:
                predicted.append(parse_emotion(text, mode="strict").index)
        else:
            try:
                predicted.append(emotion_label_to_index(prediction))
            except ValueError as error:
                raise ValueError(f"pred_labels[{i}]: {error}") from None
    matrix = [[0] * len(EMOTIONS) for _ in EMOTIONS]
    for p, t in zip(predicted, targets):
        if p is not None:
            matrix[t][p] += 1
    per_class = {}
    for index, name in enumerate(EMOTIONS):
        total = sum(1 for t in targets if t == index)
        per_class[name] = matrix[index][index] / total * 100 if total else None
    correct = sum(p == t for p, t in zip(predicted, targets))
    return {
        "accuracy": correct / len(targets) * 100,
        "num_samples": len(targets),
        "num_unrecognized": sum(p is None for p in predicted),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix,
    }


def compute_au_f1_folds(
    fold_predictions: Sequence[Sequence], fold_labels: Sequence[Sequence], au_set: str | AUSet, mode: str = "paper"
) -> dict:
    """Per-AU F1 on each cross-validation fold, averaged over folds (DISFA / BP4D / GFT protocol).

    Mirrors the official `calculate_threefolds_AU.py`: each fold is scored like FABA-Bench's AU S_re (per-AU F1 of
    the AUs parsed from the text, over the AU set's scored AUs), then `per_au_f1` is the mean over folds of each
    AU's F1 and `f1` is the mean over folds of each fold's mean F1. In paper mode each fold's F1 values are
    rounded to 2 decimals first, because the official script reads them back from the printed result files.

    Args:
        fold_predictions: per fold, the model texts (or lists of AU numbers) of its samples (3 folds officially).
        fold_labels: per fold, the AU labels ("1, 2, 4" or lists of ints).
        au_set: "disfa", "bp4d", "gft", "emotionet" or "faba".
        mode: "paper" or "strict" (strict parsing; no rounding).

    Raises:
        ValueError: mismatched fold counts or lengths, or (paper) an AU that cannot be scored in some fold - the
            official script would misalign its columns.

    Example:
        >>> folds = [["AU1 AU2", "AU4"], ["AU1", "AU4"], ["AU2", "AU1 AU4"]]
        >>> labels = [["1, 2", "4"], ["1", "2, 4"], ["2", "1"]]
        >>> round(compute_au_f1_folds(folds, labels, "disfa", mode="strict")["f1"], 2)  # folds: 100, 66.67, 66.67
        77.78
    """
    mode = _check_mode(mode)
    au_set = normalize_au_set(au_set)
    fold_predictions = _as_list(fold_predictions, "fold_predictions")
    fold_labels = _as_list(fold_labels, "fold_labels")
    if len(fold_predictions) != len(fold_labels):
        raise ValueError(
            f"fold_predictions and fold_labels must have the same number of folds, got {len(fold_predictions)} "
            f"and {len(fold_labels)}."
        )
    if not fold_predictions:
        raise ValueError("fold_predictions is empty: there is no fold to score.")
    fold_tables = []
    for k, (predictions, labels) in enumerate(zip(fold_predictions, fold_labels)):
        predictions = _as_list(predictions, f"fold_predictions[{k}]")
        labels = _as_list(labels, f"fold_labels[{k}]")
        if len(predictions) != len(labels) or not labels:
            raise ValueError(
                f"fold {k}: predictions and labels must be non-empty and of equal length, got {len(predictions)} "
                f"and {len(labels)}."
            )
        predicted = []
        for i, prediction in enumerate(predictions):
            if isinstance(prediction, str):
                predicted.append(set(parse_aus(prediction, mode=mode, au_set=au_set)))
            else:
                try:
                    predicted.append(set(parse_au_label(list(prediction), mode=mode, au_set=au_set)))
                except (TypeError, ValueError) as error:
                    raise ValueError(f"fold_predictions[{k}][{i}]: {error}") from None
        targets = _convert_each(labels, lambda label: set(parse_au_label(label, mode=mode, au_set=au_set)),
                                f"fold_labels[{k}]")
        table = _au_f1_table(predicted, targets, au_set.scored, mode)
        if mode == "paper":
            if table["undefined_aus"]:
                raise ValueError(
                    f"fold {k}: AUs {table['undefined_aus']} have a single class in labels and predictions; the "
                    "official three-fold script cannot average them (use mode='strict')."
                )
            table["per_au_f1"] = {au: float(f"{f1:.2f}") for au, f1 in table["per_au_f1"].items()}
        fold_tables.append(table["per_au_f1"])

    per_au: dict[int, float | None] = {}
    for au in au_set.scored:
        values = [table[au] for table in fold_tables if table[au] is not None]
        per_au[au] = _mean(values) if values else None
    fold_means = []
    for table in fold_tables:
        values = [value for value in table.values() if value is not None]
        if values:
            fold_means.append(_mean(values))
    return {
        "f1": _mean(fold_means),
        "per_au_f1": per_au,
        "fold_f1": fold_means,
        "per_fold_per_au_f1": fold_tables,
        "num_folds": len(fold_tables),
        "au_set": au_set.name,
    }

