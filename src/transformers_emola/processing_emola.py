"""EmoLA processor: LLaVA's processor plus the `<facial_prior>` placeholder, the priors and the Vicuna-v1 template."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.models.llava.processing_llava import LlavaProcessor

from .faba import EMOLA_SYSTEM_PROMPT
from .facial_prior.priors import as_prior_array

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


class EmolaProcessor(LlavaProcessor):
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
        self.facial_prior_token = facial_prior_token
        self.use_facial_prior = use_facial_prior
        self.pad_to_square = pad_to_square
        self._facial_prior_extractor = None
        if facial_prior_extractor is not None and not isinstance(facial_prior_extractor, dict):
            self._facial_prior_extractor = facial_prior_extractor
            facial_prior_extractor = facial_prior_extractor.to_dict()
        self.facial_prior_extractor = facial_prior_extractor
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else EMOLA_CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )
        self.facial_prior_token_id = tokenizer.convert_tokens_to_ids(facial_prior_token)
        if use_facial_prior and self.facial_prior_token_id in (None, tokenizer.unk_token_id):
            raise ValueError(
                f"The tokenizer has no {facial_prior_token!r} token; add it with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{facial_prior_token!r}]}})"
            )

    # ---- facial priors -------------------------------------------------------------------------------------------
    def get_facial_prior_extractor(self):
        """The extractor used when `facial_priors` is not given, built once from the saved configuration."""
        if self._facial_prior_extractor is None and self.facial_prior_extractor is not None:
            from .facial_prior.extractor import FacialPriorExtractor

            self._facial_prior_extractor = FacialPriorExtractor.from_dict(self.facial_prior_extractor)
        return self._facial_prior_extractor

    def set_facial_prior_extractor(self, extractor) -> None:
        """Use `extractor` (a `FacialPriorExtractor`) for images given without priors, and save its settings."""
        self._facial_prior_extractor = extractor
        self.facial_prior_extractor = extractor.to_dict() if extractor is not None else None

    def _prepare_facial_priors(self, images: list, facial_priors) -> torch.Tensor:
        if facial_priors is None:
            extractor = self.get_facial_prior_extractor()
            if extractor is None:
                raise ValueError(
                    "facial_priors were not given and this processor has no facial_prior_extractor; pass "
                    "facial_priors=(num_images, dim) or configure one with processor.set_facial_prior_extractor()"
                )
            facial_priors = extractor(images)
        return torch.from_numpy(as_prior_array(facial_priors, num_images=len(images)))

    # ---- text and images -----------------------------------------------------------------------------------------
    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        image_tokens = super().replace_image_token(image_inputs, image_idx, **kwargs)
        return image_tokens + (self.facial_prior_token if self.use_facial_prior else "")

    def _pad_images(self, images) -> list:
        mean = self.image_processor.image_mean
        background = tuple(int(round(channel * 255)) for channel in mean)
        padded = []
        for image in images:
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image))
            padded.append(expand_to_square(image.convert("RGB"), background))
        return padded

    def __call__(self, images=None, text=None, videos=None, audio=None, facial_priors=None, **kwargs) -> BatchFeature:
        r"""
        As `LlavaProcessor.__call__`, plus:

        facial_priors (`np.ndarray`, `torch.Tensor` or nested lists of shape `(num_images, dim)`, *optional*):
            One landmark vector per image. When omitted and the processor uses the prior, they are extracted from
            the images with the configured `FacialPriorExtractor`.
        """
        flat_images = None
        if images is not None:
            images = self.image_processor.fetch_images(images)
            flat_images = make_flat_list_of_images(images)
            if self.pad_to_square:
                flat_images = images = self._pad_images(flat_images)
        if facial_priors is not None and not self.use_facial_prior:
            raise ValueError("facial_priors were given to a processor with use_facial_prior=False")
        priors = None
        if self.use_facial_prior and flat_images is not None:
            priors = self._prepare_facial_priors(flat_images, facial_priors)
        elif facial_priors is not None:
            raise ValueError("facial_priors were given without images; pass one prior per image")
        outputs = super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)
        if priors is not None:
            return_tensors = kwargs.get("return_tensors")
            if return_tensors == "pt":
                outputs["facial_priors"] = priors
            elif return_tensors == "np":
                outputs["facial_priors"] = priors.numpy()
            else:
                outputs["facial_priors"] = priors.tolist()
        return outputs

    @property
    def model_input_names(self) -> list[str]:
        names = list(super().model_input_names)
        return names + (["facial_priors"] if self.use_facial_prior else [])

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs) -> list[str]:
        """Decode generated ids to clean answers (special tokens and surrounding whitespace removed)."""
        texts = self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)
        return [text.strip() for text in texts]

    def parse_affect(self, text: str, task: str = "both", au_set: str = "faba"):
        """AUs (number, name, supporting sentence), emotion and parser flags of a generated answer, read with the
        strict REGE parsers (see `transformers_emola.metrics.parse_affect`)."""
        from .metrics.parsing import parse_affect

        return parse_affect(text, task=task, au_set=au_set)

    def to_dict(self) -> dict[str, Any]:
        # The live extractor (model weights, detectors) is rebuilt from its settings, never serialised.
        extractor = self.__dict__.pop("_facial_prior_extractor", None)
        try:
            return super().to_dict()
        finally:
            self._facial_prior_extractor = extractor


__all__ = ["EmolaProcessor", "EMOLA_CHAT_TEMPLATE"]
