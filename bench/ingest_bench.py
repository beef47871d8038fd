"""Ingest throughput against the model's raw encode throughput, and search latency.

Writes N SciFact abstracts (or any folder you give) as Markdown files, then, in one process:
encodes the exact texts the pipeline will embed (raw model throughput), ingests the folder
into a fresh embedded database (pipeline throughput), encodes again, re-ingests the unchanged
folder, and times searches. Overhead = pipeline time / mean raw encode time - 1.

    python -m bench.ingest_bench --docs 1000
    python -m bench.ingest_bench --folder path/to/docs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.registry import resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.ingest.files import discover
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search import search

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def write_scifact(folder: Path, n: int) -> list[str]:
    """N SciFact abstracts as Markdown files; returns the test queries' texts."""
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            doc = json.loads(line)
            (folder / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n")
    with (SCIFACT / "queries.jsonl").open() as fh:
        return [json.loads(line)["text"] for line in fh][:300]


def pipeline_texts(rt: Runtime, folder: Path) -> list[str]:
    """The unique texts the pipeline sends to the model for this folder."""
    spec = resolve_spec(rt.settings.model)
    embedder = rt.embedder(spec)
    files, _ = discover([folder])
    texts: dict[str, str] = {}
    for f in files:
        parsed = parse_bytes(f.read_bytes(), str(f))
        for c in chunk_document(parsed, embedder, spec.max_tokens):
            if c.embeddable:
                texts.setdefault(c.content_hash, c.embed_text)
    return list(texts.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000, help="SciFact documents to use")
    ap.add_argument("--folder", type=Path, help="ingest this folder instead of SciFact")
    ap.add_argument("--queries", type=int, default=200)
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
    embedder.embed(texts)
    encode_1 = time.perf_counter() - t0

    report = ingest_paths(rt, [folder], "bench")
    assert not report.failed, report.failed

    t0 = time.perf_counter()
    embedder.embed(texts)
    encode_2 = time.perf_counter() - t0
    encode = (encode_1 + encode_2) / 2

    reingest = ingest_paths(rt, [folder], "bench")
    assert reingest.count("unchanged") == len(report.outcomes)

    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        search(rt, q, collection="bench", k=10)
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]

    n = len(texts)
    result = {
        "documents": len(report.outcomes), "chunks_stored": report.chunks, "texts_embedded": n,
        "raw_encode_s": round(encode, 2), "raw_encode_texts_per_s": round(n / encode, 1),
        "ingest_s": round(report.seconds, 2),
        "ingest_chunks_per_s": round(report.chunks / report.seconds, 1),
        "ingest_embedded_per_s": round(report.embedded / report.seconds, 1),
        "overhead_vs_encode": f"{(report.seconds / encode - 1) * 100:.1f}%",
        "reingest_unchanged_s": round(reingest.seconds, 2),
        "reingest_speedup": round(report.seconds / reingest.seconds, 1),
        "search_p50_ms": round(statistics.median(latencies), 2), "search_p99_ms": round(p99, 2),
        "queries": len(latencies),
    }
    print(json.dumps(result, indent=2))
    rt.close()


if __name__ == "__main__":
    main()
