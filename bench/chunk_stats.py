"""Chunk count, chunk length distribution and chunking speed for a folder of documents.

Parses and chunks every file with the default model's tokenizer (nothing is embedded or
stored) and reports how many chunks the model would read, how long they are in tokens and
words, and the seconds spent parsing and chunking:

    python -m bench.chunk_stats ../shared/data/nodejs-api/docs
    python -m bench.chunk_stats ../shared/data/nodejs-api/docs --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.ingest.files import discover
from ragstore.parsing import parse_bytes


def stats(folder: Path) -> dict[str, object]:
    spec = resolve_spec(Settings().model)
    embedder = load_embedder(spec, device="cpu")
    files, _ = discover([folder])
    parse_s = chunk_s = 0.0
    chunks = []
    for f in files:
        data = f.read_bytes()
        t0 = time.perf_counter()
        parsed = parse_bytes(data, str(f))
        t1 = time.perf_counter()
        chunks.extend(chunk_document(parsed, embedder, spec.max_tokens))
        t2 = time.perf_counter()
        parse_s += t1 - t0
        chunk_s += t2 - t1
    embedded = [c for c in chunks if c.embeddable]
    tokens = np.array([c.token_count for c in embedded])
    words = np.array([len(c.text.split()) for c in embedded])

    def dist(a: np.ndarray) -> dict[str, float]:
        pct = np.percentile(a, [10, 50, 90]) if len(a) else [0, 0, 0]
        return {"mean": round(float(a.mean()), 1) if len(a) else 0.0,
                "p10": float(pct[0]), "p50": float(pct[1]), "p90": float(pct[2]),
                "max": float(a.max()) if len(a) else 0.0}

    return {"files": len(files), "chunks": len(chunks), "embedded": len(embedded),
            "unique_embedded": len({c.content_hash for c in embedded}),
            "tokens": dist(tokens), "words": dist(words),
            "at_token_limit": int((tokens >= spec.max_tokens - 8).sum()),
            "parse_seconds": round(parse_s, 2), "chunk_seconds": round(chunk_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = stats(args.folder)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
