"""The embedder base class: batching happens here once; providers implement ``embed_batch``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ragstore.models import ModelSpec

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    """Turns texts into vectors for one pinned :class:`ModelSpec`.

    Subclasses implement :meth:`embed_batch` (one call to the model) and the tokenizer
    hooks the chunker needs so that no chunk exceeds what the model reads.
    """

    spec: ModelSpec
    batch_size: int = 64

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        """Embed one batch; rows are L2-normalised when the spec says so."""

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed documents' texts (passages), with the spec's ``passage_prefix`` if any.

        Models such as e5 are trained with ``passage: `` / ``query: `` prefixes; the pin
        records them (``options``) so every process embeds the same way.
        """
        prefix = str(self.spec.options.get("passage_prefix", ""))
        return self.embed_texts([prefix + t for t in texts] if prefix else texts)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts exactly as given, in batches of ``batch_size``."""
        if not texts:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        parts = [
            self.embed_batch(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """One query's vector through the process-wide LRU cache keyed by (model, text).

        Searches call this instead of :meth:`embed` so a repeated query costs a dict lookup;
        the returned array is read-only because it is shared.
        """
        from ragstore.embedding.cache import query_cache

        cache = query_cache()
        hit = cache.get(self.spec.key, text)
        if hit is not None:
            return hit
        prefix = str(self.spec.options.get("query_prefix", ""))
        return cache.put(self.spec.key, text, self.embed_texts([prefix + text])[0])

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model, special tokens included."""

    @abstractmethod
    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each content token of ``text`` (no special tokens)."""

    @property
    def special_tokens(self) -> int:
        """Tokens the model adds around every text (e.g. [CLS] and [SEP])."""
        return 2


def tokenizer_spans(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    """Character spans of ``text``'s tokens under a Hugging Face tokenizer (no special
    tokens, no truncation): what chunk splitting cuts at, for local and HTTP models alike."""
    enc = tokenizer(
        text,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
