"""What EmoLA relies on from transformers' LLaVA, the other base families and generation code, one test per promise.

EmoLA is a delta (`modeling_facial_prior.py`): it swaps the prior into the input embeddings and lets LLaVA's own
forward run. When an upstream release moves one of the pieces below, the test named after it fails and says what
moved, instead of forty behavioural tests failing with the same TypeError.
"""

import dataclasses
import inspect

import pytest
import torch
from transformers import GenerationMixin, LlavaConfig, LlavaForConditionalGeneration
from transformers.processing_utils import ProcessorMixin
from transformers.models.llava import modeling_llava

from transformers_emola import build_tiny_emola
from transformers_emola.testing_utils import TINY_VLM_FAMILIES, build_tiny_vlm


@pytest.fixture(scope="module")
def tiny():
    """A tiny LLaVA (the same sizes as the tiny EmoLA) and inputs with one image, from EmoLA's own builder."""
    emola, processor = build_tiny_emola(use_facial_prior=False)
    config = LlavaConfig(
        vision_config=emola.config.vision_config.to_dict(),
        text_config=emola.config.text_config.to_dict(),
        image_token_index=emola.config.image_token_id,
        image_seq_length=emola.config.image_seq_length,
    )
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config).eval()
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], add_generation_prompt=True
    )
    image = torch.rand(28, 40, 3).mul(255).byte().numpy()
    return llava, processor(images=image, text=prompt, return_tensors="pt")


def test_llava_forward_takes_inputs_embeds_in_place_of_input_ids(tiny):
    """EmoLA hands LLaVA's forward the embeddings with the prior swapped in, and no ids."""
    llava, inputs = tiny
    embeds = llava.get_input_embeddings()(inputs["input_ids"])
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    with torch.no_grad():
        from_ids = llava(**inputs).logits
        from_embeds = llava(inputs_embeds=embeds, **rest).logits
    torch.testing.assert_close(from_embeds, from_ids, rtol=0, atol=0)


def test_llava_finds_image_placeholders_in_embeddings_by_the_image_token_embedding(tiny):
    """Without ids, LLaVA compares each embedding with the `<image>` token's: a swapped-in prior must not match."""
    llava, inputs = tiny
    embeds = llava.get_input_embeddings()(inputs["input_ids"])
    features = torch.zeros(int((inputs["input_ids"] == llava.config.image_token_id).sum()), embeds.shape[-1])
    mask = llava.model.get_placeholder_mask(None, inputs_embeds=embeds, image_features=features[None])
    assert torch.equal(mask[..., 0], inputs["input_ids"] == llava.config.image_token_id)


def test_llava_refuses_image_features_that_do_not_match_the_tokens_with_its_message(tiny):
    """EmoLA keeps LLaVA's own check and message for images (docs and tests name it)."""
    llava, inputs = tiny
    doubled = dict(inputs, pixel_values=torch.cat([inputs["pixel_values"]] * 2))
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        llava(**doubled)


def test_llava_output_classes_are_dataclasses_rebuildable_from_their_items(tiny):
    """EmoLA's outputs are LLaVA's classes plus one field, rebuilt with `Class(**outputs, facial_prior_...=...)`."""
    llava, inputs = tiny
    for name in ("LlavaModelOutputWithPast", "LlavaCausalLMOutputWithPast"):
        output_class = getattr(modeling_llava, name)
        assert dataclasses.is_dataclass(output_class), name
        assert all(field.default is None for field in dataclasses.fields(output_class)), name
    with torch.no_grad():
        output = llava(**inputs)
    assert isinstance(output, modeling_llava.LlavaCausalLMOutputWithPast)
    rebuilt = type(output)(**output)
    assert list(rebuilt.keys()) == list(output.keys())


def test_llava_model_layout_is_what_emola_checkpoints_use():
    """EmoLA builds the same children (its `__init__` names them), so LLaVA-1.5 weights load key for key."""
    emola, _ = build_tiny_emola(use_facial_prior=False)
    llava = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=emola.config.vision_config.to_dict(), text_config=emola.config.text_config.to_dict())
    )
    assert [name for name, _ in llava.named_children()] == ["model", "lm_head"]
    assert [name for name, _ in llava.model.named_children()] == ["vision_tower", "multi_modal_projector", "language_model"]
    assert set(emola.state_dict()) == set(llava.state_dict())


def test_llava_config_fields_the_prior_projector_reads():
    config = LlavaConfig()
    assert config.get_text_config().hidden_size == 4096
    assert config.projector_hidden_act == "gelu" and isinstance(config.multimodal_projector_bias, bool)
    assert config.image_token_id == 32000


def test_generation_prepare_inputs_takes_inputs_embeds_and_is_first_iteration_and_forwards_extras():
    """EmoLA drops `facial_priors` outside prefill, as upstream drops `pixel_values` (same two keywords)."""
    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    assert "inputs_embeds" in parameters and "is_first_iteration" in parameters
    assert any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def test_generation_expands_inputs_with_this_signature():
    """EmoLA regroups priors per sample around upstream's expansion for beams / `num_return_sequences`."""
    parameters = list(inspect.signature(GenerationMixin._expand_inputs_for_generation).parameters)
    assert parameters[:4] == ["self", "expand_size", "is_encoder_decoder", "input_ids"]


def test_generate_validates_model_kwargs_against_the_forward_signature():
    """Why EmoLA's forward advertises LLaVA's parameters plus `facial_priors` (and not just `**kwargs`)."""
    source = inspect.getsource(GenerationMixin._validate_model_kwargs)
    assert "inspect.signature(self.forward)" in source


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_every_family_processor_expands_images_through_get_text_with_replacements(family):
    """The processor delta (`processing_facial_prior.py`) inserts `<facial_prior>` after this expansion step, using
    the `new_span` offsets it returns; the family's own `replace_image_token` gives the image's tokens."""
    parameters = list(inspect.signature(ProcessorMixin.get_text_with_replacements).parameters)
    assert parameters[:3] == ["self", "text", "images_replacements"]
    _, processor = build_tiny_vlm(family)
    image = torch.rand(56, 56, 3).mul(255).byte().numpy()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    returned = []
    original = type(processor).get_text_with_replacements

    def spy(self, *args, **kwargs):
        returned.append(original(self, *args, **kwargs))
        return returned[-1]

    type(processor).get_text_with_replacements = spy
    try:
        processor(images=image, text=text)
    finally:
        type(processor).get_text_with_replacements = original
    assert returned, f"{type(processor).__name__} no longer expands images through get_text_with_replacements"
    expanded, offsets = returned[0]
    (offset,) = offsets[0]
    start, end = offset["new_span"]
    assert offset["type"] == "image" and expanded[0][start:end] == offset["replacement"]


def test_processors_map_answer_character_spans_to_tokens_past_expanded_images():
    """EmoLA's collator finds the answers of templates without `{% generation %}` markers itself and hands their
    character spans to this step of `apply_chat_template` (lists of offsets, as its markers' spans)."""
    parameters = list(inspect.signature(ProcessorMixin._adjust_assistant_masks_indices).parameters)
    assert parameters == ["self", "processed_dict", "generation_indices"]
    _, processor = build_tiny_vlm("idefics3")
    text = "<|im_start|>User:<image>hi<end_of_utterance>\n<|im_start|>Assistant: yes<end_of_utterance>\n"
    batch = processor(images=torch.rand(56, 56, 3).mul(255).byte().numpy(), text=[text], return_offsets_mapping=True,
                      return_text_replacement_offsets=True)
    span = (text.index(" yes"), len(text))
    batch = processor._adjust_assistant_masks_indices(batch, [[span]])
    assert "offset_mapping" not in batch and "text_replacement_offsets" not in batch
    ids = torch.tensor(batch["input_ids"][0])[torch.tensor(batch["assistant_masks"][0]).bool()]
    assert processor.tokenizer.decode(ids).strip() == "yes<end_of_utterance>"


def test_processors_save_the_arguments_of_their_init():
    """Why each family's EmoLA processor lists its settings in `__init__` (saved and reloaded by name)."""
    source = inspect.getsource(ProcessorMixin.to_dict)
    assert "inspect.signature(self.__init__)" in source


def test_qwen2_5_vl_reads_image_placeholders_and_positions_from_the_ids_next_to_the_embeddings():
    """Why Qwen2.5-VL's binding hands its forward the ids together with the swapped embeddings."""
    model, processor = build_tiny_vlm("qwen2_5_vl")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    inputs = processor(images=torch.rand(56, 56, 3).mul(255).byte().numpy(),
                       text=processor.apply_chat_template(messages, add_generation_prompt=True), return_tensors="pt")
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():
        from_ids = model(**inputs).logits
        from_both = model(**inputs, inputs_embeds=embeds).logits
    torch.testing.assert_close(from_both, from_ids, rtol=0, atol=0)


def test_compile_safe_checks_and_decorators_exist():
    from transformers.utils import TransformersKwargs, torch_compilable_check  # noqa: F401
    from transformers.utils.generic import can_return_tuple  # noqa: F401

    with pytest.raises(ValueError, match="boom"):
        torch_compilable_check(torch.tensor(False), lambda: "boom")
