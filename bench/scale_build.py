"""A faster construction of ``bench.scale``'s collection for the 1M size (``--construct direct``).

Through files, a first load runs at a few hundred chunks/s on the shared 2-core machine:
one reader thread parses and chunks, the main thread asks the instant server for vectors
over HTTP (JSON both ways), one writer thread writes. A million chunks would take hours.
This construction keeps every part that makes the collection what a user's first load
makes, and drops only the file system and the HTTP round trip:

* the same corpus recipe as :func:`bench.scale.write_corpus` (a record's title and text
  followed by the shuffled sentences of another record, front matter ``bucket: j mod
  100``), generated in memory with a generator seeded per document so that several
  processes can build disjoint ranges (the 100k run's files used one sequential generator,
  so the two corpora are the same recipe, not the same files);
* ragstore's real parser and chunker (:func:`parse_bytes`, :func:`chunk_document`) with the
  pinned model's tokenizer, in ``workers`` processes;
* the vectors the instant server would answer (:class:`bench.instant_embedder.Vectors`,
  rounded to its five decimals, normalised as the HTTP embedder does), computed in the
  same worker processes;
* ragstore's real bulk write path, in one transaction as :func:`ragstore.ingest` runs it
  for a large first load: the space's HNSW index dropped, :func:`documents.begin_bulk`,
  each round through :func:`documents.write_documents` in a savepoint (COPY of chunks and
  vectors, the real schema and triggers), :func:`documents.finish_bulk` (BM25 statistics
  and postings once) and :func:`spaces.ensure_index` (HNSW once) before the commit.

Stages are wall seconds of the main process: ``write`` (the rounds, including
``write_waited_for_prepare``, the time it waited for the workers), ``bm25_build`` and
``index_build``; ``prepare_cpu`` sums the workers' own parse + chunk + vector CPU seconds.
"""

from __future__ import annotations

import random
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.instant_embedder import Vectors
from ragstore.chunking import chunk_document, document_hash, recipe
from ragstore.db import documents, repository, spaces
from ragstore.embedding.registry import load_embedder
from ragstore.ingest.service import Item
from ragstore.models import ModelSpec
from ragstore.parsing import parse_bytes
from ragstore.parsing.language import detect_language
from ragstore.runtime import Runtime

_state: dict[str, Any] = {}


@dataclass
class Built:
    """What a direct construction wrote and where its time went."""

    documents: int = 0
    chunks: int = 0
    vectors: int = 0
    stages_s: dict[str, float] = field(default_factory=dict)


def _init(spec: ModelSpec) -> None:
    from bench.scale import _records

    _state["records"] = _records()
    _state["embedder"] = load_embedder(spec)
    _state["vectors"] = Vectors(spec.dimension)
    _state["spec"] = spec


def document(j: int, records: list[tuple[str, str]]) -> str:
    """Document ``j`` of the corpus: :func:`bench.scale._document`'s recipe, seeded by ``j``."""
    from bench.scale import _document

    return _document(j, records, random.Random(1_000_003 * 7 + j))


def source(j: int) -> str:
    """The source document ``j`` is stored under."""
    return f"scale/{j // 1000:04d}/doc{j:07d}.md"


@dataclass(frozen=True)
class Stored:
    """What the collection holds: rows of ``chunks`` (headings too) and documents."""

    rows: int
    documents: int


def stored(conn: Any, coll: repository.Collection) -> Stored:
    """Rows and documents of ``coll``; its documents must be ``0 .. n - 1`` of the corpus
    (what :func:`build` and a top-up write), so that the next one to add is ``n``."""
    docs, last = conn.execute(
        "SELECT count(*), max(source) FROM documents WHERE collection_id = %s", (coll.id,)
    ).fetchone()
    if docs and last != source(docs - 1):
        raise RuntimeError(
            f"collection {coll.name!r} holds {docs} documents but its last is {last!r}, not"
            f" {source(docs - 1)!r}: not a corpus this bench built, so it cannot be topped up"
        )
    (rows,) = conn.execute(
        "SELECT count(*) FROM chunks WHERE collection_id = %s", (coll.id,)
    ).fetchone()
    return Stored(int(rows), int(docs))


def write_files(folder: Path, first: int, last: int, records: list[tuple[str, str]]) -> list[Item]:
    """Documents ``first`` to ``last - 1`` as Markdown files under ``folder``, as ingest
    items stored under their :func:`source` (the names the direct build gives them)."""
    items: list[Item] = []
    for j in range(first, last):
        path = folder / source(j)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document(j, records), encoding="utf-8")
        items.append(Item(source(j), path, source(j)))
    return items


def _prepare(first: int, last: int) -> tuple[list[documents.DocumentWrite], float]:
    """Parse, chunk and embed documents ``first`` to ``last - 1`` (in a worker process)."""
    t0 = time.process_time()
    records = _state["records"]
    embedder = _state["embedder"]
    vec: Vectors = _state["vectors"]
    spec: ModelSpec = _state["spec"]
    out: list[documents.DocumentWrite] = []
    for j in range(first, last):
        name = source(j)
        data = document(j, records).encode()
        parsed = parse_bytes(data, name, "markdown")
        chunks = chunk_document(parsed, embedder, spec.max_tokens)
        texts = [c.embed_text for c in chunks if c.embeddable]
        if texts:
            rows = np.round(np.stack([vec.embed(t) for t in texts]).astype(np.float64), 5)
            vectors = rows.astype(np.float32)
            if spec.normalize:
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        else:
            vectors = np.zeros((0, spec.dimension), dtype=np.float32)
        metadata: dict[str, Any] = dict(parsed.metadata)
        metadata.update(
            path=name, filename=name.rsplit("/", 1)[1], size_bytes=len(data), format="markdown"
        )
        language = detect_language(parsed)
        if language:
            metadata["language"] = language
        record = documents.DocumentRecord(
            source=name,
            title=parsed.title,
            format=parsed.format,
            content_hash=document_hash(data),
            size_bytes=len(data),
            metadata=metadata,
            parsed=recipe.encode(parsed),
        )
        out.append(documents.DocumentWrite(record, chunks, vectors))
    return out, time.process_time() - t0


def build(
    rt: Runtime,
    coll: repository.Collection,
    n_docs: int,
    *,
    workers: int = 2,
    round_docs: int = 1000,
    memory: str = "2GB",
    progress: bool = True,
) -> Built:
    """Write documents ``0 .. n_docs - 1`` into the empty ``coll`` as one bulk first load."""
    built = Built(documents=n_docs)
    ranges = [(i, min(n_docs, i + round_docs)) for i in range(0, n_docs, round_docs)]
    prepare_cpu = 0.0
    t_start = time.perf_counter()
    with (
        ProcessPoolExecutor(workers, initializer=_init, initargs=(coll.model,)) as pool,
        rt.db.connection() as conn,
    ):
        spaces.drop_index(conn, coll.table)
        documents.begin_bulk(conn, coll.id)
        window: deque[Future[tuple[list[documents.DocumentWrite], float]]] = deque()
        todo = iter(ranges)
        for r in todo:
            window.append(pool.submit(_prepare, *r))
            if len(window) >= 2 * workers:
                break
        done = 0
        waited = 0.0
        while window:
            t0 = time.perf_counter()
            writes, cpu = window.popleft().result()
            waited += time.perf_counter() - t0
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(_prepare, *nxt))
            prepare_cpu += cpu
            with conn.transaction():
                documents.write_documents(conn, coll, writes)
            built.chunks += sum(len(w.chunks) for w in writes)
            built.vectors += sum(len(w.vectors) for w in writes)
            done += len(writes)
            if progress and done % (20 * round_docs) < round_docs:
                rate = built.chunks / (time.perf_counter() - t_start)
                print(f"  {done}/{n_docs} docs, {built.chunks} chunks, {rate:.0f}/s", flush=True)
        built.stages_s["write"] = round(time.perf_counter() - t_start, 1)
        built.stages_s["prepare_cpu"] = round(prepare_cpu, 1)
        built.stages_s["write_waited_for_prepare"] = round(waited, 1)
        t0 = time.perf_counter()
        documents.finish_bulk(conn, coll.id, memory)
        built.stages_s["bm25_build"] = round(time.perf_counter() - t0, 1)
        print(f"  bm25 build {built.stages_s['bm25_build']} s", flush=True)
        t0 = time.perf_counter()
        spaces.ensure_index(
            conn, coll.table, coll.model.distance, memory=memory, workers=spaces.build_workers()
        )
        built.stages_s["index_build"] = round(time.perf_counter() - t0, 1)
        print(f"  hnsw build {built.stages_s['index_build']} s", flush=True)
        t0 = time.perf_counter()
    built.stages_s["commit"] = round(time.perf_counter() - t0, 1)
    built.stages_s["total"] = round(time.perf_counter() - t_start, 1)
    return built
