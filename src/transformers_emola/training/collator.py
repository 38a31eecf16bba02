"""`EmolaDataCollator`: rows of `load_faba_instruct` -> EmoLA training batches, the loss on the answers only.

TRL's vision collator drops extra columns, so EmoLA brings its own: it passes `facial_priors` to the processor and
masks every token but the assistant answers (the `{% generation %}` markers of EmoLA's chat template).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..facial_prior.priors import as_prior_array
from ..processing_emola import EmolaProcessor

__all__ = ["EmolaDataCollator", "IGNORE_INDEX"]

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


@dataclass
class EmolaDataCollator:
    r"""
    Turns rows of `load_faba_instruct` (`images`, `messages`, `facial_priors`) into EmoLA training batches.

    The chat template renders each conversation; the processor expands `<image>` into the image tokens plus the
    `<facial_prior>` token and preprocesses the images; labels are the input ids with -100 everywhere except the
    assistant answers and their `</s>` (from the template's `{% generation %}` markers), so image, prior, system
    and question tokens carry no loss, as in LLaVA's `preprocess_v1`. Padding goes right.

    Args:
        processor (`EmolaProcessor`): the model's processor (its `pad_to_square` applies).
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

    processor: EmolaProcessor
    max_length: int | None = None
    assistant_only_loss: bool = True
    pad_to_multiple_of: int | None = None

    def _images(self, example: dict) -> list:
        images = example.get("images")
        if images is None and example.get("image") is not None:
            images = [example["image"]]
        return list(images or [])

    def _priors(self, examples: list[dict], images: list[list]) -> torch.Tensor | None:
        if not self.processor.use_facial_prior:
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
        batch = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=self.assistant_only_loss,
            processor_kwargs=processor_kwargs,
        )
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
        if self.processor.use_facial_prior:
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
