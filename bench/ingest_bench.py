"""Ingest throughput against the model's raw encode throughput, and search latency.

Writes N SciFact abstracts (or any folder you give) as Markdown files, then, in one process:
starts the embedded server and creates the schema (timed apart: once per data dir), then
alternates raw encodes of the exact texts the pipeline will embed with ingests of the folder
into fresh collections (``--repeat`` of them), re-ingests the unchanged folder, and times
searches. Each ingest's overhead = its time / the mean of the encodes either side - 1; the
median is reported with every run's figure.

    python -m bench.ingest_bench --docs 400 --repeat 3
    python -m bench.ingest_bench --folder path/to/docs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.scifact import SCIFACT, records
from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import resolve_spec
from ragstore.files import discover
from ragstore.ingest import ingest_paths
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search import search


def write_scifact(folder: Path, n: int) -> list[str]:
    """N SciFact abstracts as Markdown files; returns the test queries' texts."""
    for doc in records(n):
        (folder / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n")
    with (SCIFACT / "queries.jsonl").open() as fh:
        return [json.loads(line)["text"] for line in fh][:300]


def pipeline_texts(rt: Runtime, folder: Path) -> list[str]:
    """The unique texts the pipeline sends to the model for this folder."""
    spec = resolve_spec(rt.settings.model)
    embedder = rt.embedder(spec)
    files = discover([folder]).files
    texts: dict[str, str] = {}
    for f in files:
        parsed = parse_bytes(f.read_bytes(), str(f))
        for c in chunk_document(parsed, embedder, spec.max_tokens):
            if c.embeddable:
                texts.setdefault(c.content_hash, c.embed_text)
    return list(texts.values())


def _encode_seconds(embedder: Embedder, texts: list[str]) -> float:
    t0 = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000, help="SciFact documents to use")
    ap.add_argument("--folder", type=Path, help="ingest this folder instead of SciFact")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="ingests, each into a fresh collection, between encode runs",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragstore-bench-"))
    folder = args.folder
    queries = ["how do cells repair DNA damage?"] * args.queries
    if folder is None:
        folder = work / "docs"
        folder.mkdir()
        queries = write_scifact(folder, args.docs)[: args.queries]
    rt = Runtime(Settings(data_dir=work / "data"))
    spec = resolve_spec(rt.settings.model)
    embedder = rt.embedder(spec)
    texts = pipeline_texts(rt, folder)
    embedder.embed(texts[:64])  # warm-up

    t0 = time.perf_counter()
    rt.collection("bench", create=True)  # the server start and schema are paid once per data dir
    db_start = time.perf_counter() - t0

    # Interleaved: encode, ingest into a fresh collection, encode, ...; each ingest is
    # compared with the mean of the encodes either side of it, so drifting load cancels.
    encodes = [_encode_seconds(embedder, texts)]
    reports = []
    for i in range(args.repeat):
        report = ingest_paths(rt, [folder], "bench" if i == 0 else f"bench{i}")
        assert not report.failed, report.failed
        reports.append(report)
        encodes.append(_encode_seconds(embedder, texts))
    overheads = [r.seconds / ((encodes[i] + encodes[i + 1]) / 2) - 1 for i, r in enumerate(reports)]
    median = statistics.median_low(overheads)
    report = reports[overheads.index(median)]
    encode = statistics.mean(encodes)

    reingest = ingest_paths(rt, [folder], "bench")
    assert reingest.count("unchanged") == len(reports[0].outcomes)
    assert reingest.embedded == 0

    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        search(rt, q, collection="bench", k=10)
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]

    n = len(texts)
    result = {
        "documents": len(report.outcomes),
        "chunks_stored": report.chunks,
        "texts_embedded": n,
        "db_start_and_schema_s": round(db_start, 2),
        "raw_encode_s": round(encode, 2),
        "raw_encode_texts_per_s": round(n / encode, 1),
        "ingest_s": round(report.seconds, 2),
        "ingest_chunks_per_s": round(report.chunks / report.seconds, 1),
        "ingest_embedded_per_s": round(report.embedded / report.seconds, 1),
        "overhead_vs_encode_median": f"{median * 100:.1f}%",
        "overhead_vs_encode_each": [f"{o * 100:.1f}%" for o in overheads],
        "encode_runs_s": [round(e, 2) for e in encodes],
        "reingest_unchanged_s": round(reingest.seconds, 2),
        "reingest_speedup": round(report.seconds / reingest.seconds, 1),
        "search_p50_ms": round(statistics.median(latencies), 2),
        "search_p99_ms": round(p99, 2),
        "queries": len(latencies),
    }
    print(json.dumps(result, indent=2))
    rt.close()


if __name__ == "__main__":
    main()
