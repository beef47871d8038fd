"""Encode time of a folder's chunk texts with each torch intra-op thread count, alternated.

Chunks the folder as ingest does, takes every ``--step``-th embedded text, and encodes them
``--rounds`` times with each thread count in turn (one process, the same texts), printing
wall and CPU seconds: on a CPU that other processes keep busy, the wall time of more
threads can exceed that of fewer at equal CPU time (a thread waits for a descheduled
sibling at every layer).

    python -m bench.encode_threads ../shared/data/nodejs-api/docs --threads 2 1 --limit 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ragstore.chunking import chunk_document
from ragstore.embedding.local import set_threads
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.files import discover
from ragstore.parsing import parse_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--step", type=int, default=10, help="every STEP-th embedded text")
    ap.add_argument("--limit", type=int, default=300, help="at most this many texts")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    spec = resolve_spec("all-MiniLM-L6-v2")
    embedder = load_embedder(spec, device="cpu")
    files = discover([args.folder]).files
    texts = [
        c.embed_text
        for f in files
        for c in chunk_document(parse_bytes(f.read_bytes(), str(f)), embedder, spec.max_tokens)
        if c.embeddable
    ][: args.limit * args.step : args.step]
    tokens = sum(embedder.count_tokens(texts))
    print(f"{len(texts)} texts, {tokens} tokens", flush=True)
    embedder.embed(texts[:16])  # warm-up
    for _ in range(args.rounds):
        for n in args.threads:
            set_threads(n)
            t0, c0 = time.perf_counter(), time.process_time()
            embedder.embed(texts)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"threads {n}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)


if __name__ == "__main__":
    main()
