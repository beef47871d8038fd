"""Late chunking on a long-document question set, offline (issue 19; tried, not kept).

    python -m bench.longdoc_late ../shared/data/nodejs-api --cache /tmp/vcache \\
        --window 512 --pool path --mix 0.3 --mix 0.5

Each chunk ingest makes is read as today (section path + text) and, for a section of two
or more chunks, also inside a longer pass: the section's path and as many of its
consecutive chunks as fit in ``--window`` tokens go through the model at once, and the
chunk's vector is the mean of its own tokens' outputs (with the path's and the special
tokens' under ``--pool path``, as the model's own mean pooling has them), so that it is
read in its section's context (Günther et al., "Late Chunking", 2024). The chunk's
vector is then that alone or mixed with today's vector (``--mix λ``: λ·late + (1-λ)·now,
normalised). Needs the local sentence-transformers model (its token outputs). Sections are
ranked as :mod:`bench.longdoc_variants` ranks them; vectors of today's texts come from its
cache. Why it was not kept: docs/benchmarks.md, "Late chunking".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from bench import longdoc_variants as LV
from ragstore.chunking import chunk_document
from ragstore.config import Settings
from ragstore.embedding.local import SentenceTransformerEmbedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import Chunk, ParsedDocument
from ragstore.parsing import parse_bytes
from ragstore.search import sections as S


@dataclass(frozen=True)
class Pass:
    """One text through the model and the units whose vectors pool from it."""

    text: str
    path_span: tuple[int, int] | None  # characters of the section path in ``text``
    pooled: list[tuple[int, tuple[int, int]]]  # (unit index, its characters in ``text``)


def _sections(chunks: list[Chunk]) -> list[list[Chunk]]:
    """Consecutive embeddable chunks of one section (same parent, same path read)."""
    out: list[list[Chunk]] = []
    for ch in chunks:
        last = out[-1][0] if out else None
        if last is not None and (last.parent_ordinal, last.context) == (
            ch.parent_ordinal,
            ch.context,
        ):
            out[-1].append(ch)
        else:
            out.append([ch])
    return out


def plan(
    docs: dict[str, ParsedDocument],
    embedder: SentenceTransformerEmbedder,
    max_tokens: int,
    window: int,
) -> tuple[list[LV.Unit], list[Pass]]:
    """The units (today's chunks) and the passes that read them in context: a section's
    chunks packed greedily into passes of at most ``window`` tokens, path included."""
    units: list[LV.Unit] = []
    passes: list[Pass] = []
    for name, doc in docs.items():
        chunks = [c for c in chunk_document(doc, embedder, max_tokens) if c.embeddable]
        for group in _sections(chunks):
            first = len(units)
            for ch in group:
                section = None if ch.parent_ordinal is None else ch.parent_ordinal + 1
                units.append(LV.Unit(name, section, LV._headings(ch), ch.embed_text, ch.ordinal))
            ctx = group[0].context
            path_tokens = embedder.count_tokens([ctx])[0] if ctx else 0
            sizes = embedder.count_tokens([c.text for c in group])
            packs: list[list[int]] = [[]]
            used = path_tokens
            for i, size in enumerate(sizes):
                if packs[-1] and used + size > window - 2:
                    packs.append([])
                    used = path_tokens
                packs[-1].append(i)
                used += size
            for pack in packs:
                text = f"{ctx}\n" if ctx else ""
                pooled = []
                for i in pack:
                    if text and not text.endswith("\n"):
                        text += "\n\n"
                    start = len(text)
                    text += group[i].text
                    pooled.append((first + i, (start, len(text))))
                passes.append(Pass(text, (0, len(ctx)) if ctx else None, pooled))
    return units, passes


def _tokens_within(
    offsets: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_], span: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """The real tokens whose characters lie in ``span``."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    return mask & (ends > starts) & (starts >= span[0]) & (ends <= span[1])


def late_vectors(
    embedder: SentenceTransformerEmbedder,
    units: int,
    passes: Sequence[Pass],
    window: int,
    pool: str,
) -> npt.NDArray[np.float32]:
    """Each unit's vector pooled from its pass's token outputs (mean, then normalised)."""
    model = embedder.model[0].auto_model
    tokenizer = embedder.tokenizer
    out = np.zeros((units, model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(passes)), key=lambda j: len(passes[j].text))
    with torch.inference_mode():
        for b in range(0, len(order), 8):
            batch = [passes[j] for j in order[b : b + 8]]
            enc = tokenizer(
                [p.text for p in batch],
                padding=True,
                truncation=True,
                max_length=window,
                return_offsets_mapping=True,
                return_tensors="pt",
            )
            offsets = enc.pop("offset_mapping").numpy()
            hidden = model(**enc).last_hidden_state
            for r, p in enumerate(batch):
                mask = enc["attention_mask"][r].numpy().astype(bool)
                for unit, span in p.pooled:
                    sel = _tokens_within(offsets[r], mask, span)
                    if pool == "path":
                        special = (offsets[r, :, 1] == 0) & mask  # [CLS], [SEP]
                        sel |= special
                        if p.path_span is not None:
                            sel |= _tokens_within(offsets[r], mask, p.path_span)
                    vec = hidden[r][torch.from_numpy(sel if sel.any() else mask)].mean(0).numpy()
                    out[unit] = vec / np.linalg.norm(vec)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set_dir", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="bench.longdoc_variants' cache")
    ap.add_argument("--window", type=int, default=512, help="tokens per pass (≤ 512)")
    ap.add_argument("--pool", choices=("path", "chunk"), default="path")
    ap.add_argument("--mix", type=float, action="append", default=[])
    ap.add_argument("--split", type=int, default=20, help="last tuning question (default 20)")
    args = ap.parse_args(argv)
    spec = resolve_spec(Settings().model)
    embedder = load_embedder(spec, device="cpu")
    if not isinstance(embedder, SentenceTransformerEmbedder):
        raise SystemExit(f"{spec.key}: late chunking needs a local model's token outputs")
    cache = LV.VectorCache(args.cache, embedder, spec.key)
    questions = S.load_questions(args.set_dir / "questions.tsv")
    raw = S.read_docs(args.set_dir / "docs")
    docs = {name: parse_bytes(text.encode(), name) for name, text in raw.items()}
    qvecs = cache.get([q.text for q in questions])
    units, passes = plan(docs, embedder, spec.max_tokens, args.window)
    now = cache.get([u.text for u in units])
    t0 = time.perf_counter()
    late = late_vectors(embedder, len(units), passes, args.window, args.pool)
    seconds = time.perf_counter() - t0

    def score(matrix: npt.NDArray[np.float32]) -> dict[str, list[int]]:
        return LV.halves(LV.vector_ranks(units, matrix, questions, qvecs), args.split)

    report: dict[str, object] = {
        "units": len(units),
        "passes": len(passes),
        "late_encode_s": round(seconds, 1),
        "late_tokens": sum(embedder.count_tokens([p.text for p in passes])),
        "now_tokens": sum(embedder.count_tokens([u.text for u in units])),
        "now": score(now),
        "late": score(late),
    }
    for lam in args.mix:
        mixed = lam * late + (1 - lam) * now
        report[f"mix {lam}"] = score(mixed / np.linalg.norm(mixed, axis=1, keepdims=True))
    print(json.dumps(report, indent=1))
    print(f"window {args.window} pool {args.pool}", file=sys.stderr)


if __name__ == "__main__":
    main()
