"""`EmolaDataCollator`: rows of `load_faba_instruct` -> EmoLA training batches, the loss on the answers only.

TRL's vision collator drops extra columns, so EmoLA brings its own: it passes `facial_priors` to the processor and
masks every token but the assistant answers. EmoLA's LLaVA template marks the answers with `{% generation %}`; the
official Qwen2.5-VL, SmolVLM and Gemma 3 templates do not, so for them the answers are found by rendering each
conversation's prefixes (`answer_spans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from trl.chat_template_utils import has_generation_markers

from ..facial_prior.priors import as_prior_array

__all__ = ["EmolaDataCollator", "IGNORE_INDEX", "answer_spans"]

IGNORE_INDEX = -100


def _clean_messages(messages: list[dict]) -> list[dict]:
    """Drop the None fields that Arrow adds to typed content (an image item has `text=None`)."""
    cleaned = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in item.items() if v is not None} for item in content]
        cleaned.append({"role": message["role"], "content": content})
    return cleaned


def answer_spans(processor, messages: list[dict]) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in `processor.apply_chat_template(messages)`, for chat templates without
    `{% generation %}` markers.

    Each assistant turn's span is what the template adds after the generation prompt: rendering the messages before
    it with `add_generation_prompt=True` gives where the span starts, rendering through it where it ends. So the
    span holds the answer and the turn's end (`<|im_end|>\\n`, `<end_of_utterance>\\n`, `<end_of_turn>\\n`), which the
    model must learn to emit to stop: the tokens TRL's marked training variants of the official templates select.
    A template that renders earlier turns differently once more follow (not prefix-preserving) is refused.
    """
    def render(part, **kwargs):
        return processor.apply_chat_template(part, tokenize=False, **kwargs)

    full = render(messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:index], add_generation_prompt=True) if index else ""
        through = render(messages[: index + 1])
        if not (through.startswith(prompt) and full.startswith(through)):
            raise ValueError(
                f"The chat template of {type(processor).__name__} does not render a conversation as the prefix of its "
                f"continuation (assistant turn {index}), so the answer tokens cannot be told from the prompt; add "
                "{% generation %}...{% endgeneration %} markers around the assistant turns, or train with "
                "assistant_only_loss=False"
            )
        spans.append((len(prompt), len(through)))
    return spans


@dataclass
class EmolaDataCollator:
    r"""
    Turns rows of `load_faba_instruct` (`images`, `messages`, `facial_priors`) into EmoLA training batches.

    The chat template renders each conversation; the processor expands each image into its visual tokens plus the
    `<facial_prior>` token and preprocesses the images; labels are the input ids with -100 everywhere except the
    assistant answers and the end of their turns (`</s>` for EmoLA's LLaVA template), so image, prior, system and
    question tokens carry no loss, as in LLaVA's `preprocess_v1`. The answers are the template's `{% generation %}`
    blocks where it has them, else the spans `answer_spans` finds by rendering (any family's official template).
    Padding goes right.

    Args:
        processor: the model's processor, an EmoLA processor of any family (LLaVA's `pad_to_square` applies), or a
            base processor for the no-prior baseline.
        max_length (`int`, *optional*): longer samples are cut at the end; a cut through the image tokens raises.
        assistant_only_loss (`bool`, defaults to `True`): False trains on every text token (image and prior tokens
            are never trained on).
        pad_to_multiple_of (`int`, *optional*): pad the sequence length to a multiple of this.

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers_emola import build_tiny_emola
    >>> from transformers_emola.training import EmolaDataCollator
    >>> model, processor = build_tiny_emola(texts=["The face shows AU12."])
    >>> row = {"images": [Image.new("RGB", (32, 32))], "facial_priors": [0.0] * 136, "messages": [
    ...     {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What AUs?"}]},
    ...     {"role": "assistant", "content": [{"type": "text", "text": "The face shows AU12."}]}]}
    >>> batch = EmolaDataCollator(processor)([row])
    >>> processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    'The face shows AU12.</s>'

    ```"""

    processor: Any
    max_length: int | None = None
    assistant_only_loss: bool = True
    pad_to_multiple_of: int | None = None

    def _images(self, example: dict) -> list:
        images = example.get("images")
        if images is None and example.get("image") is not None:
            images = [example["image"]]
        return list(images or [])

    @property
    def _uses_prior(self) -> bool:
        return getattr(self.processor, "use_facial_prior", False)

    def _priors(self, examples: list[dict], images: list[list]) -> torch.Tensor | None:
        if not self._uses_prior:
            return None  # the LLaVA baseline ignores any prior column
        if any(example.get("facial_priors") is None for example in examples):
            return None  # the processor extracts them with its facial_prior_extractor, or explains what is missing
        rows = [as_prior_array(example["facial_priors"], num_images=len(example_images),
                               name=f"example {example.get('id', '?')}")
                for example, example_images in zip(examples, images)]
        return torch.from_numpy(np.concatenate(rows)) if rows else None

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("EmolaDataCollator got an empty batch")
        if "messages" not in examples[0]:
            raise KeyError(f"EmolaDataCollator needs a 'messages' column (conversational data), got "
                           f"{sorted(examples[0])}")
        images = [self._images(example) for example in examples]
        messages = [_clean_messages(example["messages"]) for example in examples]
        processor_kwargs: dict[str, Any] = {"padding": True, "padding_side": "right"}
        if self.pad_to_multiple_of is not None:
            processor_kwargs["pad_to_multiple_of"] = self.pad_to_multiple_of
        if any(images):
            processor_kwargs["images"] = images
        priors = self._priors(examples, images)
        if priors is not None:
            processor_kwargs["facial_priors"] = priors
        marked = has_generation_markers(self.processor.chat_template)
        spans = None
        if self.assistant_only_loss and not marked:
            spans = [answer_spans(self.processor, conversation) for conversation in messages]
            # what the processor needs to map character spans to tokens, as for the template's own markers
            processor_kwargs.update(return_offsets_mapping=True, return_text_replacement_offsets=True)
        batch = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=self.assistant_only_loss and marked,
            processor_kwargs=processor_kwargs,
        )
        if spans is not None:
            # The step `apply_chat_template` runs on the markers' spans: shift past expanded images, mark the tokens
            # (on lists: comparing tensor elements one by one is 100x slower).
            batch["offset_mapping"] = batch["offset_mapping"].tolist()
            batch = self.processor._adjust_assistant_masks_indices(batch, spans)
            batch["assistant_masks"] = torch.tensor(batch["assistant_masks"])
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        if self.assistant_only_loss:
            labels[batch.pop("assistant_masks") == 0] = IGNORE_INDEX
        for token_id in self._placeholder_ids():
            labels[batch["input_ids"] == token_id] = IGNORE_INDEX
        batch["labels"] = labels
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            self._truncate(batch)
        return dict(batch)

    def _placeholder_ids(self) -> list[int]:
        # The ids of the image tokens in the expanded text (Gemma 3's differ from the placeholder users write).
        ids = [i for i in getattr(self.processor, "image_token_ids", [self.processor.image_token_id]) if i is not None]
        if self._uses_prior:
            ids.append(self.processor.facial_prior_token_id)
        return ids

    def _truncate(self, batch) -> None:
        before = [(batch["input_ids"] == token_id).sum().item() for token_id in self._placeholder_ids()]
        for key in ("input_ids", "attention_mask", "labels"):
            batch[key] = batch[key][:, : self.max_length]
        after = [(batch["input_ids"] == token_id).sum().item() for token_id in self._placeholder_ids()]
        if after != before:
            raise ValueError(f"max_length={self.max_length} cuts through the image tokens of a sample; raise "
                             "max_length (EmoLA-7B needs 577 image+prior tokens plus the prompt)")
