"""A bounded LRU cache of query embeddings, keyed by (model key, text).

Searches repeat: the same question is asked again, a UI re-runs a query while paging. A query
vector depends only on the pinned model and the text, so it is computed once per process and
reused until it falls out of the least-recently-used window. The key carries everything
of the pin that decides the vector (``embedding.base.query_key``: not only its
``name@revision``, which two databases can pin differently) so two models never share an
entry; hit and miss counters are kept for the metrics endpoint
(:meth:`QueryEmbeddingCache.stats`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_ENTRIES = 2048

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CacheStats:
    """What the metrics helper exports: hits, misses, current size and capacity."""

    hits: int
    misses: int
    size: int
    max_entries: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class QueryEmbeddingCache:
    """Thread-safe LRU of query vectors; stored vectors are read-only copies."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._data: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, model_key: str, text: str) -> Vector | None:
        """The cached vector (marked most recently used), or None; counts a hit or a miss."""
        key = (model_key, text)
        with self._lock:
            vec = self._data.get(key)
            if vec is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vec

    def put(self, model_key: str, text: str, vector: Vector) -> Vector:
        """Store a read-only copy of a vector (returned), evicting beyond the bound."""
        frozen = np.array(vector, dtype=np.float32, copy=True)
        frozen.setflags(write=False)
        if self.max_entries == 0:
            return frozen
        with self._lock:
            self._data[(model_key, text)] = frozen
            self._data.move_to_end((model_key, text))
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return frozen

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = 0
            self.misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._data), self.max_entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


_QUERY_CACHE = QueryEmbeddingCache()


def query_cache() -> QueryEmbeddingCache:
    """The process-wide query cache (what ``Embedder.embed_query`` uses and metrics read)."""
    return _QUERY_CACHE
