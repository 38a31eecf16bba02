"""REGE: the FABA-Bench metric of EmoLA (Li et al., ECCV 2024), as an `evaluate` module.

The scoring code lives in the installed package (`transformers_emola.metrics.scoring`); this script only declares
the inputs and forwards them, so `evaluate.load` and `compute_rege` always agree.
"""

import json

import datasets
import evaluate

from transformers_emola.metrics.scoring import compute_rege


def _encode_label(label) -> str:
    """Labels come in every form `compute_rege` takes ("1, 2, 4", [1, 2, 4], 3, "Sadness", mixed in one list);
    the module stores each as its JSON text, so one string feature holds them all and they reach the scorer as given."""
    return json.dumps(label, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))


_CITATION = """\
@inproceedings{li2024facial,
  title     = {Facial Affective Behavior Analysis with Instruction Tuning},
  author    = {Li, Yifan and Dao, Anh and Bao, Wentao and Tan, Zhen and Chen, Tianlong and Liu, Huan and Kong, Yu},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024}
}
"""

_DESCRIPTION = """\
REGE scores generated facial-affect descriptions on FABA-Bench: S_rege = S_re + S_ge. S_re (recognition) is the
accuracy of the emotion class parsed from the text, or the mean per-AU F1 of the action units mentioned in it;
S_ge (generation) is the ROUGE-L F score (PyPI `rouge`) against the reference description. Both are on a 0-100
scale. mode="paper" reproduces the official evaluation script exactly; mode="strict" fixes its parsing quirks.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated descriptions.
    references (`list` of `str`): reference descriptions (FABA-Instruct's `gpt4` field).
    labels (`list`): AU labels such as "1, 2, 4" or [1, 2, 4] (task="au"), or emotion class indices 0-6 / names such
        as "Sadness" (task="emotion"); every form `compute_rege` takes, mixed freely.
    task (`str`): "au" or "emotion".
    mode (`str`, defaults to "paper"): "paper" (official evaluation) or "strict" (fixed parsing).
    au_set (`str`, defaults to "faba"): "faba", "disfa", "bp4d", "gft" or "emotionet".
Returns:
    s_re, s_ge, s_rege (`float`): recognition, generation and total score (0-100, 0-100, 0-200).
    num_samples, num_rouge_failures (`int`).
    task="au": per_au_f1, per_au_accuracy (`dict` AU -> 0-100 or None), au_accuracy, undefined_aus.
    task="emotion": accuracy, confusion_matrix (7x7), num_parser_fallbacks, num_unparsed.
Examples:
    >>> from transformers_emola.metrics import REGE_MODULE_PATH  # or evaluate.load("path/to/metrics/rege")
    >>> rege = evaluate.load(str(REGE_MODULE_PATH))
    >>> results = rege.compute(predictions=["The person looks sad."], references=["The person shows sadness."],
    ...                        labels=["Sadness"], task="emotion", mode="strict")
    >>> results["s_re"], round(results["s_ge"], 2)
    (100.0, 50.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rege(evaluate.Metric):
    """REGE metric; see the metric card (README.md) for inputs, outputs and the paper / strict differences."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "labels": datasets.Value("string"),  # JSON text of each label (see `_encode_label`)
                }
            ),
            codebase_urls=["https://github.com/JackYFL/EmoLA"],
            reference_urls=["https://arxiv.org/abs/2404.05052"],
        )

    def add_batch(self, *, predictions=None, references=None, labels=None, **kwargs):
        """Add a batch of predictions, references and labels (labels in any form `compute_rege` takes)."""
        if labels is not None:
            labels = [_encode_label(label) for label in labels]
        return super().add_batch(predictions=predictions, references=references, labels=labels, **kwargs)

    def add(self, *, prediction=None, reference=None, label=None, **kwargs):
        """Add one prediction, reference and label."""
        return super().add(prediction=prediction, reference=reference, label=_encode_label(label), **kwargs)

    def _compute(self, predictions, references, labels, task=None, mode="paper", au_set="faba"):
        if task is None:
            raise ValueError('REGE needs task="au" or task="emotion".')
        labels = [json.loads(label) for label in labels]
        return compute_rege(predictions, references, labels, task=task, mode=mode, au_set=au_set)
