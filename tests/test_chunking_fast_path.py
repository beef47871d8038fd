"""Fast paths that must not change what is stored: Markdown's line path (front matter,
ATX headings and paragraphs found line by line) gives the blocks markdown-it gives, and the
chunker's fast path (one tokenizer pass per block: counts, spans and word numbers together;
split pieces counted off their block's encoding) cuts exactly the chunks that the plain
path (every count and span asked of the tokenizer) cuts, on real documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragstore.chunking import chunk_document
from ragstore.chunking.chunker import _lines
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import Block, Chunk, ChunkType, ParsedDocument
from ragstore.parsing import markdown, parse_bytes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NODE_DOCS = DATA / "nodejs-api" / "docs"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu")


class _Plain:
    """The real tokenizer asked one question at a time: no encodings, no summed joins."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.special_tokens = embedder.special_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.embedder.count_tokens(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.embedder.token_spans(text)


def _scifact(n: int) -> list[tuple[str, bytes]]:
    """SciFact abstracts as Markdown files, two of them per file so most are split."""
    rows: list[dict[str, Any]] = []
    with (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= 2 * n:
                break
    out = []
    for j, (a, b) in enumerate(zip(rows[::2], rows[1::2], strict=True)):
        text = f"# {a['title']}\n\n{a['text']} {b['text']}\n\n## {b['title']}\n\n{b['text']}\n"
        out.append((f"sf{j}.md", text.encode()))
    return out


def _shape(chunks: list[Chunk]) -> list[tuple[Any, ...]]:
    return [
        (
            c.ordinal,
            c.chunk_type,
            c.text,
            c.section_path,
            c.parent_ordinal,
            c.char_start,
            c.char_end,
            c.token_count,
            c.content_hash,
            c.metadata,
            c.context,
        )
        for c in chunks
    ]


def test_fast_path_cuts_the_same_chunks_on_nodejs_api_and_scifact(embedder: Embedder) -> None:
    names = ("readline.md", "path.md", "dns.md", "os.md")
    files = [(n, (NODE_DOCS / n).read_bytes()) for n in names]
    files += _scifact(60)
    plain = _Plain(embedder)
    split = 0
    for name, data in files:
        doc = parse_bytes(data, name)
        for budget in (256, 96):
            fast = chunk_document(doc, embedder, budget)
            assert _shape(fast) == _shape(chunk_document(doc, plain, budget)), (name, budget)
            split += sum(1 for c in fast if c.metadata.get("part"))
    assert split > 100, "the documents exercise split blocks, where the fast path counts"


def test_encodings_agree_with_counts_and_spans(embedder: Embedder) -> None:
    texts = [
        "Plain words, punctuation; and numbers 3.14!",
        "Café naïve résumé – accents and dashes",
        "中文字符 mixed with Latin",
        "control\x00chars\x1fand\ttabs",
        "x" * 300 + " a word far over WordPiece's per-word limit",
        "",
    ]
    encs = embedder.token_encodings(texts)
    assert encs is not None
    assert [e.count for e in encs] == embedder.count_tokens(texts)
    assert [e.spans for e in encs] == [embedder.token_spans(t) for t in texts]
    assert all(len(e.words) == len(e.spans) for e in encs)


class _PerLine(_Plain):
    """The real tokenizer through its Hugging Face wrapper, one text a call: no batch, no
    word cache; what the chunker's counts of a split block's lines must equal."""

    def count_tokens(self, texts: list[str]) -> list[int]:
        tokenizer = self.embedder.tokenizer  # type: ignore[attr-defined]
        return [
            len(tokenizer(t, add_special_tokens=True, truncation=False)["input_ids"]) for t in texts
        ]


def _line_blocks(rows: int) -> list[Block]:
    code = "".join(f"def f{i}(x):\n    return {{'k': x[{i}] + 1}}  # {i}\n" for i in range(rows))
    listed = "".join(f"- item {i}: see `f{i}()` and [docs](#f{i})\n" for i in range(rows))
    table = "| name | value |\n|---|---|\n" + "".join(f"| f{i} | {i * 7} |\n" for i in range(rows))
    # a line that is not plain ASCII, or one holding an added token's text: that block's
    # lines are then counted text by text, as before the batch path
    accented, added = code.replace("# 5\n", "# café 5\n"), code.replace("# 9\n", "# [SEP] 9\n")
    texts = [(ChunkType.CODE, code), (ChunkType.LIST, listed), (ChunkType.TABLE, table)]
    texts += [(ChunkType.CODE, accented), (ChunkType.CODE, added)]
    texts += [(ChunkType.CODE, "{\n" * (rows * 4))]
    return [Block(type=k, text=t, char_start=0, char_end=len(t)) for k, t in texts]


def test_split_line_blocks_cut_the_same_chunks_as_lines_counted_one_by_one(
    embedder: Embedder,
) -> None:
    doc = ParsedDocument(format="code", title="t", blocks=_line_blocks(1500))
    per_line = _PerLine(embedder)
    for budget in (256, 64):
        fast = chunk_document(doc, embedder, budget)
        assert _shape(fast) == _shape(chunk_document(doc, per_line, budget)), budget
        assert len(fast) > 5 * len(doc.blocks)  # every block was split into many pieces


@pytest.mark.parametrize("text", ["", "a", "\n", "a\n", "\na\n\nbc", "x\ny\n\n\n"])
def test_lines_are_where_the_line_breaks_say(text: str) -> None:
    starts = [0] + [k + 1 for k, c in enumerate(text) if c == "\n"]
    ends = [k for k, c in enumerate(text) if c == "\n"] + [len(text)]
    assert _lines(text) == list(zip(starts, ends, strict=True))


EDGE = [
    "",
    "---\n---\n",
    "---\na: 1\n---",
    "---\ntitle: T\nbucket: 3\n---\n# T\n\ntext\n",
    "---\na: b\n...\n",
    "# a #\n",
    "#a\n",
    "####### x\n",
    "x\n===\n",
    "x\n---\n",
    "para\n# head\npara2\nmore\n\n\n",
    "1. x\n",
    "2019 was a year\nof\n",
    "a\n  b\n",
    "\u00a0x\n",
    "x\x0cy\n",
    "# T\n\n<!-- c -->\n",
    "a | b\n--|--\n1 | 2\n",
    "# H1\n## H2\ntext\n### H3\n\nmore text\n",
    "text without a newline",
]


def test_plain_markdown_parses_as_markdown_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [data.decode() for _, data in _scifact(200)] + EDGE
    plain = [t for t in texts if markdown._plain_tokens(t) is not None]
    assert len(plain) > 200, "the abstracts and the plain edge cases take the line path"
    fast = [repr(markdown.parse_markdown(t, "x.md")) for t in texts]
    monkeypatch.setattr(markdown, "_plain_tokens", lambda _text: None)
    assert fast == [repr(markdown.parse_markdown(t, "x.md")) for t in texts]
