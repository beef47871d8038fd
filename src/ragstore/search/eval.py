"""Retrieval quality on a BEIR-layout dataset: load it, ingest it once, score each mode.

A dataset directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``,
``corpus-id``, ``score``, with a header line). The corpus goes into a scratch collection
(``eval-<dataset>`` by default) through the normal chunker, embedder and repository, one
document per record with its title and text; records already stored with the same
content are skipped, so a second run costs only the searches, and stored documents that
are no record of the corpus (left by an earlier version of it, or by another dataset of
the same directory name) are removed.

Search returns chunks; a document's rank is that of its best chunk. Each query is
searched twice per mode: nDCG@10 and MRR@10 come from a k=10 search (:data:`TOP_K`), the
search a user runs, with its HNSW ``ef_search``, hybrid list depths and section pools (a
document with two chunks in those 10 counts once, so fewer than 10 documents may be
ranked); Recall@100 from a k=200 search (:data:`CHUNKS_PER_QUERY`) filling 100 documents.
The time per query is that of the k=10 searches. The metrics follow the standard
(trec_eval) definitions: nDCG@10 with linear gains and log2 discounts against the ideal
ordering of all judged documents, Recall@100 over the documents judged relevant (score >
0), MRR@10 from the first relevant document. A query with no hits scores 0; the mean is
over every judged query. ``tests/test_eval.py`` checks the numbers against ranx on the
same runs.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragstore.chunking import chunk_document, document_hash, recipe
from ragstore.db import documents, repository
from ragstore.db.errors import translated
from ragstore.errors import CollectionNotFoundError, InputError, PathNotFoundError
from ragstore.modelops.specs import find_model
from ragstore.models import Block, Chunk, ChunkType, ParsedDocument
from ragstore.runtime import Runtime
from ragstore.search.service import MODES, Mode, SearchParams, run

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[str]]  # query id -> document ids, best first

METRICS = ("ndcg@10", "recall@100", "mrr@10")
DOCS_PER_QUERY = 100
CHUNKS_PER_QUERY = 200  # chunks fetched to fill DOCS_PER_QUERY documents (Recall@100)
# the search the @10 figures come from: until 2026-12 they were read off the k=200 lists,
# searched with another ef_search, hybrid list depths and section pools than a user's
TOP_K = 10
EVAL_PURPOSE = "eval"  # the "purpose" setting of a collection eval created


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: Qrels


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of a dataset file, each decoded as UTF-8: read as text, a byte
    that is not UTF-8 (a corpus saved as Latin-1) ended ``ragstore eval`` with a
    UnicodeDecodeError traceback rather than an error naming the file and line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}:{lineno}: not UTF-8 (byte {exc.start + 1} of the line); "
                    "save the file as UTF-8"
                ) from None


def _read_jsonl(path: Path) -> Iterable[dict[str, object]]:
    """The file's objects, each with an ``_id`` no earlier line had.

    A repeated id was kept silently, the last line winning: a corpus lost a document (or
    a query its text) without a word, and the figures measured another dataset."""
    first_seen: dict[str, int] = {}
    for lineno, row in _read_jsonl_rows(path):
        rid = str(row["_id"])
        if rid in first_seen:
            raise InputError(
                f"{path}:{lineno}: _id {rid!r} again (first on line {first_seen[rid]}); "
                "each line needs its own id: remove or rename the repeated one"
            )
        first_seen[rid] = lineno
        yield row


def _read_jsonl_rows(path: Path) -> Iterable[tuple[int, dict[str, object]]]:
    if not path.is_file():
        raise PathNotFoundError(
            f"{path}: no such file; a BEIR dataset directory holds "
            "corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
        )
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise InputError(f'{path}:{lineno}: expected an object with an "_id"')
        yield lineno, row


def read_qrels(path: Path) -> Qrels:
    if not path.is_file():
        raise PathNotFoundError(f"{path}: no such file; judgments go in qrels/<split>.tsv")
    qrels: Qrels = {}
    for lineno, line in _text_lines(path):
        parts = line.rstrip("\r\n").split("\t")
        if lineno == 1 and parts and parts[0] == "query-id":
            continue
        if len(parts) < 3:
            if line.strip():
                raise InputError(f"{path}:{lineno}: expected query-id, corpus-id, score")
            continue
        try:
            score = int(parts[2])
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {parts[2]!r} is not an integer") from None
        judged = qrels.setdefault(parts[0], {})
        if judged.get(parts[1], score) != score:
            # the last line won silently: which grade the figures used depended on order
            raise InputError(
                f"{path}:{lineno}: query {parts[0]!r} judges document {parts[1]!r} again "
                f"with score {score} (an earlier line gave {judged[parts[1]]}); keep one"
            )
        judged[parts[1]] = score
    return qrels


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """The corpus, the queries that have judgments in ``split``, and those judgments."""
    if not path.is_dir():
        raise PathNotFoundError(f"{path}: no such dataset directory")
    corpus = {
        str(r["_id"]): (str(r.get("title") or ""), str(r.get("text") or ""))
        for r in _read_jsonl(path / "corpus.jsonl")
    }
    qrels = read_qrels(path / "qrels" / f"{split}.tsv")
    queries = {
        str(r["_id"]): str(r.get("text") or "")
        for r in _read_jsonl(path / "queries.jsonl")
        if str(r["_id"]) in qrels
    }
    qrels = {q: d for q, d in qrels.items() if q in queries}
    # said here, before the ingest, naming the query: searched, a blank one ended the run
    # after the whole corpus was embedded with "the query is empty" and no word of which
    blank = [q for q, text in queries.items() if not text.strip()]
    if blank:
        more = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise InputError(
            f"{path / 'queries.jsonl'}: judged query {blank[0]!r}{more} has no text; give "
            f"it its text or remove its judgments from qrels/{split}.tsv"
        )
    return BeirDataset(path.resolve().name, corpus, queries, qrels)


def collection_name(dataset: str) -> str:
    return "eval-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", dataset) or "dataset")[:58]


# ---- ingest -----------------------------------------------------------------------------


def _record_hash(title: str, text: str, passage_prefix: str = "") -> str:
    """A record's document hash; the model's passage prefix in it, as for files
    (:func:`ragstore.chunking.document_hash`: chunks cut before it was counted are cut
    again)."""
    return document_hash(f"{title}\n{text}".encode(), None, passage_prefix)


def ingest_records(
    rt: Runtime,
    collection: str,
    records: Sequence[tuple[str, str, str]],
    *,
    batch_docs: int = 256,
    progress: Callable[[int, int], None] | None = None,
    removed: Callable[[list[str]], None] | None = None,
) -> int:
    """Store (id, title, text) records as documents (source = id); return how many were new.

    Each record is one paragraph, its title then its text, chunked and embedded like any
    document. Records whose content is already stored are skipped; changed ones replaced;
    stored documents whose source is no record id are deleted first (``removed`` is told
    which): kept, a record the corpus no longer holds went on being ranked, and counted
    as a miss, in every later run.
    """
    coll = _eval_collection(rt, collection)
    embedder = rt.embedder_for(coll)
    stale = _remove_stale(rt, coll, {r[0] for r in records})
    if stale and removed is not None:
        removed(stale)
    with rt.db.connection() as conn, translated("reading stored documents"):
        known = documents.document_hashes(conn, coll.id, [r[0] for r in records])
    prefix = str(coll.model.options.get("passage_prefix", ""))
    todo = [r for r in records if known.get(r[0], (0, ""))[1] != _record_hash(r[1], r[2], prefix)]
    done = 0
    for i in range(0, len(todo), batch_docs):
        batch = todo[i : i + batch_docs]
        docs: list[tuple[documents.DocumentRecord, list[Chunk]]] = []
        for doc_id, title, text in batch:
            body = f"{title}\n{text}".strip() if title else text.strip()
            if not body:
                continue
            parsed = ParsedDocument(
                "text", title or None, [Block(ChunkType.PARAGRAPH, body, 0, len(body))]
            )
            chunks = chunk_document(parsed, embedder, coll.model.max_tokens)
            record = documents.DocumentRecord(
                doc_id,
                title or None,
                "text",
                _record_hash(title, text, prefix),
                len(body.encode()),
                {"beir_id": doc_id},
                recipe.encode(parsed),
                origin="text",
            )
            docs.append((record, chunks))
        texts = [c.embed_text for _, chunks in docs for c in chunks if c.embeddable]
        vectors = np.asarray(embedder.embed(texts))
        writes = []
        offset = 0
        for record, chunks in docs:
            n = sum(1 for c in chunks if c.embeddable)
            writes.append(documents.DocumentWrite(record, chunks, vectors[offset : offset + n]))
            offset += n
        # one transaction per batch, through the shared write path (same as ingest)
        with rt.db.connection() as conn, translated(f"storing {len(writes)} records"):
            documents.write_documents(conn, coll, writes)
        done += len(batch)
        if progress:
            progress(done, len(todo))
    return len(todo)


def _remove_stale(rt: Runtime, coll: repository.Collection, ids: set[str]) -> list[str]:
    """Delete the collection's documents whose source is not in ``ids``; return them."""
    with rt.db.connection() as conn, translated(f"removing stale records of {coll.name!r}"):
        stale = [s for s in documents.sources_under(conn, coll.id, [""]) if s not in ids]
        if not stale:
            return []
        documents.hold_live(conn, coll)
        return documents.delete_sources(conn, coll.id, stale)


def _eval_collection(rt: Runtime, name: str) -> repository.Collection:
    """The scratch collection ``name``, created (marked ``purpose: eval``) if absent.

    An existing collection that eval did not create is refused: ``ragstore eval -c NOTES``
    added the whole corpus to the user's collection and replaced any of its documents
    whose source equals a record id (an upload named ``1``, say) with that record."""
    return scratch_collection(
        rt,
        name,
        purpose=EVAL_PURPOSE,
        command="ragstore eval",
        adds="the dataset's records to it and replace its documents whose source is a "
        "record id; leave --collection out (eval-<dataset>)",
        settings={"ts_config": "english"},
    )


def scratch_collection(
    rt: Runtime,
    name: str,
    *,
    purpose: str,
    command: str,
    adds: str,
    settings: Mapping[str, object] | None = None,
    unmarked_ok: bool = False,
) -> repository.Collection:
    """An evaluation's scratch collection ``name``: created with the setting ``purpose``
    when absent; an existing one must carry that mark (``unmarked_ok`` also lets one
    without any mark through: a scratch collection made before the mark existed).

    An evaluation adds its documents and replaces stored ones that share a source, so
    run into a user's own collection it changes the user's data; ``adds`` says what it
    would add, and how to name another collection, in the refusal."""
    try:
        coll = rt.collection(name)
    except CollectionNotFoundError:
        pass
    else:
        mark = coll.settings.get("purpose")
        if mark != purpose and not (unmarked_ok and mark is None):
            raise InputError(
                f"collection {name!r} was not created by `{command}`, and evaluating into "
                f"it would add {adds} or name a collection that does not exist yet"
            )
        return coll
    spec = find_model(rt, rt.settings.model).spec  # a built-in, or a model pinned by name
    with rt.db.connection() as conn, translated(f"creating collection {name!r}"):
        return repository.create_collection(
            conn, name, spec, {**(settings or {}), "purpose": purpose}
        )


# ---- metrics (pure) ---------------------------------------------------------------------


def ndcg_at(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(
        judged.get(d, 0) / math.log2(i + 2)
        for i, d in enumerate(ranked[:k])
        if judged.get(d, 0) > 0
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], judged: Mapping[str, int], k: int = 100) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def score_run(run_: Run, qrels: Qrels, deep: Run | None = None) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over every judged query: the @10 figures from
    ``run_``, Recall@100 from ``deep`` (the deeper search's lists) when given."""
    if not qrels:
        raise InputError("no judged queries to evaluate")
    totals = dict.fromkeys(METRICS, 0.0)
    for qid, judged in qrels.items():
        ranked = run_.get(qid, [])
        totals["ndcg@10"] += ndcg_at(ranked, judged, 10)
        totals["recall@100"] += recall_at(ranked if deep is None else deep.get(qid, []), judged)
        totals["mrr@10"] += mrr_at(ranked, judged, 10)
    return {m: v / len(qrels) for m, v in totals.items()}


# ---- running ----------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    queries: int
    seconds: float  # of the k=10 searches
    run: Run = field(repr=False, default_factory=dict)  # k=10: nDCG@10, MRR@10
    deep: Run = field(repr=False, default_factory=dict)  # k=200: Recall@100
    # nDCG@10 read off the k=200 lists, as BEIR reads it off deep retrieval: the figure the
    # issues' reference values (SciFact hybrid 0.714, ...) were taken as, kept beside
    deep_ndcg: float = 0.0

    @property
    def ms_per_query(self) -> float:
        return 1000 * self.seconds / max(self.queries, 1)


def run_queries(
    rt: Runtime, collection: str, queries: Mapping[str, str], params: SearchParams
) -> Run:
    """Document ids per query, best first (a document ranks where its best chunk does)."""
    out: Run = {}
    for qid, text in queries.items():
        docs: list[str] = []
        seen: set[str] = set()
        for hit in run(rt, text, collection, params):
            if hit.source not in seen:
                seen.add(hit.source)
                docs.append(hit.source)
        out[qid] = docs[:DOCS_PER_QUERY]
    return out


def evaluate(
    rt: Runtime,
    dataset: BeirDataset,
    collection: str,
    modes: Sequence[Mode] = MODES,
    **search: object,
) -> list[ModeResult]:
    """Score each mode on the dataset's judged queries (the corpus must be ingested): the
    @10 figures from k=10 searches, Recall@100 from k=200 ones (see the module's text)."""
    results = []
    for mode in modes:
        # benchmark queries are prose: "or" and "-" in them are words, not operators
        top = SearchParams(k=TOP_K, mode=mode, plain=True, **search)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        run_ = run_queries(rt, collection, dataset.queries, top)
        seconds = time.perf_counter() - t0
        deep_params = SearchParams(k=CHUNKS_PER_QUERY, mode=mode, plain=True, **search)  # type: ignore[arg-type]
        deep = run_queries(rt, collection, dataset.queries, deep_params)
        metrics = score_run(run_, dataset.qrels, deep)
        deep_ndcg = score_run(deep, dataset.qrels)["ndcg@10"]
        results.append(
            ModeResult(mode, metrics, len(dataset.queries), seconds, run_, deep, deep_ndcg)
        )
    return results
