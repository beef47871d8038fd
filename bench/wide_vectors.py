"""Vector search on spaces of 384, 1,536 and 3,072 dimensions: the last indexed over its
half-precision cast (pgvector's HNSW takes at most 2,000 dimensions of ``vector``).

    RAGSTORE_DATA_DIR=/tmp/wide-bench python -m bench.wide_vectors --size 20000

Each size is a collection of vectors made outside ragstore (``create_collection(...,
dimension=N)``, ``add_texts(..., vectors=...)``), written through ragstore's own write path
in batches of 1,000 into a space whose HNSW index exists (so each vector is an index
insert, as a later load's are). The vectors are clustered (400 random unit centres, each
point its centre plus Gaussian noise, normalised): uniform noise in 3,072 dimensions has
no neighbours worth the name and would make every index look bad. Queries are points
of the set moved by more noise. Reported per dimension: write rate, search p50 / p90
(``Store.search(vector=..., mode="vector", k=10, sections=False)``, one client) and
recall@10 against exact cosine in numpy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ragstore import Store


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((400, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, len(centres), n)]
    points = points + rng.normal(0, 1.2 / np.sqrt(dim), (n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def run(store: Store, dim: int, size: int, queries: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    vectors = clustered(size, dim, rng)
    name = f"wide-bench-{dim}"
    if name in {c["name"] for c in store.list_collections()}:
        store.delete_collection(name)
    store.create_collection(name, model=f"outside-{dim}", dimension=dim)
    t0 = time.perf_counter()
    for i in range(0, size, 1000):
        ids = [f"v{j}" for j in range(i, min(size, i + 1000))]
        store.add_texts(name, [f"text {x}" for x in ids], ids=ids, vectors=vectors[i : i + 1000])
    write_s = time.perf_counter() - t0
    picks = rng.choice(size, queries, replace=False)
    qs = vectors[picks] + rng.normal(0, 0.6 / np.sqrt(dim), (queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    exact = np.argsort(-(qs @ vectors.T), axis=1)[:, :10]
    store.search(name, vector=qs[0].tolist(), k=10, mode="vector", sections=False)  # warm
    times, recalls = [], []
    for q, truth in zip(qs, exact, strict=True):
        t = time.perf_counter()
        hits = store.search(name, vector=q.tolist(), k=10, mode="vector", sections=False)
        times.append(time.perf_counter() - t)
        found = {int(h["text"].split(" v")[1]) for h in hits["data"]}
        recalls.append(len(found & {int(x) for x in truth}) / 10)
    return {
        "dimension": dim,
        "vectors": size,
        "write_vectors_per_s": round(size / write_s, 1),
        "search_p50_ms": round(1000 * float(np.percentile(times, 50)), 2),
        "search_p90_ms": round(1000 * float(np.percentile(times, 90)), 2),
        "recall_at_10": round(float(np.mean(recalls)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 1536, 3072])
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    with Store() as store:
        for dim in args.dims:
            print(json.dumps(run(store, dim, args.size, args.queries, args.seed)), flush=True)


if __name__ == "__main__":
    main()
