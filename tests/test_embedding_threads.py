"""Token counting on ingest's reader thread must not disturb encoding on the main thread."""

from __future__ import annotations

import threading

import numpy as np

from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec


def _embedder() -> Embedder:
    return load_embedder(resolve_spec("all-MiniLM-L6-v2"))


def test_counting_tokens_while_encoding_gives_the_same_vectors() -> None:
    embedder = _embedder()
    texts = [("word " * n).strip() for n in range(1, 120)]
    expected = embedder.embed(texts)
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            embedder.count_tokens(texts[:40])
            embedder.token_spans(texts[-1])

    counter = threading.Thread(target=count)
    counter.start()
    try:
        results = [embedder.embed(texts) for _ in range(4)]
    finally:
        stop.set()
        counter.join()
    for got in results:
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_embed_threads_setting_sets_the_models_threads_and_keeps_its_vectors() -> None:
    """``RAGSTORE_EMBED_THREADS`` sets torch's intra-op threads when a runtime loads a local
    model; the vectors do not depend on it."""
    import torch

    from ragstore.config import Settings
    from ragstore.runtime import Runtime

    default = torch.get_num_threads()
    texts = [("word " * n).strip() for n in range(1, 30)]
    expected = _embedder().embed(texts)
    try:
        with Runtime(Settings(embed_threads=1)) as rt:
            embedder = rt.embedder(resolve_spec("all-MiniLM-L6-v2"))
            assert torch.get_num_threads() == 1
            np.testing.assert_allclose(embedder.embed(texts), expected, atol=1e-5)
    finally:
        torch.set_num_threads(default)
    with Runtime(Settings()) as rt:  # 0, the default, leaves torch's setting alone
        rt.embedder(resolve_spec("all-MiniLM-L6-v2"))
        assert torch.get_num_threads() == default
