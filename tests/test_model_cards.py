"""Model cards: Hub metadata of the released cards, and the packaged template filled by `build_model_card`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import transformers_emola
from transformers_emola.model_card import TEMPLATE_PATH, build_model_card, template_fields

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
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert TEMPLATE_PATH.parent == Path(transformers_emola.__file__).parent  # shipped inside the package
    assert {"model_id", "questions", "card_data", "training_details", "s_re"} <= template_fields(template)
    card = build_model_card(**FIELDS)
    assert isinstance(card, ModelCard) and card.data.eval_results[0].metric_value == 55.25
    text = str(card)
    assert "{{" not in text and "{%" not in text
    metadata = front_matter(text)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "llama2" and metadata["base_model"] == ["llava-hf/llava-1.5-7b-hf"]
    assert metadata["datasets"] == ["FABA-Instruct"]
    assert "facial-action-units" in metadata["tags"]
    assert metric_values(metadata) == {"s_re": 55.25, "s_ge": 34.5, "s_rege": 89.75}
    (entry,) = metadata["model-index"]
    assert entry["name"] == "emola-7b-au-repro"
    assert entry["results"][0]["source"]["name"] == FIELDS["metrics_source"]  # quotes and colons survive YAML
    assert 'model_id = "someone/emola-7b-au-repro"' in text
    assert "What AUs are conveyed by this face?" in text
    assert "`face_alignment` landmarks (136 numbers)" in text
    assert "| 55.2 | 34.5 | 89.8 |" in text
    assert FIELDS["training_details"] in text


def test_template_without_metrics_and_for_emotion(tmp_path):
    card = build_model_card("me/emola-emotion", "emotion", "Synthetic demo.")
    card.save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "{{" not in text
    metadata = front_matter(text)
    assert "model-index" not in metadata and "model_name" not in metadata
    assert "facial-expression-recognition" in metadata["tags"]
    assert "What emotions are conveyed by this face?" in text and "Not evaluated yet" in text
    assert "`insightface_2d106` landmarks (212 numbers)" in text


def test_baseline_card_without_task_or_recorded_base():
    card = str(build_model_card("me/llava-lora", None, "Full fine-tune.", use_facial_prior=False, base_model=None))
    metadata = front_matter(card)
    assert "base_model" not in metadata and "model-index" not in metadata
    assert "LLaVA-LoRA baseline" in card and "facial prior expert" not in card and "FacialPriorExtractor" not in card
    assert "built in memory" in card
    # no task: both official questions are shown
    assert "What AUs are conveyed by this face?" in card and "What emotions are conveyed by this face?" in card


def test_template_errors_name_the_field():
    with pytest.raises(ValueError, match="needs training_details"):
        build_model_card("me/x", "au", "")
    with pytest.raises(ValueError, match="task must be one of"):
        build_model_card("me/x", "valence", "-")
    with pytest.raises(TypeError, match="s_rouge"):
        build_model_card("me/x", "au", "-", s_rouge=3)
    with pytest.raises(ValueError, match="both s_re and s_ge"):
        build_model_card("me/x", "au", "-", s_re=3)
    with pytest.raises(ValueError, match="'s_re' must be a number"):
        build_model_card("me/x", "au", "-", s_re=[1], s_ge=2)
    with pytest.raises(ValueError, match="need the task"):
        build_model_card("me/x", None, "-", s_re=1, s_ge=2)


def test_custom_template(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("{{ model_name }}: {{ questions[0] | tojson }} {{ facial_prior_dim }} {{ unset_field }}")
    with pytest.raises(ValueError, match=r"no value for template variable\(s\) \['unset_field'\]"):
        build_model_card("org/model", "au", "-", template_path=template)
    template.write_text("{{ model_name }}: {{ questions[0] | tojson }} {{facial_prior_dim}}")
    assert build_model_card("org/model", "au", "-", template_path=template).text == (
        'model: "What AUs are conveyed by this face?" 212')  # fmt: skip


def test_an_installed_wheel_renders_a_card_from_its_packaged_template(tmp_path):
    """Build the wheel, unpack it as pip would install it, and render a card there with no `src/` on the path."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    # A clean copy of what the wheel is built from: pip builds in the source tree, and a stale build/ there could
    # hand the wheel files the package no longer has.
    shutil.copytree(repo / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("transformers_emola-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "transformers_emola/model_card_template.md" in archive.namelist()
        archive.extractall(tmp_path / "site")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import emola_cli; emola_cli._defer_package_init('transformers_emola')  # the card needs no torch\n"
        "import transformers_emola.model_card as m\n"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "assert str(m.TEMPLATE_PATH).startswith(sys.argv[1]), m.TEMPLATE_PATH\n"
        "print(m.build_model_card('me/emola-7b-au', 'au', 'From the wheel.', s_re=50.0, s_ge=30.0))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    metadata = front_matter(result.stdout)
    assert metric_values(metadata) == {"s_re": 50.0, "s_ge": 30.0, "s_rege": 80.0}
    assert "From the wheel." in result.stdout and "What AUs are conveyed by this face?" in result.stdout
