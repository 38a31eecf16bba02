"""EmolaProcessor: chat template, token expansion, priors, padding, round trip and the pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

from transformers_emola import EmolaProcessor
from transformers_emola.faba import EMOLA_SYSTEM_PROMPT
from transformers_emola.processing_emola import expand_to_square
from transformers_emola import build_tiny_emola

QUESTION = "What AUs are conveyed by this face?"


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_emola()


def user_turn(question=QUESTION):
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


def test_chat_template_is_vicuna_v1(tiny):
    _, processor = tiny
    answer = "AU12 - Lip Corner Puller: the corners rise."
    messages = [user_turn(), {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    rendered = processor.apply_chat_template(messages)
    assert rendered == f"{EMOLA_SYSTEM_PROMPT} USER: <image>\n{QUESTION} ASSISTANT: {answer}</s>"
    prompt = processor.apply_chat_template([user_turn()], add_generation_prompt=True)
    assert prompt == f"{EMOLA_SYSTEM_PROMPT} USER: <image>\n{QUESTION} ASSISTANT:"
    # multi-turn: the second user turn follows "</s>" directly, as LLaVA's SeparatorStyle.TWO
    two = messages + [{"role": "user", "content": "And the emotion?"}]
    assert processor.apply_chat_template(two, add_generation_prompt=True).endswith(
        f"{answer}</s>USER: And the emotion? ASSISTANT:"
    )
    # a system message replaces the default system prompt; string content is accepted
    custom = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nHi"}]
    assert processor.apply_chat_template(custom, add_generation_prompt=True) == "Be brief. USER: <image>\nHi ASSISTANT:"


def test_generation_markers_cover_exactly_the_answer(tiny):
    _, processor = tiny
    answer = "AU6 and AU12 are present."
    messages = [user_turn(), {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    out = processor.tokenizer.apply_chat_template(
        messages, chat_template=processor.chat_template, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = np.array(out["input_ids"])
    mask = np.array(out["assistant_masks"]).astype(bool)
    decoded = processor.tokenizer.decode(ids[mask].tolist())
    assert decoded.strip() == answer + "</s>"


def test_expansion_counts_and_priors(tiny):
    model, processor = tiny
    images = [Image.new("RGB", (50, 30), (10, 20, 30)), Image.new("L", (20, 60), 128)]
    prompt = processor.apply_chat_template([user_turn()], add_generation_prompt=True)
    priors = np.random.default_rng(0).uniform(-1, 1, size=(2, 136)).astype(np.float32)
    out = processor(images=images, text=[prompt, prompt], facial_priors=priors, padding=True, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 3, 28, 28)
    assert ((out["input_ids"] == model.config.image_token_id).sum(-1) == 4).all()
    assert ((out["input_ids"] == model.config.facial_prior_token_id).sum(-1) == 1).all()
    torch.testing.assert_close(out["facial_priors"], torch.from_numpy(priors))
    assert processor.model_input_names[-1] == "facial_priors"


def test_prior_errors(tiny):
    _, processor = tiny
    prompt = "USER: <image>\nHi ASSISTANT:"
    image = Image.new("RGB", (28, 28))
    with pytest.raises(ValueError, match="no facial_prior_extractor"):
        processor(images=image, text=prompt)
    with pytest.raises(ValueError, match="one row per image; got 1 image\\(s\\) and shape \\(2, 136\\)"):
        processor(images=image, text=prompt, facial_priors=np.zeros((2, 136)))
    with pytest.raises(ValueError, match="without images"):
        processor(text="hello", facial_priors=np.zeros((1, 136)))
    with pytest.raises(ValueError, match="tokens in the prompts should be the same as the number of images"):
        processor(images=[image, image], text=prompt, facial_priors=np.zeros((2, 136)))


def test_pad_to_square_uses_clip_mean_colour(tiny):
    _, processor = tiny
    mean = tuple(int(round(c * 255)) for c in processor.image_processor.image_mean)
    padded = expand_to_square(Image.new("RGB", (40, 20), (255, 0, 0)), mean)
    assert padded.size == (40, 40)
    assert padded.getpixel((0, 0)) == mean and padded.getpixel((20, 20)) == (255, 0, 0)
    model, _ = tiny
    _, square = build_tiny_emola(pad_to_square=True)
    wide = Image.new("RGB", (56, 28), (255, 0, 0))
    prompt = "USER: <image>\nHi ASSISTANT:"
    plain = processor(images=wide, text=prompt, facial_priors=np.zeros((1, 136)), return_tensors="pt")
    padded_out = square(images=wide, text=prompt, facial_priors=np.zeros((1, 136)), return_tensors="pt")
    reference = processor.image_processor(expand_to_square(wide, mean), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(padded_out["pixel_values"], reference)
    assert not torch.allclose(plain["pixel_values"], padded_out["pixel_values"])


def test_round_trip_keeps_settings(tiny, tmp_path):
    _, processor = tiny
    processor.pad_to_square = True
    try:
        processor.save_pretrained(tmp_path)
    finally:
        processor.pad_to_square = False
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, EmolaProcessor)
    assert loaded.pad_to_square and loaded.use_facial_prior and loaded.num_additional_image_tokens == 1
    assert loaded.facial_prior_token_id == processor.facial_prior_token_id
    assert loaded.chat_template == processor.chat_template


def test_post_process_returns_clean_answers(tiny):
    _, processor = tiny
    ids = processor.tokenizer([" AU12 is present.</s>"], add_special_tokens=True)["input_ids"]
    assert processor.post_process_image_text_to_text(ids) == ["AU12 is present."]


class FixedPriors:
    """Stands in for a landmark detector: a deterministic prior per image (the mean RGB, tiled)."""

    dim = 136

    def __call__(self, images):
        return np.stack([np.resize(np.asarray(im.convert("RGB"), np.float32).mean((0, 1)) / 255, 136) for im in images])

    def to_dict(self):
        return {"backend": "fixed"}


def test_pipeline_image_text_to_text(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    pipe.processor.set_facial_prior_extractor(FixedPriors())
    image = Image.new("RGB", (40, 40), (120, 80, 60))
    prompt = processor.apply_chat_template([user_turn()], add_generation_prompt=True)
    out = pipe(images=image, text=prompt, generate_kwargs={"max_new_tokens": 5, "do_sample": False})
    # the same greedy continuation as calling generate by hand with the extractor's priors
    inputs = processor(images=image, text=prompt, facial_priors=FixedPriors()([image]), return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)[:, inputs["input_ids"].shape[1]:]
    expected = processor.post_process_image_text_to_text(ids)[0]
    assert expected, "five random tokens decode to some text"
    assert out[0]["generated_text"] == prompt + expected or out[0]["generated_text"].endswith(expected)
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    chat_out = pipe(text=chat, generate_kwargs={"max_new_tokens": 5, "do_sample": False}, return_full_text=False)
    assert chat_out[0]["generated_text"] == expected
