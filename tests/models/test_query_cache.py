"""The query-embedding cache: bounded, least recently used out first, keyed by model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ragstore.embedding.cache import QueryEmbeddingCache, query_cache
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, load_embedder, resolve_spec


def test_cache_evicts_the_least_recently_used_entry() -> None:
    cache = QueryEmbeddingCache(max_entries=2)
    v = np.ones(3, dtype=np.float32)
    cache.put("m@1", "a", v)
    cache.put("m@1", "b", v * 2)
    assert cache.get("m@1", "a") is not None  # a is now the most recent
    cache.put("m@1", "c", v * 3)
    assert cache.get("m@1", "b") is None
    assert len(cache) == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.max_entries) == (1, 1, 2, 2)
    assert stats.hit_ratio == 0.5


def test_cached_vectors_are_read_only_copies() -> None:
    cache = QueryEmbeddingCache()
    v = np.ones(3, dtype=np.float32)
    stored = cache.put("m@1", "a", v)
    v[0] = 5
    assert stored[0] == 1.0
    with pytest.raises(ValueError):
        stored[0] = 2


def test_repeated_queries_are_embedded_once_per_model() -> None:
    full = load_embedder(resolve_spec(DEFAULT_MODEL))
    short = load_embedder(resolve_spec(TRUNCATED_MODEL))
    cache = query_cache()
    cache.clear()
    first = full.embed_query("how do I prune roses?")
    again = full.embed_query("how do I prune roses?")
    other = short.embed_query("how do I prune roses?")
    assert again is first, "the second ask is answered from the cache"
    assert other.shape == (256,), "another model never shares an entry"
    np.testing.assert_allclose(first, full.embed(["how do I prune roses?"])[0], atol=1e-6)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 2, 2)


def test_pinned_prefixes_go_before_queries_and_passages() -> None:
    base = resolve_spec(DEFAULT_MODEL)
    e5_like = replace(
        base,
        name="minilm-prefixed",
        options={**base.options, "query_prefix": "query: ", "passage_prefix": "passage: "},
    )
    embedder = load_embedder(e5_like)
    plain = load_embedder(base)
    np.testing.assert_allclose(
        embedder.embed(["roses"])[0], plain.embed(["passage: roses"])[0], atol=1e-6
    )
    np.testing.assert_allclose(
        embedder.embed_query("roses"), plain.embed(["query: roses"])[0], atol=1e-6
    )
