"""EmolaModel / EmolaForConditionalGeneration on tiny random configs, in the spirit of transformers' ModelTesters."""

import copy

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

import transformers_emola  # noqa: F401  (registers the Auto* classes)
from transformers_emola import EmolaConfig, EmolaForConditionalGeneration, EmolaModel, EmolaProcessor
from transformers_emola import build_tiny_emola

QUESTION = "What AUs are conveyed by this face?"


class EmolaModelTester:
    """Builds a tiny EmoLA and matching inputs; every test gets fresh tensors from here."""

    def __init__(self, use_facial_prior=True, seed=0):
        self.model, self.processor = build_tiny_emola(use_facial_prior=use_facial_prior, seed=seed)
        self.config = self.model.config
        self.prior_dim = self.config.facial_prior_dim

    def prompt(self, question=QUESTION):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def images(self, n, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return [
            Image.fromarray((torch.rand(30 + 4 * i, 40, 3, generator=generator) * 255).byte().numpy())
            for i in range(n)
        ]

    def priors(self, n, seed=0):
        return torch.rand(n, self.prior_dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def inputs(self, questions=(QUESTION,), seed=0, **kwargs):
        n = len(questions)
        priors = self.priors(n, seed) if self.config.use_facial_prior else None
        return self.processor(
            images=self.images(n, seed),
            text=[self.prompt(q) for q in questions],
            facial_priors=priors,
            padding=True,
            return_tensors="pt",
            **kwargs,
        )


def image_features_of(output) -> torch.Tensor:
    """The projected image features an output carries, under whichever field this transformers version uses."""
    if output.get("image_outputs") is not None:  # transformers >= 5.24
        return torch.cat(list(output["image_outputs"].pooler_output))
    return output["image_hidden_states"]


def cache_of(output) -> dict:
    """The output's KV cache as the keyword argument this transformers version's forward takes."""
    return {"cache": output["cache"]} if "cache" in output else {"past_key_values": output["past_key_values"]}


@pytest.fixture(scope="module")
def tester():
    return EmolaModelTester()


def test_config_defaults_reproduce_emola_7b():
    config = EmolaConfig()
    assert config.facial_prior_dim == 212 and config.facial_prior_backend == "insightface_2d106"
    assert config.vision_config.image_size == 336 and config.vision_config.patch_size == 14
    assert config.vision_config.hidden_size == 1024 and config.text_config.hidden_size == 4096
    assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
    assert config.projector_hidden_act == "gelu" and config.use_facial_prior
    assert config.image_token_id == 32000 and config.facial_prior_token_id == 32002
    assert config.text_config.vocab_size == 32064


def test_config_round_trip(tmp_path):
    config = EmolaConfig(facial_prior_dim=136, facial_prior_backend="dlib", use_facial_prior=False)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, EmolaConfig)
    assert loaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}
    assert (loaded.facial_prior_dim, loaded.facial_prior_backend, loaded.use_facial_prior) == (136, "dlib", False)


def test_prior_projector_is_mlp2x_gelu(tester):
    projector = tester.model.model.facial_prior_projector
    hidden = tester.config.text_config.hidden_size
    assert projector.linear_1.weight.shape == (hidden, tester.prior_dim)
    assert projector.linear_2.weight.shape == (hidden, hidden)
    x = tester.priors(3)
    expected = projector.linear_2(torch.nn.functional.gelu(projector.linear_1(x)))
    torch.testing.assert_close(tester.model.model.get_facial_prior_features(x), expected)


def test_processor_places_prior_token_right_after_image_tokens(tester):
    inputs = tester.inputs()
    ids = inputs["input_ids"][0].tolist()
    image_id, prior_id = tester.config.image_token_id, tester.config.facial_prior_token_id
    positions = [i for i, t in enumerate(ids) if t == image_id]
    per_image = (tester.config.vision_config.image_size // tester.config.vision_config.patch_size) ** 2
    assert len(positions) == per_image
    assert positions == list(range(positions[0], positions[0] + per_image))
    assert ids.count(prior_id) == 1 and ids.index(prior_id) == positions[-1] + 1
    assert inputs["facial_priors"].shape == (1, tester.prior_dim)


def test_forward_shapes_and_loss_matches_cross_entropy(tester):
    inputs = tester.inputs()
    labels = inputs["input_ids"].clone()
    labels[:, :-5] = -100
    output = tester.model(**inputs, labels=labels)
    batch, length = inputs["input_ids"].shape
    assert output.logits.shape == (batch, length, tester.config.text_config.vocab_size)
    assert output.facial_prior_hidden_states.shape == (1, tester.config.text_config.hidden_size)
    assert image_features_of(output).shape == (4, tester.config.text_config.hidden_size)
    shifted = torch.nn.functional.cross_entropy(
        output.logits[:, :-1].reshape(-1, output.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(output.loss, shifted)


def test_prior_embedding_is_placed_at_the_prior_token(tester):
    inputs = tester.inputs()
    captured = {}
    hook = tester.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        tester.model(**inputs)
    finally:
        hook.remove()
    position = (inputs["input_ids"][0] == tester.config.facial_prior_token_id).nonzero().item()
    expected = tester.model.model.get_facial_prior_features(inputs["facial_priors"])[0]
    torch.testing.assert_close(captured["embeds"][0, position], expected)


def test_changing_only_priors_changes_logits_at_and_after_prior_token(tester):
    inputs = tester.inputs()
    other = dict(inputs)
    other["facial_priors"] = tester.priors(1, seed=7)
    with torch.no_grad():
        a = tester.model(**inputs).logits
        b = tester.model(**other).logits
    position = (inputs["input_ids"][0] == tester.config.facial_prior_token_id).nonzero().item()
    torch.testing.assert_close(a[:, :position], b[:, :position])
    differs = (a[0, position:] - b[0, position:]).abs().amax(-1) > 1e-6
    assert bool(differs.all()), "every position from the prior token on must see the prior"


def test_save_load_round_trip_identical_logits(tester, tmp_path):
    tester.model.save_pretrained(tmp_path)
    tester.processor.save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(model) is EmolaForConditionalGeneration and type(processor) is EmolaProcessor
    assert type(AutoModel.from_pretrained(tmp_path)) is EmolaModel
    assert processor.chat_template == tester.processor.chat_template
    inputs = tester.inputs()
    reloaded_inputs = processor(
        images=tester.images(1), text=[tester.prompt()], facial_priors=tester.priors(1), return_tensors="pt"
    )
    for key in inputs:
        torch.testing.assert_close(inputs[key], reloaded_inputs[key])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, tester.model(**inputs).logits, rtol=0, atol=0)


def test_left_padded_batch_matches_one_by_one(tester):
    questions = [QUESTION, "What emotions are conveyed by this face? Describe the brows and mouth in detail."]
    batch = tester.inputs(questions)
    assert tester.processor.tokenizer.padding_side == "left"
    with torch.no_grad():
        batched = tester.model(**batch).logits
        for i, question in enumerate(questions):
            single = tester.processor(
                images=tester.images(2)[i : i + 1],
                text=[tester.prompt(question)],
                facial_priors=tester.priors(2)[i : i + 1],
                return_tensors="pt",
            )
            logits = tester.model(**single).logits[0]
            torch.testing.assert_close(batched[i, -logits.shape[0] :], logits, atol=1e-5, rtol=1e-4)


def test_cached_generate_equals_uncached_generate(tester):
    batch = tester.inputs([QUESTION, "What emotions are conveyed by this face?"])
    kwargs = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
    cached = tester.model.generate(**batch, use_cache=True, **kwargs)
    uncached = tester.model.generate(**batch, use_cache=False, **kwargs)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 8
    assert torch.equal(cached, uncached)


def test_generate_uses_priors(tester):
    batch = tester.inputs()
    kwargs = dict(max_new_tokens=6, do_sample=False, min_new_tokens=6, output_scores=True, return_dict_in_generate=True)
    a = tester.model.generate(**batch, **kwargs)
    changed = dict(batch, facial_priors=tester.priors(1, seed=3) * 5)
    b = tester.model.generate(**changed, **kwargs)
    assert not torch.allclose(a.scores[0], b.scores[0])


def test_num_return_sequences_expands_priors_per_sample(tester):
    batch = tester.inputs([QUESTION, "What emotions are conveyed by this face?"])
    output = tester.model.generate(**batch, max_new_tokens=4, do_sample=False, num_return_sequences=2, num_beams=2)
    assert output.shape[0] == 4
    single = tester.model.generate(**batch, max_new_tokens=4, do_sample=False, num_beams=2)
    assert torch.equal(output[0::2], single)


def test_sdpa_matches_eager(tester):
    inputs = tester.inputs()
    eager = copy.deepcopy(tester.model)
    eager.set_attn_implementation("eager")
    sdpa = copy.deepcopy(tester.model)
    sdpa.set_attn_implementation("sdpa")
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_same_gradients(tester):
    inputs = tester.inputs()
    labels = inputs["input_ids"].clone()
    grads = []
    for checkpointing in (False, True):
        model = copy.deepcopy(tester.model).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(**inputs, labels=labels).loss.backward()
        grads.append(model.model.facial_prior_projector.linear_1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


def test_get_image_features_shape(tester):
    pixel_values = tester.inputs()["pixel_values"]
    features = tester.model.get_image_features(pixel_values=pixel_values).pooler_output
    assert len(features) == 1 and features[0].shape == (4, tester.config.text_config.hidden_size)


def test_resize_token_embeddings_keeps_logits(tester):
    model = copy.deepcopy(tester.model)
    inputs = tester.inputs()
    with torch.no_grad():
        before = model(**inputs).logits
        vocab = model.config.text_config.vocab_size
        model.resize_token_embeddings(vocab + 8)
        after = model(**inputs).logits
    assert after.shape[-1] == vocab + 8
    torch.testing.assert_close(after[..., :vocab], before)


def test_tie_word_embeddings_ties_lm_head():
    model, _ = build_tiny_emola()
    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = True
    config.text_config.tie_word_embeddings = True
    tied = EmolaForConditionalGeneration(config)
    assert tied.lm_head.weight.data_ptr() == tied.get_input_embeddings().weight.data_ptr()
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()


def test_dtype_and_prior_cast(tester, tmp_path):
    tester.model.save_pretrained(tmp_path)
    model = EmolaForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    inputs = tester.inputs()  # float32 priors and pixels
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.dtype == torch.bfloat16 and out.facial_prior_hidden_states.dtype == torch.bfloat16


def test_use_facial_prior_false_is_plain_llava():
    tester = EmolaModelTester(use_facial_prior=False)
    assert tester.model.model.facial_prior_projector is None
    inputs = tester.inputs()
    assert "facial_priors" not in inputs
    assert (inputs["input_ids"] == tester.config.facial_prior_token_id).sum() == 0
    assert tester.model(**inputs).facial_prior_hidden_states is None


# ---------------------------------------------------------------------------------------------------- from_llava
def _tiny_llava(tester):
    config = LlavaConfig(
        vision_config=tester.config.vision_config.to_dict(),
        text_config=tester.config.text_config.to_dict(),
        image_token_index=tester.config.image_token_id,
        image_seq_length=tester.config.image_seq_length,
    )
    torch.manual_seed(1)
    return LlavaForConditionalGeneration(config).eval()


@pytest.mark.parametrize("use_facial_prior", [False, True])
def test_from_llava_copies_every_weight_and_reproduces_logits(tester, use_facial_prior, tmp_path):
    llava = _tiny_llava(tester)
    llava.save_pretrained(tmp_path)
    emola = EmolaForConditionalGeneration.from_llava(
        tmp_path,
        facial_prior_dim=136,
        facial_prior_token_id=tester.config.facial_prior_token_id,
        use_facial_prior=use_facial_prior,
    ).eval()
    emola_state = emola.state_dict()
    for key, value in llava.state_dict().items():
        assert torch.equal(emola_state[key], value), key
    extra = set(emola_state) - set(llava.state_dict())
    assert extra == ({k for k in emola_state if "facial_prior_projector" in k} if use_facial_prior else set())
    if not use_facial_prior:
        processor = copy.deepcopy(tester.processor)
        processor.use_facial_prior = False
        inputs = processor(images=tester.images(1), text=[tester.prompt()], return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(emola(**inputs).logits, llava(**inputs).logits, rtol=0, atol=0)


def test_from_llava_rejects_prior_token_outside_vocabulary(tester):
    with pytest.raises(ValueError, match="does not fit the LLaVA vocabulary"):
        EmolaForConditionalGeneration.from_llava(_tiny_llava(tester), facial_prior_dim=136, facial_prior_token_id=10**6)


# -------------------------------------------------------------------------------------------------------- errors
def test_error_wrong_prior_dimension(tester):
    inputs = tester.inputs()
    inputs["facial_priors"] = torch.zeros(1, tester.prior_dim + 1)
    with pytest.raises(ValueError, match=r"facial_priors must have shape \(num_images, 136\)"):
        tester.model(**inputs)


def test_error_number_of_priors_vs_placeholders(tester):
    inputs = tester.inputs()
    inputs["facial_priors"] = torch.zeros(2, tester.prior_dim)
    with pytest.raises(ValueError, match="Got 2 facial_priors but 1 <facial_prior> tokens"):
        tester.model(**inputs)


def test_error_missing_priors(tester):
    inputs = dict(tester.inputs())
    del inputs["facial_priors"]
    with pytest.raises(ValueError, match="facial_priors is missing"):
        tester.model(**inputs)


def test_error_priors_given_to_plain_llava():
    tester = EmolaModelTester(use_facial_prior=False)
    inputs = dict(tester.inputs(), facial_priors=torch.zeros(1, 136))
    with pytest.raises(ValueError, match="use_facial_prior=False"):
        tester.model(**inputs)


def test_error_images_vs_placeholders(tester):
    inputs = tester.inputs()
    inputs["pixel_values"] = torch.cat([inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        tester.model(**inputs)


def test_placeholders_are_never_generated(tester):
    model = copy.deepcopy(tester.model)
    with torch.no_grad():  # make <facial_prior> and <image> the most likely next tokens everywhere
        for token in (tester.config.facial_prior_token_id, tester.config.image_token_id):
            model.lm_head.weight[token] = model.get_input_embeddings().weight.mean(0) * 0 + 10.0
    batch = tester.inputs()
    for use_cache in (True, False):
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache)
        new = out[:, batch["input_ids"].shape[1]:]
        assert not torch.isin(new, torch.tensor([tester.config.facial_prior_token_id, tester.config.image_token_id])).any()


def test_cached_decoding_step_needs_no_priors(tester):
    batch = tester.inputs()
    with torch.no_grad():
        prefill = tester.model(**batch, use_cache=True)
        step = torch.tensor([[tester.config.facial_prior_token_id]])
        mask = torch.cat([batch["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = tester.model(input_ids=step, attention_mask=mask, **cache_of(prefill))
    assert out.logits.shape == (1, 1, tester.config.text_config.vocab_size)


# ------------------------------------------------------------------------- behaves like LLaVA where LLaVA is valid
def _emola_and_llava_sharing_weights(tester):
    llava = _tiny_llava(tester)
    emola = EmolaForConditionalGeneration.from_llava(
        llava, facial_prior_dim=tester.prior_dim, facial_prior_token_id=tester.config.facial_prior_token_id
    ).eval()
    return emola, llava


def test_inputs_without_images_or_priors_give_llavas_logits(tester):
    """LLaVA accepts placeholders without their features (text only, assistant prefill): so does EmoLA, exactly."""
    emola, llava = _emola_and_llava_sharing_weights(tester)
    input_ids = tester.inputs()["input_ids"]
    assert (input_ids == tester.config.facial_prior_token_id).sum() == 1
    with torch.no_grad():
        torch.testing.assert_close(emola(input_ids=input_ids).logits, llava(input_ids=input_ids).logits, rtol=0, atol=0)


def test_prior_changes_nothing_before_its_token_versus_llava(tester):
    emola, llava = _emola_and_llava_sharing_weights(tester)
    inputs = tester.inputs()
    position = (inputs["input_ids"][0] == tester.config.facial_prior_token_id).nonzero().item()
    with torch.no_grad():
        with_prior = emola(**inputs).logits
        plain = llava(**{k: v for k, v in inputs.items() if k != "facial_priors"}).logits
    torch.testing.assert_close(with_prior[:, :position], plain[:, :position], rtol=0, atol=0)
    assert not torch.allclose(with_prior[:, position:], plain[:, position:])


def test_inputs_embeds_equal_input_ids(tester):
    inputs = tester.inputs()
    embeds = tester.model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = {k: v for k, v in inputs.items() if k != "input_ids"}
    with torch.no_grad():
        expected = tester.model(**inputs).logits
        torch.testing.assert_close(tester.model(inputs_embeds=embeds, **from_embeds).logits, expected)


def test_generate_from_inputs_embeds_with_static_cache_equals_generate_from_ids(tester):
    inputs = tester.inputs()
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    from_ids = tester.model.generate(**inputs, **kwargs)[:, inputs["input_ids"].shape[1]:]
    embeds = tester.model.get_input_embeddings()(inputs["input_ids"])
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    for cache in ("dynamic", "static"):
        from_embeds = tester.model.generate(inputs_embeds=embeds, cache_implementation=cache, **rest, **kwargs)
        assert torch.equal(from_embeds, from_ids), cache


def test_assisted_decoding_equals_greedy(tester):
    assistant, _ = build_tiny_emola(seed=1)  # same tokenizer, other weights: some drafts get rejected
    batch = tester.inputs()
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    greedy = tester.model.generate(**batch, **kwargs)
    assisted = tester.model.generate(**batch, assistant_model=assistant.eval(), **kwargs)
    assert torch.equal(assisted, greedy)


def test_forward_compiles_with_fullgraph(tester):
    """`_can_compile_fullgraph` is inherited from LLaVA; the prior's checks must not break the graph."""
    assert tester.model._can_compile_fullgraph
    torch._dynamo.reset()
    compiled = torch.compile(tester.model.forward, fullgraph=True, backend="eager")
    inputs = tester.inputs()
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).logits, tester.model(**inputs).logits)
        other = dict(inputs, facial_priors=tester.priors(1, seed=5))
        torch.testing.assert_close(compiled(**other).logits, tester.model(**other).logits)
    torch._dynamo.reset()


def test_generation_mixin_is_a_direct_base():
    from transformers import GenerationMixin

    assert GenerationMixin in EmolaForConditionalGeneration.__bases__
    assert EmolaForConditionalGeneration.can_generate()


def test_output_attentions_and_hidden_states(tester):
    model = copy.deepcopy(tester.model)
    model.set_attn_implementation("eager")
    inputs = tester.inputs()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    length = inputs["input_ids"].shape[1]
    layers = tester.config.text_config.num_hidden_layers
    assert len(out.attentions) == layers and out.attentions[0].shape[-2:] == (length, length)
    assert len(out.hidden_states) == layers + 1
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones_like(out.attentions[0].sum(-1)))


def test_signature_is_llavas_plus_facial_priors():
    import inspect

    for emola_class, llava_class in [
        (EmolaForConditionalGeneration, LlavaForConditionalGeneration),
        (EmolaModel, transformers_emola.modeling_emola.LlavaModel),
    ]:
        emola_parameters = dict(inspect.signature(emola_class.forward).parameters)
        assert emola_parameters.pop("facial_priors").default is None
        assert list(emola_parameters) == list(inspect.signature(llava_class.forward).parameters)
    generation = inspect.signature(EmolaForConditionalGeneration.prepare_inputs_for_generation).parameters
    assert "inputs_embeds" in generation and "is_first_iteration" in generation


def test_positional_arguments_bind_as_for_llava(tester):
    inputs = tester.inputs()
    with torch.no_grad():
        positional = tester.model(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"],
                                  facial_priors=inputs["facial_priors"]).logits
        torch.testing.assert_close(positional, tester.model(**inputs).logits, rtol=0, atol=0)


def test_return_dict_false_gives_the_output_as_a_tuple(tester):
    inputs = tester.inputs()
    with torch.no_grad():
        as_tuple = tester.model(**inputs, return_dict=False)
        as_output = tester.model(**inputs)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_output.logits, rtol=0, atol=0)
    torch.testing.assert_close(as_tuple[-1], as_output.facial_prior_hidden_states, rtol=0, atol=0)


def test_inner_model_takes_priors_as_trl_calls_it(tester):
    """TRL and PEFT call `model.model` directly: the inner model places the prior too, identically."""
    inputs = tester.inputs()
    with torch.no_grad():
        inner = tester.model.model(**inputs)
        outer = tester.model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(inner.last_hidden_state, outer.hidden_states[-1], rtol=0, atol=0)
    torch.testing.assert_close(inner.facial_prior_hidden_states, outer.facial_prior_hidden_states, rtol=0, atol=0)
