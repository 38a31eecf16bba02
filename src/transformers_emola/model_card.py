"""Model cards for EmoLA checkpoints, through `huggingface_hub`'s `ModelCard`, `ModelCardData` and `EvalResult`.

One generator for every card the package writes (a fine-tuned EmoLA, the LLaVA-LoRA baseline, a toy demo model):
the Hub metadata (licence, base model, tags, and the REGE scores as `model-index`) is built as `ModelCardData`, and
the text is the Jinja template shipped inside the package, `model_card_template.md`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .faba import FACIAL_PRIOR_DIMS, SCORED_AUS, TASK_QUESTIONS, TASKS

__all__ = ["TEMPLATE_PATH", "build_model_card", "template_fields"]

#: The card template, a package file (installed with the wheel).
TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")

_TASK_CARDS = {
    "au": {
        "title": "Facial action unit description",
        "re_metric": f"mean F1 over AUs {', '.join(map(str, SCORED_AUS))} (x100)",
        "tag": "facial-action-units",
        "eval_dataset_name": "FABA-Bench (AU test split of FABA-Instruct)",
    },
    "emotion": {
        "title": "Facial emotion description",
        "re_metric": "7-class emotion accuracy (x100)",
        "tag": "facial-expression-recognition",
        "eval_dataset_name": "FABA-Bench (emotion test split of FABA-Instruct)",
    },
}
_BASE_TAGS = ["emola", "llava", "transformers-emola", "affective-computing"]
_DEFAULT_METRICS_SOURCE = "Measured with transformers-emola (`emola evaluate`, REGE metric)"


def template_fields(template: str) -> set[str]:
    """The variables a card template uses (`{{ name }}`, `{% if name %}`, ...)."""
    import jinja2
    from jinja2 import meta

    return set(meta.find_undeclared_variables(jinja2.Environment().parse(template)))


def _number(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Model-card field {name!r} must be a number, got {type(value).__name__}")
    return float(value)


def build_model_card(
    model_id: str,
    task: str | None,
    training_details: str,
    *,
    base_model: str | None = "llava-hf/llava-1.5-7b-hf",
    dataset: str = "FABA-Instruct",
    license: str = "llama2",
    use_facial_prior: bool = True,
    facial_prior_backend: str = "insightface_2d106",
    facial_prior_dim: int | None = None,
    s_re: float | None = None,
    s_ge: float | None = None,
    s_rege: float | None = None,
    metrics_source: str = _DEFAULT_METRICS_SOURCE,
    metrics_source_url: str = "https://arxiv.org/abs/2404.05052",
    eval_split: str = "eval",
    model_name: str | None = None,
    tags: list[str] | None = None,
    full_fine_tune: bool = False,
    template_path: str | os.PathLike | None = None,
):
    """A `huggingface_hub.ModelCard` for an EmoLA checkpoint (`card.save("folder/README.md")`, `str(card)`).

    Args:
        model_id: Hub repo id or folder, used in the usage code.
        task: "au", "emotion", or None (a model trained on both, or on an unknown task).
        training_details: markdown for the Training section.
        base_model: the checkpoint it was fine-tuned from; None when built in memory (not recorded).
        use_facial_prior: False for the LLaVA-LoRA baseline (no prior token).
        facial_prior_backend, facial_prior_dim: the prior the model takes (dim defaults to the backend's).
        s_re, s_ge (and s_rege, default their sum): REGE scores, written as `model-index` metadata and a table.
        metrics_source, metrics_source_url, eval_split: where the scores come from.
        model_name: the card's title (default: the last part of `model_id`).
        full_fine_tune: the language model was fine-tuned in full (default: LoRA, as EmoLA).
        template_path: another Jinja template (default: the packaged `model_card_template.md`).

    Example:
    ```python
    >>> from transformers_emola.model_card import build_model_card
    >>> card = build_model_card("me/emola-7b-au", "au", "1 epoch.", s_re=50.0, s_ge=30.0)
    >>> card.data.eval_results[2].metric_type, card.data.eval_results[2].metric_value
    ('s_rege', 80.0)
    >>> str(card).startswith("---") and "{{" not in str(card)
    True

    ```
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)} or None, got {task!r}")
    if not isinstance(training_details, str) or not training_details.strip():
        raise ValueError("build_model_card needs training_details (markdown for the Training section)")
    s_re, s_ge, s_rege = _number("s_re", s_re), _number("s_ge", s_ge), _number("s_rege", s_rege)
    if (s_re is None) != (s_ge is None) or (s_rege is not None and s_re is None):
        raise ValueError("Give both s_re and s_ge (s_rege is their sum), or no score")
    if s_re is not None and task is None:
        raise ValueError("REGE scores need the task they were measured on (task='au' or 'emotion')")
    if s_re is not None and s_rege is None:
        s_rege = round(s_re + s_ge, 4)
    task_card = _TASK_CARDS.get(task, {"title": "Facial affect description (action units and emotion)", "tag": None})
    model_name = model_name or str(model_id).rstrip("/").split("/")[-1]

    eval_results = None
    if s_re is not None:
        common = dict(task_type="image-text-to-text", task_name=task_card["title"], dataset_type=dataset,
                      dataset_name=task_card["eval_dataset_name"], dataset_split=eval_split, verified=False,
                      source_name=metrics_source, source_url=metrics_source_url)
        eval_results = [
            EvalResult(metric_type="s_re", metric_name=f"S_re: {task_card['re_metric']}", metric_value=s_re, **common),
            EvalResult(metric_type="s_ge", metric_name="S_ge: ROUGE-L F against the GPT-4V reference (x100)",
                       metric_value=s_ge, **common),
            EvalResult(metric_type="s_rege", metric_name="S_rege = S_re + S_ge", metric_value=s_rege, **common),
        ]
    all_tags = list(dict.fromkeys([*_BASE_TAGS, *([task_card["tag"]] if task_card["tag"] else []), *(tags or [])]))
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text", license=license,
        base_model=[base_model] if base_model else None, datasets=[dataset], language=["en"], tags=all_tags,
        model_name=model_name if eval_results else None, eval_results=eval_results,
    )
    fields = {
        "model_id": model_id,
        "model_name": model_name,
        "task_title": task_card["title"],
        "questions": [TASK_QUESTIONS[task]] if task else [TASK_QUESTIONS[name] for name in TASKS],
        "training_details": training_details.strip(),
        "base_model_text": f"`{base_model}`" if base_model else "the base model (built in memory, not recorded)",
        "use_facial_prior": use_facial_prior,
        "language_model_tuning": "fully fine-tuned" if full_fine_tune else
        "LoRA fine-tuned (see Training for whether the adapter is merged)",
        "facial_prior_backend": facial_prior_backend,
        "facial_prior_dim": facial_prior_dim or FACIAL_PRIOR_DIMS.get(facial_prior_backend, "see config.json"),
        "s_re": s_re, "s_ge": s_ge, "s_rege": s_rege,
        "metrics_source": metrics_source,
        "eval_dataset_name": task_card.get("eval_dataset_name"),
        "re_metric_description": task_card.get("re_metric"),
        "license": license,
    }
    path = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"Model-card template not found: {path}")
    unknown = sorted(template_fields(path.read_text(encoding="utf-8")) - set(fields) - set(card_data.to_dict())
                     - {"card_data"})
    if unknown:
        raise ValueError(f"{path}: no value for template variable(s) {unknown}; known: {sorted(fields)}")
    return ModelCard.from_template(card_data, template_path=str(path), **fields)
