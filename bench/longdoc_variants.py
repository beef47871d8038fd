"""Vector section hits of chunking and embedding variants on a long-document question set,
offline: no database, vectors cached by text so that only what a variant changes is encoded.

    python -m bench.longdoc_variants ../shared/data/nodejs-api --cache /tmp/vcache \\
        --variant current --variant prefix=last --variant max_tokens=128 \\
        --variant summaries=prose --json

Each variant parses and chunks the set's ``docs/`` as ingest would (``max_tokens=N``: a
smaller chunk budget than the model's) and embeds what the model would read:
``prefix=full`` (the section path, as ingest does), ``last`` (the last heading only) or
``none``; ``neighbour=N`` puts the last N words of the previous chunk of the section
between the path and the text; ``summaries=prose`` adds one vector per section of two or
more chunks, the path and the section's paragraphs (``all``: all its blocks in order; the
model reads the first ``max_seq_length`` tokens). Every vector is ranked by exact cosine
and sections by :func:`ragstore.search.aggregate.rank_sections` (the search statement's
rule, a pool of ``SECTION_POOL``). It reports the vector mode's top-1 / top-3 section hits
per half of the questions (1-20 for tuning, the rest reported) beside ``windows-dense``,
the naive baseline. ``--feedback M:W`` also ranks each variant with every question's
vector moved towards the mean of its M nearest units by weight W (pseudo-relevance
feedback). Full-text and hybrid need the stored collection: use
``ragstore eval-sections``. Encoding ~1M tokens takes minutes on a small CPU; the cache
(``--cache DIR``, one file per model) keeps every text's vector between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragstore.chunking import chunk_document, chunker
from ragstore.config import Settings
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import Chunk, ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search import sections as S
from ragstore.search.aggregate import SECTION_POOL, Candidate, rank_sections
from ragstore.search.hybrid import FusionParams, rrf
from ragstore.search.service import MIN_CANDIDATES, SearchParams, run

PREFIXES = ("full", "last", "none")
SUMMARIES = ("none", "prose", "all", "lead")


@dataclass(frozen=True)
class Variant:
    name: str
    max_tokens: int | None = None
    prefix: str = "full"
    summaries: str = "none"
    neighbour: int = 0  # words of the previous chunk of the section read before the text
    tiny: int | None = None  # the chunker's TINY_SECTION_SHARE (sections merged below 1/N)
    para: int = 0  # also a vector per paragraph of N+ words in a chunk of several paragraphs


def parse_variant(spec: str) -> Variant:
    """``current`` or comma-separated ``key=value`` (max_tokens, prefix, summaries,
    neighbour, tiny: the chunker's TINY_SECTION_SHARE for this variant)."""
    fields: dict[str, str] = {}
    if spec != "current":
        for item in spec.split(","):
            key, _, value = item.partition("=")
            fields[key.strip()] = value.strip()
    unknown = set(fields) - {"max_tokens", "prefix", "summaries", "neighbour", "tiny", "para"}
    prefix, summaries = fields.get("prefix", "full"), fields.get("summaries", "none")
    if unknown or prefix not in PREFIXES or summaries not in SUMMARIES:
        raise SystemExit(
            f"--variant {spec!r}: give 'current' or max_tokens=N,prefix={'|'.join(PREFIXES)},"
            f"summaries={'|'.join(SUMMARIES)},neighbour=WORDS,tiny=N"
        )
    tokens = int(fields["max_tokens"]) if "max_tokens" in fields else None
    tiny = int(fields["tiny"]) if "tiny" in fields else None
    return Variant(
        spec,
        tokens,
        prefix,
        summaries,
        int(fields.get("neighbour", 0)),
        tiny,
        int(fields.get("para", 0)),
    )


@dataclass(frozen=True)
class Unit:
    """One vector: where it comes from and the section it counts for."""

    file: str
    section: int | None  # heading ordinal + 1; None outside any section
    headings: tuple[str, ...]  # the passage's heading path (the set's scoring rule)
    text: str  # what the model reads
    ordinal: int = -1  # the chunk's ordinal in its document; -1 for a section summary


class VectorCache:
    """Vectors by sha256 of the text, kept in one ``.npz`` per model under ``folder``."""

    def __init__(self, folder: Path | None, embedder: Embedder, model_key: str) -> None:
        self.embedder = embedder
        name = hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.path = None if folder is None else folder / f"vectors-{name}.npz"
        self.vectors: dict[str, npt.NDArray[np.float32]] = {}
        self.encoded = 0
        if self.path is not None and self.path.is_file():
            data = np.load(self.path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    def get(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}
        if missing:
            vecs = self.embedder.embed(list(missing.values()))
            self.vectors.update(zip(missing, np.asarray(vecs, dtype=np.float32), strict=True))
            self.encoded += len(missing)
            self.save()
        return np.stack([self.vectors[k] for k in keys])

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        keys = list(self.vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)


def _headings(ch: Chunk) -> tuple[str, ...]:
    out = [ch.section_path[-1]] if ch.section_path else []
    out += [str(h) for h in ch.metadata.get("headings", ())]
    out += [h for _, h in S.heading_lines(ch.text)]
    return tuple(out)


def _read_as(ch: Chunk, prefix: str) -> str:
    if prefix == "full" or not ch.context:
        return ch.embed_text
    if prefix == "last":
        return f"{ch.section_path[-1][:200]}\n{ch.text}"
    return ch.text


def _summaries(name: str, doc: ParsedDocument, chunks: list[Chunk], kind: str) -> list[Unit]:
    """One unit per section of two or more chunks: its path and its blocks (``prose``:
    paragraphs only, when it has any); ``lead``: per section whose first paragraph is not
    all its text, the path and that paragraph alone."""
    members: dict[int, list[Chunk]] = {}
    for ch in chunks:
        if ch.chunk_type is not ChunkType.HEADING and ch.parent_ordinal is not None:
            members.setdefault(ch.parent_ordinal, []).append(ch)
    starts = sorted(c.char_start for c in chunks if c.chunk_type is ChunkType.HEADING)
    out = []
    for parent, group in members.items():
        if len(group) < 2 and kind != "lead":
            continue
        head = chunks[parent]
        end = next((s for s in starts if s > head.char_start), 1 << 62)
        blocks = [
            b
            for b in doc.blocks
            if b.type is not ChunkType.HEADING and head.char_end <= b.char_start < end
        ]
        if kind == "lead":
            lead = next((b for b in blocks if b.type is ChunkType.PARAGRAPH), None)
            if lead is None or len(blocks) < 2:
                continue
            blocks = [lead]
        if kind == "prose":
            blocks = [b for b in blocks if b.type is ChunkType.PARAGRAPH] or blocks
        body = "\n\n".join(b.text for b in blocks)
        text = f"{group[0].context}\n{body}" if group[0].context else body
        out.append(Unit(name, parent + 1, (head.text.strip(),), text))
    return out


def variant_units(
    docs: dict[str, ParsedDocument], embedder: Embedder, max_tokens: int, v: Variant
) -> list[Unit]:
    out: list[Unit] = []
    for name, doc in docs.items():
        share = chunker.TINY_SECTION_SHARE
        if v.tiny is not None:
            chunker.TINY_SECTION_SHARE = v.tiny
        try:
            chunks = chunk_document(doc, embedder, v.max_tokens or max_tokens)
        finally:
            chunker.TINY_SECTION_SHARE = share
        previous: Chunk | None = None
        for ch in chunks:
            if ch.embeddable:
                section = None if ch.parent_ordinal is None else ch.parent_ordinal + 1
                text = _read_as(ch, v.prefix)
                if (
                    v.neighbour
                    and previous is not None
                    and previous.parent_ordinal == ch.parent_ordinal
                ):
                    tail = " ".join(previous.text.split()[-v.neighbour :])
                    head, _, body = text.partition("\n") if ch.context else ("", "", text)
                    text = f"{head}\n{tail}\n{body}" if head else f"{tail}\n{body}"
                out.append(Unit(name, section, _headings(ch), text, ch.ordinal))
                paras = [p for p in ch.text.split("\n\n") if p.strip()]
                if v.para and len(paras) > 1:
                    for p in paras:
                        if len(p.split()) >= v.para:
                            read = f"{ch.context}\n{p}" if ch.context else p
                            out.append(Unit(name, section, _headings(ch), read))
            previous = ch
        if v.summaries != "none":
            out.extend(_summaries(name, doc, chunks, v.summaries))
    return out


def vector_ranks(
    units: list[Unit],
    matrix: npt.NDArray[np.float32],
    questions: Sequence[S.Question],
    qvecs: npt.NDArray[np.float32],
    sections: bool = True,
) -> dict[int, int | None]:
    """First hit rank of each question: sections by the search rule, or chunks alone."""
    sims = qvecs @ matrix.T
    out: dict[int, int | None] = {}
    for qi, q in enumerate(questions):
        order = [int(i) for i in np.argsort(-sims[qi], kind="stable")[:SECTION_POOL]]
        if sections:
            pool = [
                Candidate(i, float(sims[qi][i]), units[i].file, units[i].section) for i in order
            ]
            top = [s.chunk_id for s in rank_sections(pool, S.SEARCH_K, hybrid=False)]
        else:
            top = order[: S.SEARCH_K]
        passages = [S.Passage(units[i].file, units[i].headings) for i in top]
        out[q.number] = S.first_hit(q, passages)
    return out


Fulltext = list[tuple[tuple[str, int], tuple[str, ...]]]


def fulltext_lists(
    collection: str, questions: Sequence[S.Question], depth: int, docs: Path | None = None
) -> dict[int, Fulltext]:
    """Each question's full-text list from the stored collection (``ragstore eval-sections``
    ingests it), chunks alone: ((file, ordinal), heading path), best first; files named
    relative to ``docs`` (the set's ``docs/``, as :func:`S.read_docs` names them), or by
    name without it. Questions are plain text, as ``eval-sections`` searches them."""
    out: dict[int, Fulltext] = {}
    with Runtime() as rt:
        for q in questions:
            params = SearchParams(k=depth, mode="fulltext", sections=False, plain=True)
            hits = run(rt, q.text, collection, params)
            out[q.number] = [
                ((p.file, h.ordinal), p.headings)
                for h, p in ((h, S.hit_passage(h, docs)) for h in hits)
            ]
    return out


def hybrid_ranks(
    units: list[Unit],
    matrix: npt.NDArray[np.float32],
    questions: Sequence[S.Question],
    qvecs: npt.NDArray[np.float32],
    fulltext: dict[int, Fulltext],
) -> dict[int, int | None]:
    """First hit rank of each question in hybrid mode: the vector list of the variant and
    the stored full-text list (as deep as a hybrid search reads it), fused by RRF (default
    constant and weights), the fused top ``MIN_CANDIDATES`` ranked into sections as the
    search statement ranks them. Valid for variants that cut the same chunks as the stored
    collection (not ``max_tokens``)."""
    fusion = FusionParams()
    text_depth = SearchParams(k=S.SEARCH_K, mode="hybrid").fulltext_list_depth
    sims = qvecs @ matrix.T
    index = {(u.file, u.ordinal): i for i, u in enumerate(units) if u.ordinal >= 0}
    base = [(u.file, u.section, u.headings) for u in units]
    out: dict[int, int | None] = {}
    for qi, q in enumerate(questions):
        vec = [int(i) for i in np.argsort(-sims[qi], kind="stable")[:MIN_CANDIDATES]]
        extra: dict[int, tuple[str, int | None, tuple[str, ...]]] = {}
        text_list = []
        for key, headings in fulltext[q.number][:text_depth]:
            i = index.get(key)
            if i is None:  # a heading chunk: no vector, a section of its own
                i = len(units) + len(extra)
                extra[i] = (key[0], None, headings)
            text_list.append(i)
        fused = rrf(
            [vec, text_list],
            k=fusion.k,
            weights=[fusion.vector_weight, fusion.fulltext_weight],
        )[:MIN_CANDIDATES]
        info = [extra.get(i) or base[i] for i, _ in fused]
        pool = [
            Candidate(i, score, f, sec) for (i, score), (f, sec, _) in zip(fused, info, strict=True)
        ]
        where = {i: (f, hs) for (i, _), (f, _, hs) in zip(fused, info, strict=True)}
        top = [r.chunk_id for r in rank_sections(pool, S.SEARCH_K, hybrid=True)]
        out[q.number] = S.first_hit(q, [S.Passage(*where[i]) for i in top])
    return out


def feedback(
    qvecs: npt.NDArray[np.float32], matrix: npt.NDArray[np.float32], m: int, weight: float
) -> npt.NDArray[np.float32]:
    """Pseudo-relevance feedback (Rocchio): each query vector moved towards the mean of its
    ``m`` nearest units by ``weight``, normalised again."""
    top = np.argsort(-(qvecs @ matrix.T), axis=1)[:, :m]
    moved = qvecs + weight * matrix[top].mean(axis=1)
    return (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)


def halves(ranks: dict[int, int | None], split: int) -> dict[str, list[int]]:
    """top-1 / top-3 hits on questions 1..split and split+1..end."""

    def count(nums: list[int], k: int) -> int:
        return sum(1 for n in nums if (r := ranks[n]) is not None and r <= k)

    first = [n for n in ranks if n <= split]
    rest = [n for n in ranks if n > split]
    return {
        f"q1-{split}": [count(first, 1), count(first, 3)],
        f"q{split + 1}-{max(ranks)}": [count(rest, 1), count(rest, 3)],
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set_dir", type=Path)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--split", type=int, default=20, help="last tuning question (default 20)")
    ap.add_argument(
        "--collection",
        help="stored collection of the same documents (ragstore eval-sections makes "
        "sections-<set>-<path hash>, see its stderr line): also score hybrid with its "
        "full-text lists",
    )
    ap.add_argument(
        "--feedback",
        action="append",
        default=[],
        metavar="M:W",
        help="also rank each variant with every query moved towards its M nearest units by "
        "weight W (pseudo-relevance feedback), e.g. 5:0.5",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant or ["current"]]
    spec = resolve_spec(Settings().model)
    embedder = load_embedder(spec, device="cpu")
    cache = VectorCache(args.cache, embedder, spec.key)
    questions = S.load_questions(args.set_dir / "questions.tsv")
    raw = S.read_docs(args.set_dir / "docs")
    docs = {name: parse_bytes(text.encode(), name) for name, text in raw.items()}
    qvecs = cache.get([q.text for q in questions])
    fulltext = (
        fulltext_lists(args.collection, questions, MIN_CANDIDATES, args.set_dir / "docs")
        if args.collection
        else None
    )
    report: dict[str, object] = {}
    for v in variants:
        t0 = time.perf_counter()
        units = variant_units(docs, embedder, spec.max_tokens, v)
        before = cache.encoded
        matrix = cache.get([u.text for u in units])
        row: dict[str, object] = {
            "vectors": len(units),
            "tokens": sum(
                min(n, spec.max_tokens) for n in embedder.count_tokens([u.text for u in units])
            ),
            "encoded_now": cache.encoded - before,
            "seconds": round(time.perf_counter() - t0, 1),
            "sections": halves(vector_ranks(units, matrix, questions, qvecs), args.split),
            "chunks": halves(vector_ranks(units, matrix, questions, qvecs, False), args.split),
        }
        for fb in args.feedback:
            m, weight = fb.split(":")
            moved = feedback(qvecs, matrix, int(m), float(weight))
            row[f"feedback {fb}"] = halves(
                vector_ranks(units, matrix, questions, moved), args.split
            )
        if fulltext is not None and v.max_tokens is None:
            ranks = hybrid_ranks(units, matrix, questions, qvecs, fulltext)
            row["hybrid"] = halves(ranks, args.split)
        report[v.name] = row
        print(v.name, json.dumps(row), file=sys.stderr, flush=True)
    dense = S.baseline_scores(raw, questions, embedder, cache_dir=args.cache, model_key=spec.key)[0]
    report["windows-dense"] = {"sections": halves(dense.ranks, args.split)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, row in report.items():
            print(f"{name:40s} {row}")


if __name__ == "__main__":
    main()
