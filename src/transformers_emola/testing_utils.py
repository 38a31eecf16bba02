"""Tiny, fully offline EmoLA models for tests, docs, benchmarks and the demo.

Nothing here downloads: the tokenizer is a byte-level-free BPE trained on the fly on EmoLA's prompt vocabulary
(plus any texts the caller adds), and the model is a randomly initialised tiny CLIP + tiny Llama. `build_tiny_vlm`
builds tiny random *base* models of the other families (Qwen2.5-VL, Idefics3, Gemma 3, LLaVA) with their processors
and prompt formats, for `add_facial_prior` / `add_facial_prior_token`.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)

from .configuration_emola import EmolaConfig
from .modeling_emola import EmolaForConditionalGeneration
from .processing_emola import AU_QUESTION, EMOLA_SYSTEM_PROMPT, EMOTION_QUESTION, EmolaProcessor

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<facial_prior>"]
BASE_CORPUS = [EMOLA_SYSTEM_PROMPT, "USER: ASSISTANT:", AU_QUESTION, EMOTION_QUESTION]


def build_tiny_tokenizer(
    texts: Iterable[str] = (),
    vocab_size: int = 400,
    special_tokens: Iterable[str] = SPECIAL_TOKENS,
    extra_special_tokens: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """A Llama-like (SentencePiece-style, `<s>`-prefixed) BPE tokenizer trained on `texts` + EmoLA's prompts.

    `special_tokens` (ids in that order, from 0) and `extra_special_tokens` (named ones, such as `image_token`) let
    the tiny models of other families (`build_tiny_vlm`) use their own placeholders.
    """
    if extra_special_tokens is None:
        extra_special_tokens = {"image_token": "<image>", "facial_prior_token": "<facial_prior>"}
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in special_tokens],
        initial_alphabet=list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()-–/%\n "),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(BASE_CORPUS) + list(texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=extra_special_tokens,
        padding_side="left",
        model_max_length=4096,
    )


def build_tiny_emola(
    texts: Iterable[str] = (),
    vocab_size: int = 400,
    image_size: int = 28,
    patch_size: int = 14,
    vision_hidden_size: int = 32,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    facial_prior_dim: int = 136,
    facial_prior_backend: str = "face_alignment",
    use_facial_prior: bool = True,
    pad_to_square: bool = False,
    seed: int = 0,
) -> tuple[EmolaForConditionalGeneration, EmolaProcessor]:
    """A randomly initialised tiny EmoLA (CLIP + Llama) and its processor, built offline in well under a second.

    `texts` extend the tokenizer's training corpus (the demo passes the synthetic descriptions it will learn).
    """
    tokenizer = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = EmolaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        use_facial_prior=use_facial_prior,
        pad_to_square=pad_to_square,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=vision_hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = EmolaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        facial_prior_token_id=tokenizer.convert_tokens_to_ids("<facial_prior>"),
        image_seq_length=(image_size // patch_size) ** 2,
        facial_prior_dim=facial_prior_dim,
        facial_prior_backend=facial_prior_backend,
        use_facial_prior=use_facial_prior,
    )
    torch.manual_seed(seed)
    model = EmolaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor


# ---------------------------------------------------------------------------------------------- other base families
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
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


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
