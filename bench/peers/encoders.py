"""What encodes the chunk texts and the queries in a run (``--encoder``), the same for all.

- ``model`` (default): each system runs all-MiniLM-L6-v2 itself, in its own process,
  through its own embedding interface (as before; the model is most of an ingest).
- ``instant``: :mod:`bench.instant_embedder`, one OpenAI-compatible server on 127.0.0.1
  started by the runner, answers every system, documents and queries alike, with
  deterministic hashed bag-of-words vectors in microseconds. ragstore reaches it through
  an HTTP model pinned with ``add_http_model`` (MiniLM's tokenizer for chunking, 256
  tokens, so the chunks are the ones the peers get); each peer through a class of its own
  embedding interface (LangChain ``Embeddings``, LlamaIndex ``BaseEmbedding``, Chroma
  ``EmbeddingFunction``) that posts the same batches of ``--batch-size`` texts to the same
  server with :class:`HttpVectors`. The write path is compared where the model is not
  the limit; search figures then time an HTTP round trip for the query, not MiniLM.
- ``cached``: the real MiniLM vectors of every chunk text, computed once by the encode
  baseline (sentence-transformers, batch 64) and kept in ``bench/results/vectors/``
  keyed by a hash of the texts; every system's document-embedding call looks its texts
  up there (:class:`CachedVectors`, a dict lookup, in the worker's own process) and sends
  any text it does not find to the real model. Queries are never in the table, so every
  system encodes them with the real model on its own path, as in ``model``. A full
  SciFact run then takes minutes instead of 45, with the vectors and nDCG of ``model``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENCODERS = ("model", "instant", "cached")


def texts_digest(texts: Sequence[str]) -> str:
    """A short hash of the chunk texts, in order: the key of a cached-vector file."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


class HttpVectors:
    """A client of the instant server: batches of texts in, unit vectors out (keep-alive)."""

    def __init__(self, base_url: str, batch_size: int) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/embeddings"
        self.batch_size = batch_size
        self.client = httpx.Client(timeout=60.0)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            part = list(texts[i : i + self.batch_size])
            resp = self.client.post(
                self.url, json={"model": "instant", "input": part, "encoding_format": "float"}
            )
            resp.raise_for_status()
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            out.extend(d["embedding"] for d in data)
        return out

    def embed_one(self, text: str) -> list[float]:
        return self.embed([text])[0]


class CachedVectors:
    """The real model's vectors of the chunk texts, by text; misses go to ``fallback``."""

    def __init__(self, chunks_file: Path, vectors_file: Path) -> None:
        texts = [json.loads(line)["text"] for line in chunks_file.read_text("utf-8").splitlines()]
        vectors = np.load(vectors_file)["chunks"]
        if len(vectors) != len(texts):
            raise RuntimeError(
                f"{vectors_file} holds {len(vectors)} vectors for {len(texts)} chunk texts"
            )
        self.table: dict[str, np.ndarray] = dict(zip(texts, vectors, strict=True))
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str], fallback: Callable[[list[str]], Any]) -> np.ndarray:
        """Rows for ``texts``: looked up, or encoded by ``fallback`` (the real model)."""
        missing = [i for i, t in enumerate(texts) if t not in self.table]
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if not missing:
            return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, 384))
        fresh = np.asarray(fallback([texts[i] for i in missing]), dtype=np.float32)
        if len(missing) == len(texts):
            return fresh
        out = np.empty((len(texts), fresh.shape[1]), dtype=np.float32)
        for i, t in enumerate(texts):
            if t in self.table:
                out[i] = self.table[t]
        out[missing] = fresh
        return out
