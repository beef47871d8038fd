"""Read, parse and chunk files: in this process, or in forked worker processes for a large
ingest so that parsing and tokenizing use every core instead of one thread under the GIL.

A file becomes a :class:`Prepared`: the document record and chunks to store, or the
outcome already known (``unchanged`` before parsing, or the error that stopped it). The
work is pure (bytes in, rows out), so it runs the same in a worker: the workers are forked
with the embedder's tokenizer in memory (nothing is pickled on the way in but the items),
and their results come back pickled in input order.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragstore.chunking import chunk_document, document_hash, recipe
from ragstore.chunking.chunker import TokenCounter
from ragstore.db import documents
from ragstore.errors import (
    EmptyDocumentError,
    RagstoreError,
)
from ragstore.files import not_the_file, read_with_stat, unreadable
from ragstore.models import Chunk, ChunkType, ParsedDocument
from ragstore.parsing import detect_format, parse_bytes
from ragstore.parsing.language import detect_language
from ragstore.parsing.limits import text_too_large
from ragstore.parsing.sandbox import parse_file, stop_helpers

if TYPE_CHECKING:
    from ragstore.ingest.service import Item

FILES_PER_TASK = 16  # files a worker prepares per task: amortizes the round trip
MIN_POOL_BYTES = 2 * 1024 * 1024  # smaller ingests are prepared in this process


@dataclass
class Prepared:
    """One file, prepared: ``record`` and ``chunks`` to store, or ``unchanged``, or
    ``error`` (a file that cannot be stored; the rest of the batch goes on)."""

    source: str
    record: documents.DocumentRecord | None = None
    chunks: list[Chunk] = field(default_factory=list)
    unchanged: bool = False
    error: RagstoreError | None = None


@dataclass(frozen=True)
class Job:
    """What preparing needs besides the files: the same for every file of an ingest.
    ``counter`` is None where nothing is chunked: texts that each bring their vector."""

    counter: TokenCounter | None
    max_tokens: int
    max_file_bytes: int
    user_meta: dict[str, Any]
    parse_timeout_s: float = 0.0  # 0: binary formats parsed here, without a limit
    passage_prefix: str = ""  # the model's, in every document's hash (document_hash)


def _file_metadata(
    item: Item,
    st: os.stat_result,
    fmt: str,
    size: int,
    parsed_meta: dict[str, Any],
    user_meta: dict[str, Any],
    language: str | None = None,
) -> dict[str, Any]:
    """A file's metadata; ``st`` is its status as of the bytes read (``read_with_stat``),
    not looked up again after the parse: a file written in between got the new time with
    the old content."""
    meta: dict[str, Any] = dict(parsed_meta)
    meta.update(
        {
            "path": item.source,
            "filename": Path(item.source).name,
            "size_bytes": size,
            "format": fmt,
            "modified_at": datetime.fromtimestamp(st.st_mtime, tz=UTC).isoformat(),
        }
    )
    if language:
        meta["language"] = language
    meta.update(user_meta)
    return meta


def prepare(job: Job, item: Item, stored_hash: str | None) -> Prepared:
    """Read, parse and chunk one file; ``stored_hash`` is its stored content hash, if any
    (an unchanged file is skipped before parsing when the item allows it)."""
    try:
        return _prepare(job, item, stored_hash)
    except RagstoreError as exc:
        return Prepared(item.source, error=exc)
    except OSError as exc:  # not the read's (see _read): a parser's, the process's
        return Prepared(item.source, error=not_the_file(item.label, "preparing", exc, _verb(item)))


def _verb(item: Item) -> str:
    """What the user does again with ``item`` where it failed for a reason of the
    process's (:func:`ragstore.files.unreadable`): an upload (a request's, a job's) is
    uploaded again; its error said "ingest it again" to a client that had uploaded it."""
    return "upload" if item.origin == "upload" else "ingest"


def _read(item: Item, limit: int) -> tuple[bytes, os.stat_result]:
    """The file's bytes and status (``read_with_stat``); an OSError of its open or read
    is the file's (``file_unreadable``, ``path_not_found``) unless it is the process's
    (:func:`ragstore.files.unreadable`). ``prepare`` took every OSError below it, a
    parser's or a parse helper's too (its pipe, its fork), for "the file is unreadable;
    check its permissions", sending the user to a healthy file."""
    assert item.path is not None  # a file's (a text is prepared by _prepare_text)
    try:
        return read_with_stat(item.path, limit, item.label)
    except OSError as exc:
        raise unreadable(Path(item.label), exc, _verb(item)) from exc


def _prepare(job: Job, item: Item, stored_hash: str | None) -> Prepared:
    if item.text is not None:
        return _prepare_text(job, item, stored_hash)
    data, st = _read(item, job.max_file_bytes)
    size = len(data)
    user_meta = {**job.user_meta, **item.metadata}
    digest = document_hash(data, user_meta, job.passage_prefix)
    if item.early_skip and stored_hash == digest:
        return Prepared(item.source, unchanged=True)
    fmt = detect_format(item.label, data)
    parsed = parse_file(data, item.label, fmt, job.parse_timeout_s, job.max_file_bytes)
    _check_text_size(parsed, item.label, job.max_file_bytes)
    assert job.counter is not None  # a file is always chunked
    chunks = chunk_document(parsed, job.counter, job.max_tokens)
    if not chunks:
        raise EmptyDocumentError(f"{item.label}: no text found in the file; nothing to ingest")
    record = documents.DocumentRecord(
        source=item.source,
        title=parsed.title,
        format=parsed.format,
        content_hash=digest,
        size_bytes=size,
        metadata=_file_metadata(
            item,
            st,
            parsed.format,
            size,
            parsed.metadata,
            user_meta,
            detect_language(parsed),
        ),
        parsed=recipe.encode(parsed),
        origin=item.origin,
    )
    return Prepared(item.source, record, chunks)


def _prepare_text(job: Job, item: Item, stored_hash: str | None) -> Prepared:
    """A text added by id: unchanged when its hash (the caller's digest) is the stored one,
    else chunked as :func:`chunk_text` does (or, with the caller's vector, one chunk:
    :func:`whole_text`) and stored under its id with exactly the caller's metadata, as
    ``add_texts`` stores one batch by batch."""
    assert item.text is not None and item.content_hash is not None
    if stored_hash == item.content_hash:
        return Prepared(item.source, unchanged=True)
    cut_from: bytes | None = None
    if item.vector is not None:
        chunks = whole_text(item.text, item.metadata, item.vector)
    else:
        assert job.counter is not None  # None only where every text brings its vector
        chunks, cut_from = chunk_text(
            item.text, item.source, item.metadata, job.counter, job.max_tokens, item.label
        )
    record = documents.DocumentRecord(
        source=item.source,
        title=None,
        format="text",
        content_hash=item.content_hash,
        size_bytes=item.size,
        metadata=item.metadata,
        parsed=cut_from,
        origin="text",  # an id, not a path: never looked for on disk by a sync
    )
    return Prepared(item.source, record, chunks)


def chunk_text(
    text: str,
    doc_id: str,
    metadata: dict[str, Any],
    counter: TokenCounter,
    max_tokens: int,
    label: str,
) -> tuple[list[Chunk], bytes]:
    """A caller's text parsed as plain paragraphs (no section titles looked for: the
    caller's own passage) and chunked for the model; every chunk carries the caller's
    metadata so hits and filters see it. With what they were cut from
    (:mod:`ragstore.chunking.recipe`), for a model migration that re-cuts them."""
    try:
        parsed = parse_bytes(text.encode("utf-8"), doc_id, "plain")
    except EmptyDocumentError:  # its words said as a file's ("the file holds only ...")
        raise EmptyDocumentError(f"{label} has no words to index; give it some text") from None
    chunks = chunk_document(parsed, counter, max_tokens)
    if not chunks:
        raise EmptyDocumentError(f"{label} has no words to index; give it some text")
    for ch in chunks:
        ch.metadata = {**ch.metadata, **metadata}
    return chunks, recipe.encode(parsed, metadata, text)


def vector_bytes(vector: np.ndarray) -> bytes:
    """A caller's vector as the bytes its hashes are taken over (float32, little-endian)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def whole_text(text: str, metadata: dict[str, Any], vector: np.ndarray) -> list[Chunk]:
    """The text as one chunk, for a caller-given vector that stands for all of it: a
    text the chunker would cut in several cannot share one vector among them, so it is
    stored whole, however long (``add_texts`` refuses one too large for the full-text
    index before anything is written).

    Its content hash is not the text's: stored vectors are reused by chunk content hash
    (:func:`ragstore.db.documents.stored_embeddings`), so under the text's hash a caller's
    vector was handed to the same text wherever the model was to embed it (another id, this
    id sent again without a vector, a file's chunk)."""
    given = hashlib.sha256(b"ragstore-given-vector\0" + vector_bytes(vector))
    given.update(text.encode("utf-8"))
    return [
        Chunk(
            ordinal=0,
            chunk_type=ChunkType.PARAGRAPH,
            text=text,
            section_path=(),
            parent_ordinal=None,
            char_start=0,
            char_end=len(text),
            token_count=len(text.split()),
            content_hash=given.hexdigest(),
            metadata=dict(metadata),
        )
    ]


def _check_text_size(parsed: ParsedDocument, name: str, limit: int) -> None:
    """A file's text is held to the same bound as its bytes: a compressed format (a PDF's
    inflated content streams, one stream drawn on every page) can unpack a few kilobytes
    into megabytes of text, each chunk of which would be embedded and stored. The parse
    counts it as it goes (``parsing.limits``); this is the count of what came back."""
    chars = sum(len(b.text) for b in parsed.blocks)
    if chars > limit:
        raise text_too_large(name, limit, chars)


_JOB: Job | None = None  # a worker's job, inherited from the parent by fork


def _init_worker(job: Job) -> None:
    global _JOB
    # the parent may have used the tokenizer's thread pool before forking; one process
    # per core is the parallelism here (and this keeps tokenizers from warning about it)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _JOB = job


def _prepare_many(items: list[Item], hashes: list[str | None]) -> list[Prepared]:
    assert _JOB is not None, "worker started without its job"
    return [prepare(_JOB, item, h) for item, h in zip(items, hashes, strict=True)]


class Preparer:
    """Prepares rounds of files, in worker processes when there are several."""

    def __init__(self, job: Job, pool: ProcessPoolExecutor | None) -> None:
        self.job = job
        self.pool = pool

    def interrupt(self) -> None:
        """The ingest was interrupted: a file still parsing in a helper process is given
        up now rather than waited for (forked workers get the Ctrl-C themselves)."""
        stop_helpers()

    def run(
        self, items: Sequence[Item], hashes: Sequence[str | None]
    ) -> Generator[Prepared, None, None]:
        """Every item prepared, in input order, each as it is ready: a caller that stops
        taking them (an ingest stopped by a parse helper that cannot start) closes the
        generator, and the items after are not prepared (in this process) or, in workers,
        those of tasks not started are cancelled."""
        if self.pool is None or len(items) <= FILES_PER_TASK:
            for item, h in zip(items, hashes, strict=True):
                yield prepare(self.job, item, h)
            return
        tasks = [
            self.pool.submit(
                _prepare_many,
                list(items[i : i + FILES_PER_TASK]),
                list(hashes[i : i + FILES_PER_TASK]),
            )
            for i in range(0, len(items), FILES_PER_TASK)
        ]
        try:
            for t in tasks:
                yield from t.result()
        except BrokenProcessPool as exc:
            raise _worker_died(items, exc) from None
        finally:  # closed early: the tasks not started are not run
            for t in tasks:
                t.cancel()


def _worker_died(items: Sequence[Item], exc: BrokenProcessPool) -> RagstoreError:
    """A worker process died (killed, out of memory), in the words of what it was doing:
    a large ``add_texts`` call's texts are chunked, not files parsed, and were told
    "parsing files for this ingest"."""
    if any(i.text is not None for i in items):
        return RagstoreError(
            f"a worker process chunking texts for this add_texts call died ({exc}; out of "
            "memory?); send the texts again, or set RAGSTORE_INGEST_WORKERS=1 to chunk "
            "them in the calling process"
        )
    return RagstoreError(
        f"a worker process parsing files for this ingest died ({exc}; out of "
        "memory?); run it again, or with RAGSTORE_INGEST_WORKERS=1 to parse the "
        "files in the ingesting process"
    )


AUTO_MIN_CORES = 4  # with 0 (auto) and a model on the CPU, fewer cores prepare in-process
AUTO_MIN_CORES_MODEL_ELSEWHERE = 2  # the same with a remote or GPU model


def pool_size(
    requested: int, total_bytes: int, cores: int | None = None, *, model_on_cpu: bool = True
) -> int:
    """Worker processes for an ingest of ``total_bytes``: ``requested``, or with 0 one per
    core; none (prepare in this process) for a small ingest or where processes cannot be
    forked. With 0 and a model that encodes on this machine's CPU (``model_on_cpu``), only
    a machine of ``AUTO_MIN_CORES`` or more forks: on 2 cores the model, the writes and the
    database fill the second core, and the workers add 0.1-0.2 CPU-ms a chunk (pickling
    the chunks back). A remote or GPU model leaves the cores to parsing, writing and the
    database, and there one thread under the GIL is the limit: workers from 2 cores up
    (a 100k first load with the instant server on 2 cores: docs/benchmarks.md, "Parse
    workers on 2 cores"). ``cores`` defaults to the cores this process may run on."""
    if total_bytes < MIN_POOL_BYTES or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if requested:
        return requested if requested > 1 else 0
    cores = _cores() if cores is None else cores
    least = AUTO_MIN_CORES if model_on_cpu else AUTO_MIN_CORES_MODEL_ELSEWHERE
    return cores if cores >= least else 0


def _cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, as in a
    container pinned to a few cores), else the machine's count."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


@contextmanager
def preparer(job: Job, workers: int) -> Iterator[Preparer]:
    """A :class:`Preparer` with ``workers`` forked processes (0: in this process)."""
    if workers <= 0:
        yield Preparer(job, None)
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(job,)
    ) as pool:
        # with fork every worker starts at the first submit: do it now, before this
        # ingest starts its reader and writer threads, so no lock is copied mid-use
        pool.submit(os.getpid).result()
        yield Preparer(job, pool)
