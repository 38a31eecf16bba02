"""Model cards for EmoLA checkpoints: fill `model_cards/template.md` for a trained or converted model.

The template uses `{{ name }}` placeholders (markdown and BibTeX are full of `{}`, which rules out `str.format`);
`{{ name | json }}` inserts the value as a JSON string, which is also a valid YAML double-quoted scalar, so free
text cannot break the card's YAML front matter. Derived fields (question, metric names, the `model-index` block and
the evaluation section) are computed from `task` and the metrics unless given explicitly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .faba import AU_QUESTION, EMOTION_QUESTION, FACIAL_PRIOR_DIMS, SCORED_AUS

# The template lives in the repository's model_cards/ folder, next to the released models' cards.
DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "model_cards" / "template.md"

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*(json)\s*)?\}\}")

TASKS = {
    "au": {
        "task_title": "Facial action unit description",
        "question": AU_QUESTION,
        "re_metric_name": f"S_re: mean F1 over AUs {', '.join(map(str, SCORED_AUS))} (x100)",
        "tag": "facial-action-units",
    },
    "emotion": {
        "task_title": "Facial emotion description",
        "question": EMOTION_QUESTION,
        "re_metric_name": "S_re: 7-class emotion accuracy (x100)",
        "tag": "facial-expression-recognition",
    },
}
REQUIRED_FIELDS = ("model_id", "task", "training_details")
DEFAULT_FIELDS = {
    "license": "llama2",
    "base_model": "llava-hf/llava-1.5-7b-hf",
    "dataset": "FABA-Instruct",
    "facial_prior_backend": "insightface_2d106",
    "eval_split": "eval",
    "metrics_source": "Measured with transformers-emola (`emola evaluate`, REGE metric)",
    "metrics_source_url": "https://arxiv.org/abs/2404.05052",
}
METRIC_FIELDS = ("s_re", "s_ge", "s_rege")


def template_fields(template: str) -> set[str]:
    """Placeholder names used by a template text."""
    return {match.group(1) for match in _PLACEHOLDER.finditer(template)}


def _model_index(fields: dict) -> str:
    """The Hub `model-index` YAML block for the REGE scores, or nothing when the model was not evaluated."""
    if fields.get("s_re") is None:
        return ""
    dump = json.dumps
    metrics = [
        ("s_re", fields["re_metric_name"], fields["s_re"]),
        ("s_ge", "S_ge: ROUGE-L F against the GPT-4V reference (x100)", fields["s_ge"]),
        ("s_rege", "S_rege = S_re + S_ge", fields["s_rege"]),
    ]
    lines = [
        "model-index:",
        f"- name: {dump(str(fields['model_name']))}",
        "  results:",
        "  - task:",
        "      type: image-text-to-text",
        f"      name: {dump(fields['task_title'])}",
        "    dataset:",
        f"      name: {dump(str(fields['eval_dataset_name']))}",
        f"      type: {dump(str(fields['dataset']))}",
        f"      split: {dump(str(fields['eval_split']))}",
        "    metrics:",
    ]
    for metric_type, name, value in metrics:
        lines += [f"    - type: {metric_type}", f"      name: {dump(name)}", f"      value: {float(value)}",
                  "      verified: false"]  # fmt: skip
    lines += ["    source:", f"      name: {dump(str(fields['metrics_source']))}",
              f"      url: {dump(str(fields['metrics_source_url']))}"]  # fmt: skip
    return "\n".join(lines)


def _evaluation(fields: dict) -> str:
    if fields.get("s_re") is None:
        return "Not evaluated yet: run `emola evaluate` on the FABA-Bench split and regenerate this card."
    return (
        f"{fields['metrics_source']} on {fields['eval_dataset_name']}.\n\n"
        "| S_re | S_ge | S_rege |\n|---|---|---|\n"
        f"| {float(fields['s_re']):.1f} | {float(fields['s_ge']):.1f} | {float(fields['s_rege']):.1f} |\n\n"
        f"S_re is the {fields['re_metric_name'].split(': ', 1)[-1]}; S_ge is ROUGE-L F (pltrdy `rouge`) against the "
        "GPT-4V reference description; S_rege = S_re + S_ge (0-200)."
    )


def _complete_fields(fields: dict) -> dict:
    missing = [name for name in REQUIRED_FIELDS if fields.get(name) in (None, "")]
    if missing:
        raise ValueError(f"render_model_card needs {missing}")
    task = fields["task"]
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    full = {**DEFAULT_FIELDS, **{key: value for key, value in TASKS[task].items() if key != "tag"}}
    full["task_tag"] = TASKS[task]["tag"]
    full["model_name"] = str(fields["model_id"]).rstrip("/").split("/")[-1]
    full["eval_dataset_name"] = f"FABA-Bench ({'AU' if task == 'au' else 'emotion'} test split of FABA-Instruct)"
    full.update({key: value for key, value in fields.items() if value is not None})
    backend = full["facial_prior_backend"]
    full.setdefault("facial_prior_dim", FACIAL_PRIOR_DIMS.get(backend, "see config.json"))
    given = [name for name in METRIC_FIELDS if full.get(name) is not None]
    if given:
        if "s_re" not in given or "s_ge" not in given:
            raise ValueError(f"Give both s_re and s_ge (s_rege is their sum), got only {given}")
        full.setdefault("s_rege", round(float(full["s_re"]) + float(full["s_ge"]), 4))
    full.setdefault("model_index", _model_index(full))
    full.setdefault("evaluation", _evaluation(full))
    return full


def render_model_card(template_path: str | os.PathLike | None = None, **fields) -> str:
    """Fill the model-card template.

    Required fields: `model_id` (Hub repo id or folder, used in the usage code), `task` (`"au"` or `"emotion"`),
    `training_details` (markdown). Optional: `s_re`, `s_ge` (and `s_rege`, default their sum), `metrics_source`,
    `metrics_source_url`, `eval_split`, `license`, `base_model`, `dataset`, `facial_prior_backend`, `model_name`,
    and any derived field to override it. Unknown fields are an error, so typos do not pass silently.

    ```python
    >>> from transformers_emola.model_card import render_model_card
    >>> card = render_model_card(model_id="me/emola-7b-au", task="au", training_details="1 epoch.", s_re=50.0, s_ge=30.0)
    >>> card.startswith("---") and "value: 80.0" in card and "{{" not in card
    True

    ```
    """
    path = Path(template_path) if template_path is not None else DEFAULT_TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"Model-card template not found: {path} (pass template_path=)")
    template = path.read_text(encoding="utf-8")
    used = template_fields(template)
    allowed = used | set(REQUIRED_FIELDS) | set(DEFAULT_FIELDS) | set(METRIC_FIELDS) | {"model_name"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"Unknown model-card field(s) {unknown}; the template uses {sorted(used)}")
    for name, value in fields.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise ValueError(f"Model-card field {name!r} must be a string or a number, got {type(value).__name__}")
    values = _complete_fields(fields)
    leftover = sorted(used - set(values))
    if leftover:
        raise ValueError(f"No value for template placeholder(s) {leftover}")

    def fill(match: re.Match) -> str:
        value = values[match.group(1)]
        return json.dumps(str(value)) if match.group(2) == "json" else str(value)

    return _PLACEHOLDER.sub(fill, template)


def save_model_card(output_dir: str | os.PathLike, template_path: str | os.PathLike | None = None, **fields) -> Path:
    """Render the card and write it as `output_dir/README.md` (what the Hub shows); returns the path."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(template_path, **fields), encoding="utf-8")
    return path


__all__ = ["DEFAULT_TEMPLATE_PATH", "TASKS", "render_model_card", "save_model_card", "template_fields"]
