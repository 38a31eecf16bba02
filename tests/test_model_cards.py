"""Model cards: Hub metadata of the released cards, and the template filled by `render_model_card`."""

from __future__ import annotations

from pathlib import Path

import pytest

from transformers_emola.model_card import DEFAULT_TEMPLATE_PATH, render_model_card, save_model_card, template_fields

yaml = pytest.importorskip("yaml")

CARDS = Path(__file__).resolve().parents[1] / "model_cards"
PAPER_SCORES = {"emola-7b-au.md": (56.3, 35.2, 91.5), "emola-7b-emotion.md": (64.5, 31.7, 96.2)}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), "a model card starts with YAML front matter"
    header, _, body = text[4:].partition("\n---\n")
    assert body.strip(), "the card has a body after the front matter"
    return yaml.safe_load(header)


def metric_values(metadata: dict) -> dict[str, float]:
    (entry,) = metadata["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-text-to-text"
    return {metric["type"]: metric["value"] for metric in result["metrics"]}


@pytest.mark.parametrize("name", sorted(PAPER_SCORES))
def test_released_cards_metadata(name):
    text = (CARDS / name).read_text(encoding="utf-8")
    metadata = front_matter(text)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "llama2"
    assert metadata["base_model"] == ["liuhaotian/llava-v1.5-7b", "llava-hf/llava-1.5-7b-hf"]
    assert metadata["datasets"] == ["FABA-Instruct"]
    s_re, s_ge, s_rege = PAPER_SCORES[name]
    assert metric_values(metadata) == {"s_re": s_re, "s_ge": s_ge, "s_rege": s_rege}
    assert s_re + s_ge == pytest.approx(s_rege)
    (entry,) = metadata["model-index"]
    assert "not measured" in entry["results"][0]["source"]["name"]
    assert all(metric["verified"] is False for metric in entry["results"][0]["metrics"])
    # The body says where the numbers come from, how to compute the prior, and how to cite.
    for needle in ("Reported by the paper's authors", "2d106det.onnx", "cv2.resize", "EU AI Act", "AffectNet",
                   "Llama 2 Community License", "@inproceedings{li2024facial", "Instruction Tuning",
                   "Multi-modal Large Language Models", "```python no-run"):  # fmt: skip
        assert needle in text, needle


FIELDS = dict(
    model_id="someone/emola-7b-au-repro",
    task="au",
    training_details="LoRA r=128 on FABA-Instruct AU: 1 epoch, lr 1e-4 (see `examples/sft_emola.py`).",
    s_re=55.25,
    s_ge=34.5,
    metrics_source='Measured with `emola evaluate --mode paper`: 325 images, "greedy"',
    metrics_source_url="https://example.org/report",
    license="llama2",
    base_model="llava-hf/llava-1.5-7b-hf",
    dataset="FABA-Instruct",
    facial_prior_backend="face_alignment",
    eval_split="eval",
    model_name="emola-7b-au-repro",
)


def test_template_renders_every_field():
    template = DEFAULT_TEMPLATE_PATH.read_text(encoding="utf-8")
    assert DEFAULT_TEMPLATE_PATH == CARDS / "template.md"
    assert {"model_id", "question", "model_index", "evaluation", "training_details"} <= template_fields(template)
    card = render_model_card(**FIELDS)
    assert "{{" not in card and "}}" not in card
    metadata = front_matter(card)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "llama2" and metadata["base_model"] == ["llava-hf/llava-1.5-7b-hf"]
    assert metadata["datasets"] == ["FABA-Instruct"]
    assert "facial-action-units" in metadata["tags"]
    assert metric_values(metadata) == {"s_re": 55.25, "s_ge": 34.5, "s_rege": 89.75}
    (entry,) = metadata["model-index"]
    assert entry["name"] == "emola-7b-au-repro"
    assert entry["results"][0]["source"]["name"] == FIELDS["metrics_source"]  # quotes and colons survive YAML
    assert 'model_id = "someone/emola-7b-au-repro"' in card
    assert "What AUs are conveyed by this face?" in card
    assert "`face_alignment` landmarks (136 numbers)" in card
    assert "| 55.2 | 34.5 | 89.8 |" in card
    assert FIELDS["training_details"] in card


def test_template_without_metrics_and_for_emotion(tmp_path):
    path = save_model_card(tmp_path, model_id="me/emola-emotion", task="emotion", training_details="Synthetic demo.")
    card = path.read_text(encoding="utf-8")
    assert path.name == "README.md" and "{{" not in card
    metadata = front_matter(card)
    assert "model-index" not in metadata
    assert "facial-expression-recognition" in metadata["tags"]
    assert "What emotions are conveyed by this face?" in card and "Not evaluated yet" in card
    assert "`insightface_2d106` landmarks (212 numbers)" in card


def test_template_errors_name_the_field():
    with pytest.raises(ValueError, match=r"\['training_details'\]"):
        render_model_card(model_id="me/x", task="au")
    with pytest.raises(ValueError, match="task must be one of"):
        render_model_card(model_id="me/x", task="valence", training_details="-")
    with pytest.raises(ValueError, match=r"Unknown model-card field\(s\) \['s_rouge'\]"):
        render_model_card(model_id="me/x", task="au", training_details="-", s_rouge=3)
    with pytest.raises(ValueError, match="both s_re and s_ge"):
        render_model_card(model_id="me/x", task="au", training_details="-", s_re=3)
    with pytest.raises(ValueError, match="'s_re' must be a string or a number"):
        render_model_card(model_id="me/x", task="au", training_details="-", s_re=[1], s_ge=2)


def test_custom_template(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("{{ model_name }}: {{ question | json }} {{ facial_prior_dim }} {{ unset_field }}")
    with pytest.raises(ValueError, match=r"No value for template placeholder\(s\) \['unset_field'\]"):
        render_model_card(template, model_id="org/model", task="au", training_details="-")
    template.write_text("{{ model_name }}: {{ question | json }} {{facial_prior_dim}}")
    assert render_model_card(template, model_id="org/model", task="au", training_details="-") == (
        'model: "What AUs are conveyed by this face?" 212')  # fmt: skip
