"""One query's encode on each path, interleaved per query in one process.

Paths: ragstore's single-text path with the written-out BERT forward
(``embedding/bert_forward.py``), the same single-text path through the Hugging Face
``BertModel``, and sentence-transformers' ``encode`` of a one-text list (what Chroma's
embedding function calls). Every query is encoded by each path in turn (order rotated per
query), so the paths share the machine's load; reported are the p50 of each, the median
per-query ratio to ``encode`` and the largest difference from ``encode``'s vector.

    PYTHONPATH=src:. python -m bench.query_encode --queries 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

QUERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "queries.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--file", type=Path, default=QUERIES)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from ragstore.embedding.local import SentenceTransformerEmbedder
    from ragstore.embedding.registry import load_embedder, resolve_spec

    torch.set_num_threads(args.threads)
    embedder = load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu")
    assert isinstance(embedder, SentenceTransformerEmbedder) and embedder._single is not None
    single = embedder._single
    fast = single.forward
    assert fast is not None, "the written-out forward was not taken for MiniLM"
    with args.file.open() as fh:
        queries = [json.loads(line)["text"] for line in fh][: args.queries]

    def ours(text: str, forward: object) -> np.ndarray:
        single.forward = forward
        with torch.inference_mode():
            return single(text)

    paths: dict[str, Callable[[str], np.ndarray]] = {
        "written-out forward": lambda t: ours(t, fast),
        "BertModel forward": lambda t: ours(t, None),
        "sentence-transformers encode": lambda t: embedder.model.encode([t], convert_to_numpy=True),
    }
    names = list(paths)
    for q in queries[:10]:  # warm-up
        for name in names:
            paths[name](q)
    times: dict[str, list[float]] = {name: [] for name in names}
    diff = {name: 0.0 for name in names}
    for i, q in enumerate(queries):
        vecs = {}
        for name in names[i % 3 :] + names[: i % 3]:
            t0 = time.perf_counter()
            vecs[name] = paths[name](q)
            times[name].append(time.perf_counter() - t0)
        ref = vecs[names[2]]
        for name in names:
            diff[name] = max(diff[name], float(np.abs(vecs[name] - ref).max()))
    single.forward = fast
    base = times[names[2]]
    print(f"{len(queries)} queries, {args.threads} threads, load {os.getloadavg()}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(times[name], base, strict=True))
        print(
            f"{name:30s} p50 {1000 * statistics.median(times[name]):6.2f} ms  "
            f"per-query ratio to encode {ratio:.3f}  max |diff| {diff[name]:.1e}"
        )


if __name__ == "__main__":
    main()
