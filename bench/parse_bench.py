"""Parsing + chunking throughput per format against the model's embedding throughput.

Builds one corpus per format from SciFact abstracts (Markdown, plain text, HTML, PDF,
DOCX, Python source), parses and chunks each with the real model's tokenizer, and
reports MB/s of extracted text (and of file bytes). Then embeds a sample of the chunks
with the same model and reports its MB/s of chunk text. The ratio must stay >= 20x so
parsing is never the bottleneck of an ingest.

    python -m bench.parse_bench --docs 600 --embed-chunks 512 --device cpu
"""

from __future__ import annotations

import argparse
import html
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.builders import pdf_bytes, write_docx

from bench.scifact import records
from ragstore.chunking import chunk_document
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import Chunk
from ragstore.parsing import parse_bytes


def _wrap(text: str, width: int = 90) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def corpora(records: list[dict[str, str]], tmp: Path) -> dict[str, tuple[str, bytes]]:
    """format -> (file name, bytes)"""
    md = "\n\n".join(f"## {r['title']}\n\n{r['text']}" for r in records)
    text = "\n\n".join(f"{r['title']}\n\n{r['text']}" for r in records)
    page = "".join(
        f"<h2>{html.escape(r['title'])}</h2><p>{html.escape(r['text'])}</p>" for r in records
    )
    code = "\n\n\n".join(
        f'def abstract_{r["_id"]}() -> str:\n    """{r["title"]}"""\n    return {r["text"]!r}'
        for r in records
    )
    pages = []
    for r in records:
        pages.append([r["title"][:90], "", *_wrap(r["text"])])
    docx = write_docx(
        tmp / "bench.docx", title="SciFact", sections=[(r["title"], [r["text"]]) for r in records]
    )
    return {
        "markdown": ("bench.md", f"# SciFact\n\n{md}\n".encode()),
        "text": ("bench.txt", text.encode()),
        "html": ("bench.html", f"<!doctype html><html><body>{page}</body></html>".encode()),
        "pdf": ("bench.pdf", pdf_bytes(pages)),
        "docx": ("bench.docx", docx.read_bytes()),
        "code": ("bench.py", code.encode()),
    }


def _best(fn: Callable[[], list[Chunk]], repeat: int) -> tuple[float, list[Chunk]]:
    best, out = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=600, help="SciFact abstracts per format")
    ap.add_argument("--embed-chunks", type=int, default=512, help="chunks embedded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import tempfile

    embedder = load_embedder(resolve_spec("all-MiniLM-L6-v2"), device=args.device)
    limit = embedder.spec.max_tokens
    with tempfile.TemporaryDirectory() as tmp:
        files = corpora(records(args.docs), Path(tmp))
    rows = []
    sample: list[Chunk] = []
    for fmt, (name, data) in files.items():

        def run(data: bytes = data, name: str = name) -> list[Chunk]:
            return chunk_document(parse_bytes(data, name), embedder, limit)

        seconds, chunks = _best(run, args.repeat)
        text_mb = sum(len(c.text.encode()) for c in chunks) / 1e6
        rows.append((fmt, len(data) / 1e6, text_mb, len(chunks), seconds))
        if fmt == "markdown":
            sample = [c for c in chunks if c.embeddable][: args.embed_chunks]
    texts = [c.embed_text for c in sample]
    embedder.embed(texts[:32])  # warm up
    t0 = time.perf_counter()
    embedder.embed(texts)
    embed_s = time.perf_counter() - t0
    embed_mbs = sum(len(t.encode()) for t in texts) / 1e6 / embed_s
    print(
        f"embedding: {len(texts)} chunks in {embed_s:.2f}s = {embed_mbs:.3f} MB/s of text "
        f"({len(texts) / embed_s:.0f} chunks/s) on {args.device}"
    )
    print(
        "| format | file MB | text MB | chunks | parse+chunk s | text MB/s | file MB/s "
        "| × embedding |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fmt, file_mb, text_mb, n, seconds in rows:
        print(
            f"| {fmt} | {file_mb:.2f} | {text_mb:.2f} | {n} | {seconds:.2f} | "
            f"{text_mb / seconds:.2f} | {file_mb / seconds:.2f} | "
            f"{text_mb / seconds / embed_mbs:.0f}× |"
        )


if __name__ == "__main__":
    main()
