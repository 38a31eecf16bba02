"""The demo's claim at miniature size: a tiny EmoLA learns the emotion from its facial-prior token.

Real pieces — synthetic faces, the tiny model, the recipe's prior standardisation, the training collator and
optimizer groups — in a plain loop on one-sentence answers ("The face shows fear."), so that it takes seconds. The
same model trained on shuffled priors (every face carries another face's landmarks) stays near chance. The test
fails if the prior stops reaching the model or stops being readable (e.g. the standardisation is lost).
"""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_emola.data import load_faba_instruct
from transformers_emola.faba import EMOTION_QUESTION, VICUNA_V1_SYSTEM_PROMPT
from transformers_emola.synthetic import EMOTIONS, write_synthetic_faba
from transformers_emola.tiny import build_tiny_emola
from transformers_emola.training import (
    EmolaDataCollator,
    emola_parameter_groups,
    freeze_vision_tower,
    standardize_facial_priors,
)

STEPS, BATCH, LEARNING_RATE = 100, 32, 3e-3


def _answer(emotion: str) -> str:
    return f"The face shows {emotion.lower()}."


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """216 labelled synthetic emotion faces: 160 to train on (one-sentence answers), 56 held out."""
    root = tmp_path_factory.mktemp("faces")
    paths = write_synthetic_faba(root, num_train=1, num_eval=216, seed=0, image_size=28, tasks=("emotion",))
    rows = json.loads(paths["eval_emotion"].read_text())
    train = [{"id": row["id"], "image": row["image"], "landmark": row["landmark"], "conversations": [
        {"from": "human", "value": f"{EMOTION_QUESTION}\n<image>"}, {"from": "gpt", "value": _answer(row["label"])}]}
        for row in rows[:160]]
    return root, train, rows[160:]


def _shuffled(rows, seed):
    landmarks = [row["landmark"] for row in rows]
    random.Random(seed).shuffle(landmarks)
    return [dict(row, landmark=landmark) for row, landmark in zip(rows, landmarks)]


def _held_out_accuracy(faces, shuffle: bool) -> float:
    """Train on the priors (or shuffled ones), then read the emotion the model puts after "The face shows"."""
    torch.manual_seed(0)
    root, train, evaluation = faces
    if shuffle:
        train = _shuffled(train, 0)
    dataset = load_faba_instruct(train, image_root=root, split="train", system_prompt=VICUNA_V1_SYSTEM_PROMPT)
    # the tokenizer knows every text the model reads, so the prompt is a few dozen tokens, not spelt out
    texts = [_answer(emotion) for emotion in EMOTIONS] * 20 + [EMOTION_QUESTION, VICUNA_V1_SYSTEM_PROMPT] * 20
    # one layer: it learns to read the prior token within ~80 steps (two layers take ~200, docs/demo_and_ablation.md)
    model, processor = build_tiny_emola(texts=texts, vocab_size=300, image_size=28, hidden_size=64,
                                        num_hidden_layers=1, facial_prior_backend="synthetic", seed=0)
    standardize_facial_priors(model, dataset["facial_priors"])
    collator = EmolaDataCollator(processor)
    batches = [collator([dataset[i] for i in range(start, min(start + BATCH, len(dataset)))])
               for start in range(0, len(dataset), BATCH)]
    model.train()
    freeze_vision_tower(model)
    optimizer = torch.optim.AdamW(emola_parameter_groups(model, learning_rate=LEARNING_RATE), lr=LEARNING_RATE,
                                  weight_decay=0.0)
    for step in range(STEPS):
        model(**batches[step % len(batches)]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    tokenizer = processor.tokenizer
    prefix = len(tokenizer(" The face shows", add_special_tokens=False)["input_ids"])
    first_tokens = [tokenizer(" " + _answer(emotion), add_special_tokens=False)["input_ids"][prefix]
                    for emotion in EMOTIONS]
    assert len(set(first_tokens)) == len(EMOTIONS)  # one token tells the seven answers apart
    messages = [{"role": "system", "content": VICUNA_V1_SYSTEM_PROMPT},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": EMOTION_QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True) + " The face shows"
    images = [Image.open(root / row["image"]).convert("RGB") for row in evaluation]
    priors = np.stack([np.load(root / row["landmark"]) for row in evaluation])
    inputs = processor(images=images, text=[prompt] * len(images), facial_priors=priors, padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        predicted = model(**inputs).logits[:, -1, first_tokens].argmax(-1)
    labels = torch.tensor([EMOTIONS.index(row["label"]) for row in evaluation])
    return float((predicted == labels).float().mean())


def test_tiny_emola_reads_the_emotion_from_the_prior_and_not_from_a_shuffled_one(faces):
    prior = _held_out_accuracy(faces, shuffle=False)
    shuffled = _held_out_accuracy(faces, shuffle=True)
    # chance is 1/7 = 0.14; the landmarks carry the answer (a linear probe on them gets ~0.95)
    assert prior >= 0.6, (prior, shuffled)
    assert prior - shuffled >= 0.3, (prior, shuffled)
