"""What a model reads for a stored chunk, rebuilt from the row (the context is not stored).

The chunker prefixes each chunk's text with its section path, cut from the top until it
fits a quarter of the model's token budget (``chunking.chunker._context``). A backfill
rebuilds exactly that text for the target model; a test checks the two rules agree by
comparing the rebuilt text's hash with the ``content_hash`` ingest stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragstore.chunking import TokenCounter


class ContextRule:
    """Section-path contexts for one model, cached per path (documents share paths)."""

    def __init__(self, counter: TokenCounter, max_tokens: int) -> None:
        self.counter = counter
        self.budget = (max_tokens - counter.special_tokens) // 4
        self._cache: dict[tuple[str, ...], str] = {}

    def context(self, section_path: tuple[str, ...]) -> str:
        if section_path not in self._cache:
            parts = list(section_path)
            while True:
                text = " > ".join(parts)
                tokens = (self.counter.count_tokens([text])[0] - self.counter.special_tokens
                          if text else 0)
                if tokens <= self.budget or len(parts) <= 1:
                    break
                parts.pop(0)
            self._cache[section_path] = text if tokens <= self.budget else ""
        return self._cache[section_path]

    def embed_text(self, text: str, section_path: Sequence[str]) -> str:
        ctx = self.context(tuple(section_path))
        return f"{ctx}\n{text}" if ctx else text
