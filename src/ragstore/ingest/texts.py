"""Add texts with ids and metadata in batches, as Chroma's ``add`` and LangChain's
``add_texts`` do: the in-process :class:`ragstore.Store`, the HTTP ``/texts`` route and the
integrations all come here.

Each text becomes a document whose ``source`` is its id (a fresh UUID when none is given)
and whose metadata is exactly the caller's. A text is chunked and embedded with the
collection's model, or, when the caller brings one vector per text (an outside embedding
model, or a collection of imported vectors that ragstore cannot embed for), stored whole
as one chunk with that vector. Re-adding an id with the same text and metadata (and the
same vector, when one is given) changes nothing; new metadata on the same text rewrites
the rows but reuses the stored vectors, so unchanged text is never embedded twice. Rows
go through the one write path, :func:`ragstore.db.documents.write_documents`, a
transaction per batch; a call large enough for a bulk load (:func:`may_load_in_bulk`), with
or without the caller's vectors, goes through the ingest's pipeline instead
(:func:`_add_through_pipeline`), bulk load included.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from ragstore.db import documents, repository, spaces
from ragstore.db.errors import translated
from ragstore.errors import CollectionNotFoundError, InputError, RagstoreError
from ragstore.ingest import prepare
from ragstore.ingest.service import (
    FileOutcome,
    IngestReport,
    Item,
    created_for_this_write,
    ingest_items,
    may_load_in_bulk,
)
from ragstore.modelops.fanout import building_vectors
from ragstore.modelops.specs import find_model
from ragstore.models import VECTOR_ONLY_PROVIDER, Chunk
from ragstore.observability import metrics
from ragstore.runtime import Runtime
from ragstore.validation import (
    a_type,
    check_texts,
    check_value,
    float32_array,
    id_list,
    json_value,
    per_text_list,
    text_list,
)

BATCH = 256  # texts per transaction


@dataclass
class AddReport:
    """What one ``add_texts`` call did: the ids in input order and per-outcome counts."""

    collection: str
    ids: list[str] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    embedded: int = 0  # chunk texts sent to the model
    reused: int = 0  # chunks whose stored vector was reused
    seconds: float = 0.0  # how long the call took (the ingest metrics)
    # texts not stored for an error (the call raises it): for the ingest metrics' "failed",
    # never in an answer (a call with any raises). A batch's texts fail together (one
    # transaction); the pipeline's each alone, or all with a bulk load that failed
    failed: int = 0

    def count(self, outcome: str) -> int:
        """Texts with ``outcome`` (``added``, ``updated``, ``unchanged``, ``failed``;
        others: 0), as ``IngestReport.count`` reads, so the ingest metrics record both
        alike: without ``failed``, texts that failed were counted nowhere."""
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
        }.get(outcome, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "ids": self.ids,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "embedded": self.embedded,
            "reused": self.reused,
        }


def _lists(
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None,
    ids: Sequence[str] | None,
    vectors: Sequence[Sequence[float]] | np.ndarray | None,
) -> tuple[
    list[str],
    list[Mapping[str, Any]] | None,
    list[str] | None,
    Sequence[Sequence[float]] | np.ndarray | None,
]:
    """An add's four per-text arguments as lists (a numpy matrix of vectors as it is),
    each read once, or InputError for one that is no list (:func:`per_text_list`)."""
    return (
        text_list(texts),
        None
        if metadatas is None
        else per_text_list(metadatas, "metadatas", "pass one dict of metadata per text"),
        None if ids is None else id_list(ids, "ids"),
        vectors
        if vectors is None or isinstance(vectors, np.ndarray)
        else per_text_list(vectors, "vectors", "pass one list of numbers per text"),
    )


def _checked(
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None,
    ids: Sequence[str] | None,
    vectors: Sequence[Sequence[float]] | np.ndarray | None,
    dimension: int,
    distance: str | None = None,
) -> tuple[list[str], list[dict[str, Any]], np.ndarray | None]:
    """The call's ids, metadata and vectors, checked; ``distance`` (the collection's, None
    when not known yet) refuses an all-zero vector where it is ``cosine``."""
    texts = text_list(texts)
    if ids is not None:
        ids = id_list(ids, "ids")
    n = len(texts)
    if ids is not None and len(ids) != n:
        raise InputError(f"ids has {len(ids)} entries for {n} texts; give one per text")
    out_ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in texts]
    check_texts(texts, out_ids, {"metadatas": metadatas, "vectors": vectors})
    metas: list[dict[str, Any]] = []
    for i, meta in enumerate(metadatas or [{}] * n):
        if not isinstance(meta, Mapping):
            raise InputError(f"metadatas[{i}] is {a_type(meta)}, not a JSON object")
        # the Client's check, in its words (where the value is, how to write it): json.dumps
        # said only "Object of type bytes is not JSON serializable"
        metas.append(json_value(dict(meta), f"metadatas[{i}]", paths=True))
    matrix = None
    if vectors is not None:
        matrix = float32_array(vectors, "vectors")
        if matrix.ndim != 2 or matrix.shape[1] != dimension:
            raise InputError(
                f"vectors must be {n} rows of {dimension} numbers (the "
                f"collection's dimension), got shape {matrix.shape}"
            )
        if distance == "cosine":
            # no direction: its cosine distance to every query is NaN, so it was stored and
            # then ranked in an arbitrary place with a score of NaN (null in the API's JSON);
            # a search by such a vector and an import of one are refused the same way
            zero = np.flatnonzero(~matrix.any(axis=1))
            if zero.size:
                raise InputError(
                    f"vectors[{int(zero[0])}] is all zeros, and the collection ranks by cosine "
                    "similarity, which a vector with no direction has none of; give a "
                    "non-zero vector"
                )
            # values all tiny (1e-45): the index kept zeros, so the text was stored and
            # then never found, its distance to every query NaN
            tiny = np.flatnonzero(spaces.without_direction(matrix))
            if tiny.size:
                i = int(tiny[0])
                top = float(np.abs(matrix[i]).max())
                raise InputError(
                    f"vectors[{i}] has no value above {spaces.HALFVEC_ZERO:.2g} (its largest "
                    f"is {top:.3g}): the index keeps vectors in half precision, where it "
                    "is all zeros, with no direction for cosine similarity to rank; scale "
                    "it up (cosine ignores a vector's length)"
                )
    return out_ids, metas, matrix


def check_call(
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None,
    ids: Sequence[str] | None,
    vectors: Sequence[Sequence[float]] | np.ndarray | None,
) -> None:
    """Refuse what :func:`add_texts` would refuse in a call's own texts, ids, metadata and
    vectors (the vectors' dimension their own), before anything is made. For the
    integrations that make a collection for an outside model's vectors ahead of the add:
    made first, a refused add (an empty text, metadata JSON cannot hold) left an empty
    collection pinned to that model, and the next add with the right model was refused."""
    texts, metadatas, ids, vectors = _lists(texts, metadatas, ids, vectors)
    for i, meta in enumerate(metadatas or ()):
        if isinstance(meta, Mapping):
            check_value(meta, f"metadatas[{i}]", paths=True)
    dimension = 0
    if vectors is not None:
        dimension = int(float32_array(vectors, "vectors").shape[-1])
    _checked(texts, metadatas, ids, vectors, dimension)


# The metadata key the LlamaIndex store (integrations/llamaindex.py) writes, ``True``, next
# to LlamaIndex's own ``_node_content``, on a node it adds with its embedding: ragstore
# stores such a node whole, so a query answers it from its hit without reading it again.
# The store refuses a node whose own metadata holds the key.
WHOLE_MARK = "_ragstore_whole"


def _marked_whole(metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` is a LlamaIndex node's carrying :data:`WHOLE_MARK`."""
    return metadata.get(WHOLE_MARK) is True and "_node_content" in metadata


def _digest(
    text: str, metadata: dict[str, Any], vector: np.ndarray | None = None, passage_prefix: str = ""
) -> str:
    """The stored content hash of a text: what decides "unchanged". A caller's vector is
    part of what was sent: left out, the same text sent with another vector (an outside
    model replaced by one of the same dimension) was answered unchanged and the old vector
    kept, and a text sent once with a vector and then without stayed the caller's vector.
    Texts the model embeds hash as they always did, but for a model's passage prefix
    (``passage: ``): chunks stored before the chunker counted it in their budget run two
    tokens past the model's limit and lose their tails, and were answered unchanged when
    sent again; with the prefix in the hash they are cut again (as files are:
    :func:`ragstore.chunking.document_hash`). The LlamaIndex store's mark of a node it
    stores whole (:data:`WHOLE_MARK`) is left out: it says what the vector's presence
    says, and counted, re-adding an unchanged node stored by a release without the mark
    answered it updated (and rewrote it)."""
    if vector is not None and _marked_whole(metadata):
        metadata = {k: v for k, v in metadata.items() if k != WHOLE_MARK}
    blob = json.dumps([text, metadata], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(blob.encode("utf-8"))
    if vector is not None:
        digest.update(b"\0vector\0" + prepare.vector_bytes(vector))
    elif passage_prefix:
        digest.update(b"\0passage-prefix\0" + passage_prefix.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def add_texts(
    rt: Runtime,
    collection: str,
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
    *,
    vectors: Sequence[Sequence[float]] | np.ndarray | None = None,
    create: bool = True,
) -> AddReport:
    """Add or update ``texts`` under ``ids``; the collection is created when missing,
    after every text, id, metadata and vector is checked (bad ones named, as the HTTP
    schemas name them, and no collection is left behind: a refused call created it)."""
    texts, metadatas, ids, vectors = _lists(texts, metadatas, ids, vectors)  # read once
    for i, meta in enumerate(metadatas or ()):
        if isinstance(meta, Mapping):
            check_value(meta, f"metadatas[{i}]", paths=True)
    created = False
    try:
        coll = rt.collection(collection)
    except CollectionNotFoundError:
        if not create:
            raise
        # checked against the model the collection would be made with, then made
        spec = find_model(rt, rt.settings.model).spec
        new_ids, _, new_matrix = _checked(
            texts, metadatas, ids, vectors, spec.dimension, spec.distance
        )
        if new_matrix is not None:
            _refuse_unindexable(rt, None, texts, new_ids)
        coll, created = rt.open_or_create(collection)
    # made here and nothing of the call stored: the collection is not left behind
    with created_for_this_write(rt, coll, created):
        out_ids, metas, matrix = _checked(
            texts, metadatas, ids, vectors, coll.model.dimension, coll.model.distance
        )
        if matrix is not None:
            _refuse_unindexable(rt, coll, texts, out_ids)
        if matrix is None and coll.model.provider == VECTOR_ONLY_PROVIDER:
            raise InputError(
                f"collection {coll.name!r} holds vectors of {coll.model.key}, a model ragstore "
                "cannot run; pass one vector per text (vectors=...)"
            )
        report = AddReport(collection=coll.name, ids=out_ids)
        t0 = time.perf_counter()
        try:
            if _in_bulk(rt, coll, texts):
                _add_through_pipeline(rt, coll, report, texts, out_ids, metas, matrix)
                return report
            for start in range(0, len(texts), BATCH):
                end = min(start + BATCH, len(texts))
                before = report.added + report.updated + report.unchanged
                try:
                    _add_batch(
                        rt,
                        coll,
                        report,
                        list(texts[start:end]),
                        out_ids[start:end],
                        metas[start:end],
                        None if matrix is None else matrix[start:end],
                    )
                except RagstoreError as exc:
                    # the batch's transaction rolled back: its texts not found unchanged
                    # before the write failed (the batches after it: not attempted)
                    counted = report.added + report.updated + report.unchanged - before
                    report.failed += end - start - counted
                    if start:
                        _say_what_was_stored(exc, out_ids, start)
                    raise
        finally:
            # texts are documents stored like an upload's: they were left out of the ingest
            # metrics, so a store filled through LangChain, LlamaIndex or MCP showed no ingest
            report.seconds = time.perf_counter() - t0
            metrics.observe_ingest(report)
        return report


def _in_bulk(rt: Runtime, coll: repository.Collection, texts: Sequence[str]) -> bool:
    """Whether a call's texts (with their vectors or not) may be a bulk load: more than
    ``RAGSTORE_BULK_LOAD_BYTES``, or into an empty collection large enough for a first one
    (:func:`may_load_in_bulk`). Such a call takes the ingest's pipeline; a smaller one into
    a collection with rows, which would be written round by round there too, keeps the
    batches."""
    total = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    if not may_load_in_bulk(rt, total):
        return False
    if total > rt.settings.bulk_load_bytes:
        return True
    with rt.db.connection() as conn, translated(f"reading collection {coll.name!r}"):
        return spaces.is_empty(conn, coll.table)


def _add_through_pipeline(
    rt: Runtime,
    coll: repository.Collection,
    report: AddReport,
    texts: list[str],
    ids: list[str],
    metas: list[dict[str, Any]],
    matrix: np.ndarray | None,
) -> None:
    """A large call's texts through the ingest's pipeline (:func:`ingest_items`): chunked
    (in worker processes where the ingest would use them) while the round before is
    encoded and the one before that written, and, into an empty collection (or one the
    call outweighs), one bulk load: rows by COPY, BM25 and the HNSW index built once at the
    end, all in one transaction. Batch by batch, each a transaction with its triggers and
    index inserts, 9,632 SciFact chunks took 42 s with an instant encoder where the same
    chunks as files loaded in 9 (docs/benchmarks.md). The texts are stored as the batches
    store them: each under its id, the caller's metadata exactly, ``format`` text. With
    the caller's vectors (``matrix``) each text is one chunk with its vector, nothing
    encoded and no model loaded: 10k such texts went at ~250 a second batch by batch.

    A text that fails (no words to index) fails alone and the call raises its error after
    the rest are stored, naming which ids are stored and which are not."""
    prefix = str(coll.model.options.get("passage_prefix", ""))
    items = [
        Item(
            ids[i],
            None,
            f"texts[{i}] (id {ids[i]!r})",
            metas[i],
            origin="text",
            text=texts[i],
            content_hash=_digest(texts[i], metas[i], None if matrix is None else matrix[i], prefix),
            vector=None if matrix is None else matrix[i],
        )
        for i in range(len(texts))
    ]
    ingest = IngestReport(collection=coll.name)
    try:
        ingest_items(rt, coll.name, items, ingest, create=False)
    finally:  # raising too (rounds before the error committed): what was stored is counted
        stored, first = _count(report, ingest, ids)
    if first is None and len(stored) == len(ids):
        return
    exc = first.exc if first is not None and first.exc is not None else None
    if exc is None:
        exc = RagstoreError(first.error if first is not None and first.error else "not stored")
    kept = set(stored)
    not_stored = [i for i in ids if i not in kept]
    if stored or len(not_stored) > 1:
        exc.problem_members = {
            **exc.problem_members,
            "stored_ids": stored,
            "not_stored_ids": not_stored,
        }
        exc.message += (
            f" ({len(stored)} of the {len(ids)} texts were stored, each whole: see "
            "'stored_ids'; the rest were not: 'not_stored_ids')"
        )
        exc.args = (exc.message,)
    raise exc


def _count(
    report: AddReport, ingest: IngestReport, ids: list[str]
) -> tuple[list[str], FileOutcome | None]:
    """The pipeline's outcomes in ``report``'s counts; the ids stored, in call order, and
    the outcome to raise from (the first failed one, else the first not attempted)."""
    report.embedded += ingest.embedded
    report.reused += ingest.reused
    by_id = {o.source: o for o in ingest.outcomes}
    stored: list[str] = []
    lost: list[FileOutcome] = []
    for doc_id in ids:
        o = by_id.get(doc_id)
        if o is not None and o.status in ("added", "updated", "unchanged"):
            setattr(report, o.status, getattr(report, o.status) + 1)
            stored.append(doc_id)
        elif o is not None:
            if o.status == "failed":  # not_attempted is not counted, as for files
                report.failed += 1
            lost.append(o)
    return stored, _cause(lost)


def _cause(lost: list[FileOutcome]) -> FileOutcome | None:
    """Of the texts not stored, the outcome whose error the call raises: one that failed the
    whole load or stopped it (a database or embedding endpoint failing, 5xx: the rest are
    not stored for it) before any text's own (an empty text, 4xx), which fails alone and,
    raised, read as the only reason nothing was stored; then the first failed one."""
    for o in lost:
        if o.exc is not None and o.exc.http_status >= 500:
            return o
    failed = [o for o in lost if o.status == "failed"] or lost
    return failed[0] if failed else None


def _refuse_unindexable(
    rt: Runtime, coll: repository.Collection | None, texts: Sequence[str], ids: list[str]
) -> None:
    """Refuse the call, before anything is written, when a text to be stored whole (with
    a caller's vector: one chunk, however long) is too large for the full-text index
    (``to_tsvector`` over PostgreSQL's 1 MB) under the collection's text search
    configuration (``coll`` None: the one a new collection gets). Left to the write, the
    error named no text ("string is too long for tsvector") and the batches before it
    were already stored. Only texts of ``documents.TSVECTOR_CHECK_BYTES`` or more are asked
    of the server, one statement each, in a savepoint."""
    long = [
        i
        for i, text in enumerate(texts)
        if len(text) * 4 >= documents.TSVECTOR_CHECK_BYTES
        and len(text.encode("utf-8", "surrogatepass")) >= documents.TSVECTOR_CHECK_BYTES
    ]
    if not long:
        return
    with rt.db.connection() as conn, translated("checking texts for the full-text index"):
        config = (
            documents.NEW_COLLECTION_TS_CONFIG
            if coll is None
            else documents.ts_config_name(conn, coll.id)
        )
        for i in long:
            try:
                with conn.transaction():
                    documents.check_tsvector(conn, config, texts[i])
            except psycopg.errors.ProgramLimitExceeded:
                raise InputError(
                    f"texts[{i}] (id {ids[i]!r}) has too many distinct words for the "
                    "full-text index (over PostgreSQL's 1 MB tsvector); a text given with its "
                    "vector is stored whole, as one chunk: split it into several texts. "
                    "Nothing of this call was stored"
                ) from None


def _say_what_was_stored(exc: RagstoreError, ids: list[str], stored: int) -> None:
    """A batch after the first failed: the batches before it are committed (a transaction
    each), so the error says which ids are stored and which are not, as an upload's error
    does, rather than reading as if the whole call had failed."""
    exc.problem_members = {"stored_ids": ids[:stored], "not_stored_ids": ids[stored:]}
    exc.message += (
        f" ({stored} of the {len(ids)} texts, the first ones, were stored before it: "
        "see 'stored_ids'; the rest were not: 'not_stored_ids')"
    )


def _add_batch(
    rt: Runtime,
    coll: repository.Collection,
    report: AddReport,
    texts: list[str],
    ids: list[str],
    metas: list[dict[str, Any]],
    matrix: np.ndarray | None,
) -> None:
    with rt.db.connection() as conn, translated(f"reading documents of {coll.name!r}"):
        known = documents.document_hashes(conn, coll.id, ids)
    prefix = str(coll.model.options.get("passage_prefix", ""))
    digests = [
        _digest(texts[i], metas[i], None if matrix is None else matrix[i], prefix)
        for i in range(len(ids))
    ]
    todo: list[int] = []
    for i, doc_id in enumerate(ids):
        old = known.get(doc_id)
        if old is not None and old[1] == digests[i]:
            report.unchanged += 1
        else:
            todo.append(i)
    if not todo:
        return
    cut = [
        (prepare.whole_text(texts[i], metas[i], matrix[i]), None)
        if matrix is not None
        else _chunked(rt, coll, texts[i], ids[i], metas[i], f"texts[{i}] (id {ids[i]!r})")
        for i in todo
    ]
    chunks = [c for c, _ in cut]
    if matrix is not None:
        vectors = [matrix[i : i + 1] for i in todo]
        extra: list[dict[str, np.ndarray]] = [{} for _ in todo]
    else:
        vectors = _embed(rt, coll, report, chunks)
        extra = building_vectors(rt, coll, chunks)
    writes = []
    for n, i in enumerate(todo):
        record = documents.DocumentRecord(
            source=ids[i],
            title=None,
            format="text",
            content_hash=digests[i],
            size_bytes=len(texts[i].encode("utf-8")),
            metadata=metas[i],
            parsed=cut[n][1],
            origin="text",  # an id, not a path: never looked for on disk by a sync
        )
        writes.append(documents.DocumentWrite(record, chunks[n], vectors[n], extra[n]))
    with rt.db.connection() as conn, translated(f"storing texts in {coll.name!r}"):
        written = documents.write_documents(conn, coll, writes)
    for w in written:  # decided again under the write lock
        if w.status == "added":
            report.added += 1
        elif w.status == "updated":
            report.updated += 1
        else:
            report.unchanged += 1


def _chunked(
    rt: Runtime,
    coll: repository.Collection,
    text: str,
    doc_id: str,
    metadata: dict[str, Any],
    label: str,
) -> tuple[list[Chunk], bytes]:
    """:func:`prepare.chunk_text` for the collection's model."""
    return prepare.chunk_text(
        text, doc_id, metadata, rt.embedder_for(coll), coll.model.max_tokens, label
    )


def _embed(
    rt: Runtime, coll: repository.Collection, report: AddReport, docs: list[list[Chunk]]
) -> list[np.ndarray]:
    """One matrix per document: stored vectors reused, the rest encoded in one call."""
    hashes = [c.content_hash for chunks in docs for c in chunks if c.embeddable]
    with rt.db.connection() as conn, translated("looking up stored embeddings"):
        stored = documents.stored_embeddings(conn, coll, hashes)
    todo: dict[str, str] = {}
    for chunks in docs:
        for c in chunks:
            if c.embeddable and c.content_hash not in stored:
                todo.setdefault(c.content_hash, c.embed_text)
    fresh = dict(zip(todo, rt.embedder_for(coll).embed(list(todo.values())), strict=True))
    report.embedded += len(todo)
    report.reused += len(hashes) - len(todo)
    out = []
    for chunks in docs:
        rows = [
            fresh.get(c.content_hash, stored.get(c.content_hash)) for c in chunks if c.embeddable
        ]
        out.append(
            np.stack([r for r in rows if r is not None])
            if rows
            else np.zeros((0, coll.model.dimension), dtype=np.float32)
        )
    return out
