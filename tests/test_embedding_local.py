"""The local embedder's own encode path against sentence-transformers' ``encode``."""

from __future__ import annotations

import numpy as np

from ragstore.embedding.local import SentenceTransformerEmbedder
from ragstore.embedding.registry import TRUNCATED_MODEL, load_embedder, resolve_spec

TEXTS = [
    "Tomatoes need full sun and deep watering.",
    "x",
    "A much longer passage about the repair of DNA double-strand breaks by homologous "
    "recombination, which needs a sister chromatid and so happens in S and G2 phases. " * 6,
    "Prune roses in late winter, just above an outward-facing bud.",
    "",
    "Beta-blockers lower mortality after myocardial infarction.",
]


def _local(name: str, batch_size: int = 4) -> SentenceTransformerEmbedder:
    embedder = load_embedder(resolve_spec(name), device="cpu", batch_size=batch_size)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    return embedder


def test_vectors_match_sentence_transformers_encode_in_the_callers_order() -> None:
    embedder = _local("all-MiniLM-L6-v2")
    ours = embedder.embed_texts(TEXTS)
    theirs = embedder.model.encode(
        TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True
    )
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # one text alone gets the vector it gets in a batch (padding does not leak in)
    np.testing.assert_allclose(embedder.embed_texts([TEXTS[2]])[0], ours[2], atol=1e-5)


def test_truncated_spec_keeps_the_first_dimensions_renormalised() -> None:
    full = _local("all-MiniLM-L6-v2").embed_texts(TEXTS)
    cut = _local(TRUNCATED_MODEL).embed_texts(TEXTS)
    expected = full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True)
    assert cut.shape == (len(TEXTS), 256)
    np.testing.assert_allclose(cut, expected, atol=1e-5)
