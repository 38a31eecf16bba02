"""Old home of the tiny offline EmoLA builders, kept as an alias: use `transformers_emola.build_tiny_emola`
(`transformers_emola.tiny`). `modeling_emola`'s doctest and `tests/test_modeling_emola.py` still import from here."""

from .tiny import BASE_CORPUS, SPECIAL_TOKENS, build_tiny_emola, build_tiny_tokenizer

__all__ = ["BASE_CORPUS", "SPECIAL_TOKENS", "build_tiny_emola", "build_tiny_tokenizer"]
