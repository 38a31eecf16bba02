"""Tiny, fully offline EmoLA models: `emola demo`, the CPU training recipe, the docs, tests and benchmarks use them.

Nothing here downloads: the tokenizer is a byte-level-free BPE trained on the fly on EmoLA's prompt vocabulary
(plus any texts the caller adds, e.g. the answers it will be trained on), and the model is a randomly initialised
tiny CLIP + tiny Llama. `from transformers_emola import build_tiny_emola`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from .configuration_emola import EmolaConfig
from .modeling_emola import EmolaForConditionalGeneration
from .faba import AU_QUESTION, EMOLA_SYSTEM_PROMPT, EMOTION_QUESTION
from .processing_emola import EmolaProcessor

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


def tiny_llama_settings(tokenizer, hidden_size: int, num_hidden_layers: int,
                        max_position_embeddings: int = 2048) -> dict:
    """The tiny Llama LM's settings (4 heads, 2 KV heads, MLP twice the width), shared by every tiny model here and
    `testing_utils.build_tiny_vlm`: vocabulary and special ids from `tokenizer`."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
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

    `texts` extend the tokenizer's training corpus (the demo passes the synthetic descriptions it will learn); the
    same arguments and seed give the same weights.

    Example:
    ```python
    >>> from transformers_emola import build_tiny_emola
    >>> model, processor = build_tiny_emola(texts=["AU12 - Lip Corner Puller."])
    >>> model.config.facial_prior_dim, processor.use_facial_prior, model.num_parameters() < 200_000
    (136, True, True)

    ```
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
    text_config = LlamaConfig(**tiny_llama_settings(tokenizer, hidden_size, num_hidden_layers))
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


__all__ = ["BASE_CORPUS", "SPECIAL_TOKENS", "build_tiny_emola", "build_tiny_tokenizer"]
