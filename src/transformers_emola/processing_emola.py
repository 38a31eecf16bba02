# Copyright 2024 The transformers-emola authors. Licensed under the Apache License, Version 2.0.
"""EmoLA processor: LLaVA's processor plus the facial-prior delta (`processing_facial_prior.py`), EmoLA's
pad-to-square preprocessing and the Vicuna-v1 template."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.models.llava.processing_llava import LlavaProcessor

from .faba import EMOLA_SYSTEM_PROMPT
from .processing_facial_prior import FacialPriorProcessorMixin

# Vicuna v1 (LLaVA's conv_vicuna_v1, separators " " and "</s>"): "{system} USER: <image>\n{q} ASSISTANT: {a}</s>".
# Images go first in a user turn, as LLaVA's preprocess_multimodal moves them; {% generation %} marks the tokens
# that TRL's assistant-only loss trains on: the space after "ASSISTANT:", the answer and its "</s>" (a tokenizer that
# splits the space off as its own token must still learn to emit it).
EMOLA_CHAT_TEMPLATE = (
    '{%- set system = "' + EMOLA_SYSTEM_PROMPT + '" -%}'
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set system = messages[0]['content'] -%}"
    "{%- else -%}{%- set system = messages[0]['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join(' ') -%}{%- endif -%}"
    "{%- set messages = messages[1:] -%}{%- endif -%}"
    "{{- system }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- ' USER: ' if loop.first else 'USER: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '<image>\n' -}}{%- endfor -%}"
    "{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -}}"
    "{%- endif -%}{{- ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT:' -}}"
    "{%- generation -%}{{- ' ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{{- message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join(' ') -}}{%- endif -%}{{- '</s>' -}}"
    "{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def expand_to_square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad to a centred square with `background`, as EmoLA's training (`--image_aspect_ratio pad`) does."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class EmolaProcessor(FacialPriorProcessorMixin, LlavaProcessor):
    r"""
    Turns images and chat text into EmoLA inputs: `input_ids` in which every `<image>` becomes the image tokens
    followed by one `<facial_prior>` token, `attention_mask`, `pixel_values` and `facial_priors`.

    Args:
        image_processor: a CLIP image processor (336 px for EmoLA-7B).
        tokenizer: the Llama/Vicuna tokenizer, with `<image>` and `<facial_prior>` tokens.
        patch_size (`int`, defaults to 14), vision_feature_select_strategy (`str`, defaults to `"default"`),
        num_additional_image_tokens (`int`, defaults to 1): how many image tokens an image occupies, as in LLaVA.
        facial_prior_token (`str`, defaults to `"<facial_prior>"`): the prior placeholder.
        use_facial_prior (`bool`, defaults to `True`): `False` gives LLaVA-1.5 inputs (no placeholder, no priors).
        pad_to_square (`bool`, defaults to `False`): pad images to a square with the CLIP mean colour first (EmoLA
            training does; its evaluation does not).
        facial_prior_extractor (`dict` or `FacialPriorExtractor`, *optional*): how to compute priors when the
            caller gives none; saved with the processor as a dict (backend and options).

    Example:

    ```python
    >>> import torch
    >>> from PIL import Image
    >>> from transformers_emola import build_tiny_emola
    >>> model, processor = build_tiny_emola()
    >>> messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What AUs are conveyed by this face?"}]}]
    >>> prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    >>> prompt.endswith("USER: <image>\nWhat AUs are conveyed by this face? ASSISTANT:")
    True
    >>> inputs = processor(images=Image.new("RGB", (40, 30)), text=prompt, facial_priors=torch.zeros(1, 136), return_tensors="pt")
    >>> sorted(inputs.keys())
    ['attention_mask', 'facial_priors', 'input_ids', 'pixel_values']

    ```"""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=None,
        image_token="<image>",
        num_additional_image_tokens=1,
        facial_prior_token="<facial_prior>",
        use_facial_prior=True,
        pad_to_square=False,
        facial_prior_extractor=None,
        **kwargs,
    ):
        self.pad_to_square = pad_to_square
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else EMOLA_CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            facial_prior_token=facial_prior_token,
            use_facial_prior=use_facial_prior,
            facial_prior_extractor=facial_prior_extractor,
            **kwargs,
        )

    def _pad_images(self, images) -> list:
        mean = self.image_processor.image_mean
        background = tuple(int(round(channel * 255)) for channel in mean)
        padded = []
        for image in images:
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image))
            padded.append(expand_to_square(image.convert("RGB"), background))
        return padded

    def __call__(self, images=None, text=None, *args, **kwargs) -> BatchFeature:
        r"""
        As `LlavaProcessor.__call__`, plus `facial_priors` (see `FacialPriorProcessorMixin.__call__`); with
        `pad_to_square` the images are padded first, and the priors are computed on the padded images.
        """
        if images is not None and self.pad_to_square:
            images = self._pad_images(make_flat_list_of_images(self.image_processor.fetch_images(images)))
        return super().__call__(images, text, *args, **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs) -> list[str]:
        """Decode generated ids to clean answers (special tokens and surrounding whitespace removed)."""
        texts = self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.strip() for text in texts]


__all__ = ["EmolaProcessor", "EMOLA_CHAT_TEMPLATE"]
