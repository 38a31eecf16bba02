"""`add_facial_prior` / `add_facial_prior_token` on every supported family, on tiny random base models.

Each family gets EmoLA's guarantees: the prior changes logits from its token on and never before; without the prior
token the base model's logits come back exactly; save -> Auto load is exact; `generate` reads the prior at prefill
(batched = one by one, beams); the prior token sits right after each image's block in the family's prompt format.
"""

import copy
import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, pipeline

import transformers_emola
from transformers_emola import EmolaForConditionalGeneration, add_facial_prior, add_facial_prior_token
from transformers_emola.families import FAMILIES, facial_prior_family
from transformers_emola.testing_utils import TINY_VLM_FAMILIES, build_tiny_vlm

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ("What AUs are conveyed by this face?", "What emotions are conveyed by this face? Describe the mouth.")
# The token each family's prior follows: the one that closes an image's block (LLaVA's block is its image tokens).
CLOSING_TOKEN = {
    "llava": "<image>",
    "qwen2_5_vl": "<|vision_end|>",
    "idefics3": "<fake_token_around_image>",
    "gemma3": "<end_of_image>",
}


class FixedPriors:
    """Stands in for a landmark detector: a deterministic prior per image (the mean RGB, tiled)."""

    def __call__(self, images):
        return np.stack([np.resize(np.asarray(im.convert("RGB"), np.float32).mean((0, 1)) / 255, 136) for im in images])

    def to_dict(self):
        return {"backend": "fixed"}


def images(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    arrays = [(torch.rand(40 + 8 * i, 48, 3, generator=generator) * 255).byte().numpy() for i in range(n)]
    return [Image.fromarray(array) for array in arrays]


def priors(n, seed=0):
    return torch.rand(n, 136, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def prompt(processor, question=QUESTIONS[0], num_images=1):
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def owned(model):
    """`model` with every tensor in memory of its own: loaded weights can sit at unaligned offsets of the file, where
    BLAS may round differently, so exact comparisons use owned copies (the weights themselves are compared too)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


class Converted:
    """A tiny base model of `family`, its logits on a prompt, and its EmoLA variant built with the processor."""

    def __init__(self, family):
        self.family = family
        self.base, self.base_processor = build_tiny_vlm(family)
        text = [prompt(self.base_processor)]
        self.base_inputs = self.base_processor(images=images(1), text=text, return_tensors="pt")
        with torch.no_grad():
            self.base_logits = self.base(**self.base_inputs).logits
        self.base_vocab = self.base.get_input_embeddings().num_embeddings
        self.processor = add_facial_prior_token(self.base_processor)
        self.model = add_facial_prior(self.base, facial_prior_dim=136, processor=self.processor).eval()
        self.prior_id = self.model.config.facial_prior_token_id

    def inputs(self, questions=QUESTIONS[:1], seed=0, **kwargs):
        return self.processor(
            images=[[image] for image in images(len(questions), seed)],  # one image per prompt, as Gemma 3 needs
            text=[prompt(self.processor, question) for question in questions],
            facial_priors=priors(len(questions), seed),
            padding=True,
            return_tensors="pt",
            **kwargs,
        )


@functools.cache
def converted(family: str) -> Converted:
    """One conversion per family for the tests that only read it."""
    return Converted(family)


@pytest.fixture(params=TINY_VLM_FAMILIES)
def tiny(request):
    return converted(request.param)


# ------------------------------------------------------------------------------------------------- the conversion
def test_classes_configs_and_token(tiny):
    family = facial_prior_family(tiny.base)
    assert type(tiny.model) is family.for_conditional_generation_class and type(tiny.model.model) is family.model_class
    assert type(tiny.processor) is family.processor_class
    config = tiny.model.config
    assert (config.facial_prior_dim, config.facial_prior_backend) == (136, "face_alignment") and config.use_facial_prior
    assert config.facial_prior_token_id == tiny.processor.facial_prior_token_id == tiny.base_vocab  # a new token
    assert tiny.model.get_input_embeddings().num_embeddings == tiny.base_vocab + 1  # resized for it
    assert config.get_text_config().vocab_size == tiny.base_vocab + 1
    for key in ("text_config", "vision_config"):
        base_values = {k: v for k, v in getattr(tiny.base.config, key).to_dict().items() if k != "vocab_size"}
        assert {k: v for k, v in getattr(config, key).to_dict().items() if k != "vocab_size"} == base_values
    suppressed = tiny.model.generation_config.suppress_tokens
    assert config.image_token_id in suppressed and tiny.prior_id in suppressed


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_every_base_weight_is_kept_and_only_the_projector_is_new(family):
    base, processor = build_tiny_vlm(family, seed=1)
    before = {key: value.clone() for key, value in base.state_dict().items()}
    token_id = len(processor.tokenizer) - 1  # an existing token: no resize, so every tensor keeps its shape
    model = add_facial_prior(base, facial_prior_dim=136, facial_prior_token_id=token_id)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert set(after) - set(before) == {
        f"model.facial_prior_projector.linear_{layer}.{kind}" for layer in (1, 2) for kind in ("weight", "bias")
    }
    assert model.model.facial_prior_projector.linear_1.weight.std() > 0


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_weights_missing_from_a_checkpoint_get_the_base_models_initialisation(family, monkeypatch):
    """`from_pretrained` with every weight missing initialises each module as `__init__` does (transformers'
    `test_can_init_all_missing_weights`, seeded per module): e.g. CLIP's attention blocks keep CLIP's own scale."""
    from transformers import PreTrainedModel, set_seed

    initialize = PreTrainedModel._initialize_weights

    def seeded(*args, **kwargs):
        set_seed(42)
        initialize(*args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)
    config = converted(family).model.config
    model_class = type(converted(family).model)
    from_init = model_class(copy.deepcopy(config)).state_dict()
    from_nothing = model_class.from_pretrained(None, config=copy.deepcopy(config), state_dict={}).state_dict()
    assert from_init.keys() == from_nothing.keys()
    assert [key for key, value in from_init.items() if not torch.equal(value, from_nothing[key])] == []


def test_input_without_prior_token_gives_the_base_models_logits_exactly(tiny):
    assert (tiny.base_inputs["input_ids"] == tiny.prior_id).sum() == 0
    with torch.no_grad():
        logits = tiny.model(**tiny.base_inputs).logits
    torch.testing.assert_close(logits[..., : tiny.base_vocab], tiny.base_logits, rtol=0, atol=0)


def test_prior_changes_logits_from_its_token_on_and_never_before(tiny):
    inputs = tiny.inputs()
    other = dict(inputs, facial_priors=priors(1, seed=7))
    with torch.no_grad():
        a = tiny.model(**inputs)
        b = tiny.model(**other)
    position = (inputs["input_ids"][0] == tiny.prior_id).nonzero().item()
    torch.testing.assert_close(a.logits[:, :position], b.logits[:, :position], rtol=0, atol=0)
    differs = (a.logits[0, position:] - b.logits[0, position:]).abs().amax(-1) > 1e-6
    assert bool(differs.all()), "every position from the prior token on must see the prior"
    expected = tiny.model.get_facial_prior_features(inputs["facial_priors"])
    torch.testing.assert_close(a.facial_prior_hidden_states, expected)


def test_prior_token_sits_right_after_each_images_block(tiny):
    processor = tiny.processor
    inputs = processor(images=images(2), text=[prompt(processor, num_images=2)], facial_priors=priors(2),
                       return_tensors="pt")
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    positions = [i for i, token in enumerate(tokens) if token == "<facial_prior>"]
    assert len(positions) == 2 and inputs["facial_priors"].shape == (2, 136)
    image_token = processor.tokenizer.convert_ids_to_tokens(tiny.model.config.image_token_id)
    for number, position in enumerate(positions):
        assert tokens[position - 1] == CLOSING_TOKEN[tiny.family]
        # the image tokens of this image come before the prior, the next image's after it
        assert image_token in tokens[:position]
        if number == 0:
            assert image_token in tokens[position:]
    # the base format is kept: removing the priors gives the base processor's ids
    base = tiny.base_processor(images=images(2), text=[prompt(tiny.base_processor, num_images=2)])
    assert [t for t in inputs["input_ids"][0].tolist() if t != tiny.prior_id] == base["input_ids"][0]


def test_idefics3_image_splitting_puts_the_prior_after_the_global_image():
    base, base_processor = build_tiny_vlm("idefics3")
    processor = add_facial_prior_token(base_processor)
    processor.image_processor.do_image_splitting = True
    processor.image_processor.size = {"longest_edge": 112}
    inputs = processor(images=images(1), text=[prompt(processor)], facial_priors=priors(1),
                       return_text_replacement_offsets=True)
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    position = tokens.index("<facial_prior>")
    assert tokens.count("<fake_token_around_image>") > 2 and tokens.count("<facial_prior>") == 1
    assert tokens[position - 1] == "<fake_token_around_image>" and "<image>" not in tokens[position:]
    assert "<global-img>" in tokens[:position]
    offsets = inputs["text_replacement_offsets"][0][0]
    assert offsets["replacement"].endswith("<fake_token_around_image><facial_prior>")  # the image's expansion


def test_assistant_masks_cover_exactly_the_answer_after_the_inserted_prior_tokens(tiny):
    """`apply_chat_template` places the answer mask with the expansion offsets, which count the prior tokens (the
    tiny template gets `{% generation %}` markers around the answer, as TRL's assistant-only loss needs)."""
    answer = "AU12 - Lip Corner Puller."
    content = [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}, {"type": "image"}]
    messages = [{"role": "user", "content": content},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    marked = tiny.processor.chat_template.replace("{%- if message['content'] is string -%}",
                              "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
                              "{{- message['content'][0]['text'] -}}{%- endgeneration -%}"
                              "{%- elif message['content'] is string -%}", 1)
    batch = tiny.processor.apply_chat_template(
        messages, chat_template=marked, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        processor_kwargs={"images": images(2), "facial_priors": priors(2)},
    )
    ids = torch.tensor(batch["input_ids"][0])
    assert (ids == tiny.prior_id).sum() == 2
    answer_ids = ids[torch.tensor(batch["assistant_masks"][0]).bool()]
    assert tiny.processor.tokenizer.decode(answer_ids).strip() == answer


def test_gemma3_image_tokens_do_not_attend_to_the_prior():
    """Gemma 3 attends bidirectionally inside an image block: the prior is text to it, so it comes after."""
    tiny = converted("gemma3")
    inputs = tiny.inputs()
    position = (inputs["input_ids"][0] == tiny.prior_id).nonzero().item()
    assert inputs["token_type_ids"][0, position] == 0 and inputs["token_type_ids"][0, position - 2] == 1


def test_training_reaches_the_prior_projector_through_the_family_collator(tiny):
    """EmoLA's collator renders each family's template; the loss skips image and prior tokens and trains the prior."""
    from transformers_emola.training import EmolaDataCollator

    rows = [{"images": [image], "facial_priors": prior.tolist(), "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}]},
        {"role": "assistant", "content": [{"type": "text", "text": "AU12 - Lip Corner Puller."}]}]}
        for image, prior in zip(images(2), priors(2))]
    batch = EmolaDataCollator(tiny.processor, assistant_only_loss=False)(rows)
    assert (batch["input_ids"] == tiny.prior_id).sum(-1).tolist() == [1, 1]
    assert not torch.isin(batch["labels"], torch.tensor([tiny.prior_id, tiny.model.config.image_token_id])).any()
    model = copy.deepcopy(tiny.model).train()
    model(**batch).loss.backward()
    assert model.model.facial_prior_projector.linear_1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_and_auto_load_are_exact(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    family = facial_prior_family(tiny.model)
    assert type(config) is family.config_class
    assert config.to_dict() | {"_name_or_path": ""} == tiny.model.config.to_dict() | {"_name_or_path": ""}
    model = owned(AutoModelForImageTextToText.from_pretrained(tmp_path))
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(model) is type(tiny.model) and type(processor) is type(tiny.processor)
    assert type(AutoModel.from_pretrained(tmp_path)) is family.model_class
    loaded = model.state_dict()
    for key, value in tiny.model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    inputs = tiny.inputs()
    reloaded_inputs = processor(images=[images(1)], text=[prompt(processor)], facial_priors=priors(1),
                                return_tensors="pt")
    for key in inputs:
        torch.testing.assert_close(reloaded_inputs[key], inputs[key], rtol=0, atol=0)
    original = owned(copy.deepcopy(tiny.model))
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, original(**inputs).logits, rtol=0, atol=0)
    assert model.generation_config.suppress_tokens == tiny.model.generation_config.suppress_tokens


# ------------------------------------------------------------------------------------------------------- generate
def test_generate_reads_the_prior_at_prefill(tiny):
    inputs = tiny.inputs()
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True)
    a = tiny.model.generate(**inputs, **kwargs)
    b = tiny.model.generate(**dict(inputs, facial_priors=priors(1, seed=3) * 5), **kwargs)
    assert not torch.allclose(a.scores[0], b.scores[0])
    with torch.no_grad():  # the first generated token is the forward's prediction after the prompt
        expected = tiny.model(**inputs).logits[:, -1]
    torch.testing.assert_close(a.scores[0], expected.masked_fill(torch.isinf(a.scores[0]), -torch.inf))


def test_batched_generate_equals_one_by_one(tiny):
    batch = tiny.inputs(QUESTIONS)
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False)
    batched = tiny.model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
    for i, question in enumerate(QUESTIONS):
        single = tiny.processor(images=[images(2)[i]], text=[prompt(tiny.processor, question)],
                                facial_priors=priors(2)[i : i + 1], return_tensors="pt")
        alone = tiny.model.generate(**single, **kwargs)[:, single["input_ids"].shape[1]:]
        assert torch.equal(batched[i : i + 1], alone), (tiny.family, i)


def test_beams_and_num_return_sequences_expand_priors_per_sample(tiny):
    batch = tiny.inputs(QUESTIONS)
    kwargs = dict(max_new_tokens=2, do_sample=False, num_beams=2)
    output = tiny.model.generate(**batch, num_return_sequences=2, **kwargs)
    assert output.shape[0] == 4
    torch.testing.assert_close(output[0::2], tiny.model.generate(**batch, **kwargs), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------ pipelines
def test_image_text_to_text_pipeline(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    pipe.processor.set_facial_prior_extractor(FixedPriors())
    image = images(1)[0]
    text = prompt(tiny.processor)
    out = pipe(images=image, text=text, generate_kwargs={"max_new_tokens": 4, "do_sample": False},
               return_full_text=False)
    inputs = tiny.processor(images=image, text=text, facial_priors=FixedPriors()([image]), return_tensors="pt")
    ids = tiny.model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    # (the tiny tokenizers' Metaspace decoding may keep a leading space when the answer is cut from the whole text)
    assert out[0]["generated_text"].strip() == tiny.processor.post_process_image_text_to_text(ids)[0].strip()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3"])
def test_facial_affect_pipeline(family):
    tiny = converted(family)
    analyzer = pipeline("facial-affect-analysis", model=tiny.model, processor=tiny.processor)
    image, prior = images(1)[0], priors(1)[0].numpy()
    result = analyzer(image, facial_priors=prior[None], tasks="au", max_new_tokens=4)
    answers = transformers_emola.inference.generate_answers(
        tiny.model, tiny.processor, [image], [transformers_emola.AU_QUESTION], facial_priors=prior[None],
        max_new_tokens=4,
    )
    assert result["au_description"] == answers[0] and result["emotion"] is None


# -------------------------------------------------------------------------------------------- LLaVA stays EmoLA
def test_llava_gives_todays_emola():
    base, processor = build_tiny_vlm("llava", seed=2)
    reference = EmolaForConditionalGeneration.from_llava(copy.deepcopy(base), facial_prior_dim=136,
                                                         facial_prior_token_id=5, facial_prior_backend="face_alignment")
    model = add_facial_prior(base, facial_prior_dim=136, facial_prior_token_id=5)
    assert type(model) is EmolaForConditionalGeneration
    assert model.config.to_dict() == reference.config.to_dict()
    theirs = reference.state_dict()
    assert set(model.state_dict()) == set(theirs)
    for key, value in model.state_dict().items():
        if "facial_prior_projector" not in key:
            assert torch.equal(value, theirs[key]), key


# ------------------------------------------------------------------------------------------ recipe-facing details
@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_family_module_paths(family):
    base, processor = build_tiny_vlm(family.name)
    model = add_facial_prior(base, facial_prior_dim=136, facial_prior_token_id=len(processor.tokenizer) - 1)
    language_model = model.get_submodule(family.language_model)
    assert any(isinstance(module, torch.nn.Linear) for module in language_model.modules())
    assert model.get_submodule(family.language_model).get_input_embeddings() is model.get_input_embeddings()
    vision = {id(p) for p in model.get_submodule(family.vision_tower).parameters()}
    projector = model.get_submodule(family.projector)
    assert vision and any(True for _ in projector.parameters())
    assert model.get_submodule(family.trainable_projectors[1]) is model.model.facial_prior_projector
    assert not vision & {id(p) for p in language_model.parameters()}


def test_attention_implementation_reaches_every_taken_over_layer():
    tiny = Converted("idefics3")
    inputs = tiny.inputs()
    with torch.no_grad():
        sdpa = tiny.model(**inputs).logits
        tiny.model.set_attn_implementation("eager")
        out = tiny.model(**inputs, output_attentions=True)
    assert len(out.attentions) == tiny.model.config.text_config.num_hidden_layers
    assert all(attention is not None for attention in out.attentions)
    torch.testing.assert_close(out.logits, sdpa, atol=1e-5, rtol=1e-4)


def test_add_facial_prior_loads_a_path(tmp_path):
    base, processor = build_tiny_vlm("qwen2_5_vl")
    base.save_pretrained(tmp_path)
    model = add_facial_prior(str(tmp_path), facial_prior_dim=212, processor=processor)
    assert type(model).__name__ == "EmolaQwen2_5_VLForConditionalGeneration"
    assert model.config.facial_prior_backend == "insightface_2d106"
    assert not model.training  # as from_pretrained left the base


# --------------------------------------------------------------------------------------------------------- errors
def test_errors_name_the_input():
    base, processor = build_tiny_vlm("gemma3")
    with pytest.raises(ValueError, match="pass processor="):
        add_facial_prior(base, facial_prior_dim=136)
    with pytest.raises(ValueError, match="does not fit the vocabulary"):
        add_facial_prior(base, facial_prior_dim=136, facial_prior_token_id=10**6)
    with pytest.raises(ValueError, match="gives 212 numbers, not facial_prior_dim=136"):
        add_facial_prior(base, facial_prior_dim=136, facial_prior_backend="insightface_2d106", processor=processor)
    with pytest.raises(ValueError, match="no landmark backend gives 10 numbers"):
        add_facial_prior(base, facial_prior_dim=10, processor=processor)
    with pytest.raises(ValueError, match="takes the image-text-to-text model of the gemma3 family"):
        add_facial_prior(base.model, facial_prior_dim=136, processor=processor)
    model = add_facial_prior(base, facial_prior_dim=136, processor=processor)
    with pytest.raises(ValueError, match="already carries the facial prior"):
        add_facial_prior(model, facial_prior_dim=136, processor=processor)
    with pytest.raises(ValueError, match="supported: llava, qwen2_5_vl, idefics3, gemma3"):
        add_facial_prior(torch.nn.Linear(2, 2), facial_prior_dim=136)
    emola_processor = add_facial_prior_token(processor)
    inputs = emola_processor(images=images(1), text=[prompt(emola_processor)], facial_priors=priors(1),
                             return_tensors="pt")
    del inputs["facial_priors"]
    with pytest.raises(ValueError, match="facial_priors is missing"):
        model(**inputs)


# ---------------------------------------------------------------------------------------------------------- example
def test_example_script_shows_every_guarantee_on_qwen2_5_vl_and_idefics3(tmp_path):
    spec = importlib.util.spec_from_file_location("facial_prior_any_vlm", ROOT / "examples/facial_prior_any_vlm.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(example.ScriptArguments(output_dir=str(tmp_path)))
    assert set(results) == {"qwen2_5_vl", "idefics3"}
    for name, result in results.items():
        assert example.holds(result), (name, result)
        assert result["no prior token = base"] is True and result["before prior: max |diff|"] == 0.0
        assert result["from prior on: min |diff|"] > 1e-4 and result["generate: other prior |diff|"] > 1e-4
        saved = json.loads((tmp_path / name / "config.json").read_text())
        assert saved["model_type"] == f"emola_{name}" and saved["facial_prior_token_id"] == example.PRIOR
    assert results["qwen2_5_vl"]["model"] == "EmolaQwen2_5_VLForConditionalGeneration"
    assert results["idefics3"]["model"] == "EmolaIdefics3ForConditionalGeneration"
