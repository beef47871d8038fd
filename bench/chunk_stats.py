"""Chunk count, chunk length distribution and chunking speed for a folder of documents.

Parses and chunks every file with the default model's tokenizer (nothing is embedded or
stored) and reports how many chunks the model would read, how long they are in tokens and
words, and the seconds spent parsing and chunking:

    python -m bench.chunk_stats ../shared/data/nodejs-api/docs
    python -m bench.chunk_stats ../shared/data/nodejs-api/docs --against 7c19559

``--against REV`` also runs the chunker of git revision REV (its ``chunking/chunker.py``,
loaded from git into this process) on the same parsed documents, alternating per file, so
the two are compared in one run under the same load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.files import discover
from ragstore.parsing import parse_bytes


def old_chunker(rev: str) -> Callable[..., Any]:
    """``chunk_document`` of the chunker at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/ragstore/chunking/chunker.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"chunker_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module.chunk_document  # type: ignore[no-any-return]


def stats(folder: Path, against: str | None = None) -> dict[str, object]:
    spec = resolve_spec(Settings().model)
    embedder = load_embedder(spec, device="cpu")
    files = discover([folder]).files
    chunkers: dict[str, Callable[..., Any]] = {"new": chunk_document}
    if against:
        chunkers[against] = old_chunker(against)
    parse_s = 0.0
    seconds = dict.fromkeys(chunkers, 0.0)
    out: dict[str, list[Any]] = {name: [] for name in chunkers}
    for f in files:
        data = f.read_bytes()
        t0 = time.perf_counter()
        parsed = parse_bytes(data, str(f))
        parse_s += time.perf_counter() - t0
        for name, chunk in chunkers.items():
            t1 = time.perf_counter()
            out[name].extend(chunk(parsed, embedder, spec.max_tokens))
            seconds[name] += time.perf_counter() - t1
    result = {
        name: summary(chunks, spec.max_tokens) | {"chunk_seconds": round(seconds[name], 2)}
        for name, chunks in out.items()
    }
    return {"files": len(files), "parse_seconds": round(parse_s, 2), **result}


def summary(chunks: list[Any], max_tokens: int) -> dict[str, object]:
    embedded = [c for c in chunks if c.embeddable]
    tokens = np.array([c.token_count for c in embedded])
    words = np.array([len(c.text.split()) for c in embedded])

    def dist(a: np.ndarray) -> dict[str, float]:
        pct = np.percentile(a, [10, 50, 90]) if len(a) else [0, 0, 0]
        return {
            "mean": round(float(a.mean()), 1) if len(a) else 0.0,
            "p10": float(pct[0]),
            "p50": float(pct[1]),
            "p90": float(pct[2]),
            "max": float(a.max()) if len(a) else 0.0,
        }

    return {
        "chunks": len(chunks),
        "embedded": len(embedded),
        "unique_embedded": len({c.content_hash for c in embedded}),
        "embedded_tokens": int(tokens.sum()),
        "tokens": dist(tokens),
        "words": dist(words),
        "at_token_limit": int((tokens >= max_tokens - 8).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--against", metavar="REV", help="also run the chunker of this git revision")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = stats(args.folder, args.against)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
