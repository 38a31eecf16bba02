"""Test helpers: tiny random *base* models of the families `add_facial_prior` supports, built offline.

`build_tiny_vlm(family)` gives a tiny Qwen2.5-VL, Idefics3, Gemma 3 or LLaVA with its processor and a chat template
in that family's prompt format, for `add_facial_prior` / `add_facial_prior_token` tests, docs and examples. The tiny
EmoLA builders live in `transformers_emola.tiny` (re-exported here for older imports).
"""

from __future__ import annotations

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)

from .tiny import BASE_CORPUS, SPECIAL_TOKENS, build_tiny_emola, build_tiny_tokenizer, tiny_llama_settings


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without its video processor, which needs torchvision (not a dependency here).

    Images are processed exactly as by `Qwen2_5_VLProcessor`; `EmolaQwen2_5_VLProcessor` carries no video
    processor either.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)


def _chat_template(turn: str, end: str, image: str, generation_prompt: str, assistant: str = "assistant") -> str:
    """A minimal template in a family's format: `turn` opens a turn (with `{role}`), `image` stands for an image."""
    role = f"('{assistant}' if message['role'] == 'assistant' else message['role'])"
    opening = "{{- '" + turn.replace("{role}", "' + " + role + " + '") + "' -}}"
    return (
        "{%- for message in messages -%}" + opening
        + "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
        "{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}{{- '" + image + "' -}}"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}{{- '" + end + "' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + generation_prompt + "' -}}{%- endif -%}"
    )


_BASE_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
TINY_VLM_FAMILIES = ("llava", "qwen2_5_vl", "idefics3", "gemma3")


def _tiny_llama(tokenizer, hidden_size: int, num_hidden_layers: int) -> dict:
    return tiny_llama_settings(tokenizer, hidden_size, num_hidden_layers, max_position_embeddings=512)


def build_tiny_vlm(family: str, hidden_size: int = 32, num_hidden_layers: int = 2, seed: int = 0):
    """A randomly initialised tiny base model of `family` and its processor, in that family's prompt format.

    `family` is one of `TINY_VLM_FAMILIES`. The processor has a chat template of the family's layout (Qwen's
    `<|vision_start|><|image_pad|><|vision_end|>`, Idefics3's `User:<image>`, Gemma 3's `<start_of_image>`, LLaVA's
    `USER: <image>`) and no `<facial_prior>` token yet. Each image becomes 4 visual tokens (56 px for Qwen2.5-VL,
    Idefics3 and Gemma 3, 28 px for LLaVA; Qwen2.5-VL gives a non-square image 6).
    """
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, patch_size=14)
    if family == "llava":
        tokenizer = build_tiny_tokenizer(
            special_tokens=[*_BASE_SPECIAL_TOKENS, "<image>"], extra_special_tokens={"image_token": "<image>"}
        )
        template = _chat_template("{role}: ", " ", "<image>\\n", "ASSISTANT:")
        template = template.replace("message['role']", "message['role'].upper()")
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=template)
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**vision, image_size=28, projection_dim=32),
            text_config=LlamaConfig(**_tiny_llama(tokenizer, hidden_size, num_hidden_layers)),
            image_token_index=processor.image_token_id,
            image_seq_length=4,
        )
        model_class = LlavaForConditionalGeneration
    elif family == "qwen2_5_vl":
        tokens = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
        tokenizer = build_tiny_tokenizer(special_tokens=[*_BASE_SPECIAL_TOKENS, *tokens], extra_special_tokens={})
        image = "<|vision_start|><|image_pad|><|vision_end|>"
        template = _chat_template("<|im_start|>{role}\\n", "<|im_end|>\\n", image, "<|im_start|>assistant\\n")
        image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
        processor = ImageOnlyQwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                                 chat_template=template)
        text = _tiny_llama(tokenizer, hidden_size, num_hidden_layers)
        head_dim = hidden_size // text["num_attention_heads"]
        sections = [head_dim // 8, head_dim // 8, head_dim // 2 - 2 * (head_dim // 8)]  # temporal, height, width
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": sections, "rope_theta": 10000.0}
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=hidden_size,
                               window_size=28, fullatt_block_indexes=[0]),
            image_token_id=processor.image_token_id,
            video_token_id=processor.video_token_id,
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        )
        model_class = Qwen2_5_VLForConditionalGeneration
    elif family == "idefics3":
        tokens = ["<|im_start|>", "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
        tokenizer = build_tiny_tokenizer(special_tokens=[*_BASE_SPECIAL_TOKENS, *tokens], extra_special_tokens={})
        template = _chat_template("<|im_start|>{role}:", "<end_of_utterance>\\n", "<image>", "<|im_start|>Assistant:",
                                  assistant="Assistant").replace("message['role']", "message['role'].capitalize()")
        image_processor = Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": 56}, max_image_size={"longest_edge": 56}
        )
        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                      chat_template=template)
        config = Idefics3Config(
            text_config=dict(model_type="llama", **_tiny_llama(tokenizer, hidden_size, num_hidden_layers)),
            vision_config=dict(vision, image_size=56),
            scale_factor=2,
            image_token_id=processor.image_token_id,
        )
        model_class = Idefics3ForConditionalGeneration
    elif family == "gemma3":
        tokens = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
        named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
        tokenizer = build_tiny_tokenizer(special_tokens=[*_BASE_SPECIAL_TOKENS, *tokens], extra_special_tokens=named)
        template = _chat_template("<start_of_turn>{role}\\n", "<end_of_turn>\\n", "<start_of_image>",
                                  "<start_of_turn>model\\n", assistant="model")
        image_processor = Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
        processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
                                    chat_template=template)
        text = _tiny_llama(tokenizer, hidden_size, num_hidden_layers)
        config = Gemma3Config(
            text_config=dict(text, head_dim=hidden_size // text["num_attention_heads"], sliding_window=64),
            vision_config=dict(vision, image_size=56),
            mm_tokens_per_image=4,
            image_token_index=tokenizer.image_token_id,
            boi_token_index=tokenizer.boi_token_id,
            eoi_token_index=tokenizer.eoi_token_id,
        )
        model_class = Gemma3ForConditionalGeneration
    else:
        raise ValueError(f"family must be one of {TINY_VLM_FAMILIES}, got {family!r}")
    torch.manual_seed(seed)
    model = model_class(config).eval()
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, name, getattr(tokenizer, name))
    return model, processor


__all__ = [
    "BASE_CORPUS",
    "SPECIAL_TOKENS",
    "TINY_VLM_FAMILIES",
    "ImageOnlyQwen2_5_VLProcessor",
    "build_tiny_emola",
    "build_tiny_tokenizer",
    "build_tiny_vlm",
]
