"""The pinned model's encode rate on a GPU, and whether its vectors there match the CPU's.

Encodes the texts ragstore's own chunker cuts from a folder (the real chunk texts, each once)
with the pinned all-MiniLM-L6-v2 through ``SentenceTransformerEmbedder``, the path ingest
uses: on the GPU at each ``--batches`` size, and on the CPU for the first ``--cpu-texts``
texts. Reports texts/s and tokens/s per run, and the cosine between the GPU's and the CPU's
vector of each text (a device must not change what is stored: a collection filled on a GPU
is searched with query vectors made on a CPU, and the other way round). ``--half`` adds the
model in fp16 on the GPU, only as a figure (its vectors are not the pinned model's).

Runs on a machine without a GPU too (then only the CPU rows), so it can be tried here first.

    python -m bench.gpu_encode ../shared/data/nodejs-api/docs --batches 64,256,1024
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.chunking import chunk_document
from ragstore.embedding.local import SentenceTransformerEmbedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.files import discover
from ragstore.parsing import parse_bytes


def chunk_texts(folder: Path, embedder: Any, max_tokens: int) -> list[str]:
    """The distinct texts ingest would send to the model for this folder."""
    found = discover([folder])
    texts: dict[str, str] = {}
    for f in found.files:
        parsed = parse_bytes(f.read_bytes(), str(f))
        for c in chunk_document(parsed, embedder, max_tokens):
            if c.embeddable:
                texts.setdefault(c.content_hash, c.embed_text)
    return list(texts.values())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(embedder: Any, texts: list[str], device: str, rounds: int) -> tuple[float, np.ndarray]:
    """The fastest of ``rounds`` full encodes (after a warm-up), and the vectors."""
    embedder.embed(texts[:256])
    best = float("inf")
    out = np.zeros(0)
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        out = embedder.embed(texts)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="documents whose chunk texts are encoded")
    ap.add_argument("--batches", default="64,256,1024", help="GPU batch sizes to time")
    ap.add_argument("--cpu-texts", type=int, default=1000, help="texts encoded on the CPU too")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--half", action="store_true", help="also time the model in fp16 (GPU)")
    args = ap.parse_args()

    import torch

    spec = resolve_spec("all-MiniLM-L6-v2")
    cpu = load_embedder(spec, device="cpu", batch_size=64)
    t0 = time.perf_counter()
    texts = chunk_texts(args.folder, cpu, spec.max_tokens)
    tokens = sum(cpu.count_tokens(texts))
    result: dict[str, Any] = {
        "machine": {
            "cpus": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "texts": len(texts),
        "tokens": tokens,
        "chunking_s": round(time.perf_counter() - t0, 2),
        "runs": [],
    }

    sample = texts[: args.cpu_texts]
    cpu_s, cpu_vecs = timed(cpu, sample, "cpu", 1)
    result["runs"].append(
        {"device": "cpu", "batch": 64, "texts": len(sample), "texts_per_s": len(sample) / cpu_s}
    )
    if torch.cuda.is_available():
        for batch in (int(b) for b in args.batches.split(",")):
            gpu = load_embedder(spec, device="cuda", batch_size=batch)
            seconds, vecs = timed(gpu, texts, "cuda", args.rounds)
            row = {
                "device": "cuda",
                "batch": batch,
                "texts": len(texts),
                "seconds": round(seconds, 3),
                "texts_per_s": round(len(texts) / seconds, 1),
                "tokens_per_s": round(tokens / seconds),
                "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                "vs_cpu": cosines(vecs[: len(sample)], cpu_vecs),
            }
            result["runs"].append(row)
            if args.half and batch == max(int(b) for b in args.batches.split(",")):
                assert isinstance(gpu, SentenceTransformerEmbedder)
                half = copy.copy(gpu)
                half.model = copy.deepcopy(gpu.model).half()
                seconds_h, vecs_h = timed(half, texts, "cuda", args.rounds)
                result["runs"].append(
                    {
                        "device": "cuda fp16 (not the pinned model)",
                        "batch": batch,
                        "texts_per_s": round(len(texts) / seconds_h, 1),
                        "vs_fp32_gpu": cosines(vecs_h.astype(np.float32), vecs),
                    }
                )
            del gpu
            torch.cuda.empty_cache()
    for row in result["runs"]:
        if "texts_per_s" in row:
            row["texts_per_s"] = round(row["texts_per_s"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
