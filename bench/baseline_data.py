"""Real MiniLM vectors of SciFact chunks, cached, and the synthetic-from-real sets built on them.

Real base: every SciFact abstract (title as a heading, then the text) parsed and chunked by
ragstore's own parser and chunker with a 64-token limit, so an abstract gives several
passage-sized chunks; each chunk is embedded with the pinned all-MiniLM-L6-v2 (normalised).
Queries: the SciFact queries embedded with the same model.

Synthetic-from-real (for sizes above the real count): row ``i`` is real chunk ``i mod R``
plus Gaussian noise N(0, sigma^2) in every dimension (sigma = 0.02 by default, a noise norm
of about 0.39 against a unit vector, cosine to its parent about 0.93), re-normalised to unit
length; the first R rows are the real vectors themselves. Seeded, so every run builds the
same set.

    python -m bench.baseline_data          # embeds once, caches under bench/results/baseline
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
CACHE = Path(__file__).resolve().parent / "results" / "baseline"
CHUNK_TOKENS = 64

Matrix = npt.NDArray[np.float32]


def _embed_real(cache: Path) -> tuple[Matrix, Matrix]:
    from ragstore.chunking import chunk_document
    from ragstore.embedding.registry import load_embedder, resolve_spec
    from ragstore.parsing import parse_bytes

    embedder = load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu", batch_size=128)
    texts: list[str] = []
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            md = f"# {doc['title']}\n\n{doc['text']}\n".encode()
            parsed = parse_bytes(md, f"{doc['_id']}.md", "markdown")
            texts += [
                c.embed_text for c in chunk_document(parsed, embedder, CHUNK_TOKENS) if c.embeddable
            ]
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()]
    t0 = time.perf_counter()
    order = np.argsort([len(t) for t in texts])  # length-sorted batches encode faster
    base = np.empty((len(texts), embedder.spec.dimension), dtype=np.float32)
    base[order] = embedder.embed([texts[i] for i in order])
    qvec = embedder.embed(queries)
    print(
        f"embedded {len(texts)} chunks and {len(queries)} queries "
        f"in {time.perf_counter() - t0:.0f}s"
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "scifact_chunks.npy", base)
    np.save(cache / "scifact_queries.npy", qvec)
    (cache / "scifact_chunks.json").write_text(json.dumps(texts))
    return base, qvec


def real_vectors(cache: Path = CACHE) -> tuple[Matrix, Matrix]:
    """(chunk vectors, query vectors), embedded on first use and cached."""
    if (cache / "scifact_chunks.npy").exists() and (cache / "scifact_queries.npy").exists():
        return np.load(cache / "scifact_chunks.npy"), np.load(cache / "scifact_queries.npy")
    return _embed_real(cache)


def synthetic(base: Matrix, n: int, sigma: float = 0.02, seed: int = 0) -> Matrix:
    """``n`` unit vectors: the real ones first, then noisy re-normalised copies of them."""
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    r = min(n, len(base))
    out[:r] = base[:r]
    rng = np.random.default_rng(seed)
    step = 100_000
    for start in range(r, n, step):
        stop = min(n, start + step)
        parents = base[np.arange(start, stop) % len(base)]
        block = parents + rng.normal(0.0, sigma, parents.shape).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    base, queries = real_vectors(args.cache)
    print(f"{len(base)} real chunk vectors, {len(queries)} query vectors, dim {base.shape[1]}")


if __name__ == "__main__":
    main()
