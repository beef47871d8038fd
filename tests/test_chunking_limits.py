"""The chunker with the real model's tokenizer: no chunk over the model's limit, tables
split between rows with their header repeated, code split between lines, huge lines
handled in bounded pieces, parents and section paths kept."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from bench.scifact import records as scifact_records

from ragstore.chunking import chunk_document
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import Block, ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes
from tests.fixtures.builders import build_mixed_corpus

PREFIXES = {"query_prefix": "query: ", "passage_prefix": "passage: "}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu")


def _model_tokens(embedder: Embedder, texts: list[str]) -> list[int]:
    return embedder.count_tokens(texts)


def test_long_table_is_split_between_rows_with_the_header_on_every_piece(
    embedder: Embedder,
) -> None:
    rows = "\n".join(
        f"| part {i} | stored in bay {i} of the east hall, shelf {i % 7} |" for i in range(150)
    )
    md = f"# Stock\n\n| part | where |\n|---|---|\n{rows}\n"
    chunks = chunk_document(parse_bytes(md.encode(), "stock.md"), embedder, 256)
    tables = [c for c in chunks if c.chunk_type is ChunkType.TABLE]
    assert len(tables) > 3
    seen: list[str] = []
    for c in tables:
        lines = c.text.split("\n")
        assert lines[:2] == ["| part | where |", "|---|---|"]
        assert all(line.startswith("| part ") and line.endswith(" |") for line in lines[2:])
        assert c.metadata["header_repeated"] is True
        first, last = c.metadata["row_range"]
        assert last - first + 1 == len(lines) - 2
        seen.extend(lines[2:])
    assert seen == rows.split("\n"), "every row exactly once, in order, none cut"
    assert max(_model_tokens(embedder, [c.embed_text for c in tables])) <= 256


def test_long_code_is_never_split_inside_a_line(embedder: Embedder) -> None:
    body = "\n".join(
        f"    total_{i} = compute_discount(order_{i}, customer_tier, season)" for i in range(200)
    )
    source = f"def giant():\n{body}\n    return 0\n"
    chunks = chunk_document(parse_bytes(source.encode(), "giant.py"), embedder, 256)
    assert len(chunks) > 3
    lines = source.rstrip("\n").split("\n")
    rebuilt: list[str] = []
    for c in chunks:
        assert c.chunk_type is ChunkType.CODE and "line_split" not in c.metadata
        assert source[c.char_start : c.char_end] == c.text
        rebuilt.extend(c.text.split("\n"))
    assert rebuilt == lines
    assert max(_model_tokens(embedder, [c.embed_text for c in chunks])) <= 256


def test_a_line_of_megabytes_without_breaks_is_chunked_in_bounded_pieces(
    embedder: Embedder,
) -> None:
    words = ("alpha beta gamma delta " * 150_000).encode()  # 3.5 MB on one line
    unbroken = b"z" * 2_000_000  # one "word" of 2 MB
    for name, data in (("words.txt", words), ("unbroken.txt", unbroken)):
        t0 = time.perf_counter()
        chunks = chunk_document(parse_bytes(data, name), embedder, 256)
        assert time.perf_counter() - t0 < 60
        assert max(len(c.text) for c in chunks) <= 256 * 16
        assert max(c.token_count for c in chunks) <= 256
        assert sum(len(c.text) for c in chunks) >= len(data.strip()) * 0.95
    sample = chunks[:: max(1, len(chunks) // 50)]
    assert max(_model_tokens(embedder, [c.embed_text for c in sample])) <= 256


def test_chunks_keep_section_paths_and_parent_links(embedder: Embedder, tmp_path: Path) -> None:
    corpus = build_mixed_corpus(tmp_path)
    chunks = chunk_document(
        parse_bytes((corpus / "inventory.docx").read_bytes(), "inventory.docx"), embedder, 256
    )
    by_ordinal = {c.ordinal: c for c in chunks}
    table = next(c for c in chunks if c.chunk_type is ChunkType.TABLE)
    assert table.section_path == ("Inventory", "Reference")
    assert table.parent_ordinal is not None
    assert by_ordinal[table.parent_ordinal].text == "Reference"
    assert by_ordinal[by_ordinal[table.parent_ordinal].parent_ordinal or 0].text == "Inventory"
    assert table.embed_text.startswith("Inventory > Reference\n| Site | Notes |")
    pdf = chunk_document(
        parse_bytes((corpus / "handbook.pdf").read_bytes(), "handbook.pdf"), embedder, 256
    )
    assert [(c.chunk_type.value, c.page) for c in pdf if c.page == 3] == [
        ("heading", 3),
        ("page_text", 3),
    ]


def _scifact_files(dest: Path, docs: int) -> list[Path]:
    """SciFact abstracts as Markdown (10 per file, one section each), plain text, and as
    a table and a code block (long cells, long lines), so every split path is taken."""
    records = scifact_records(docs)
    files = []
    for i in range(0, len(records), 10):
        group = records[i : i + 10]
        md = "\n\n".join(f"## {r['title']}\n\n{r['text']}" for r in group)
        path = dest / f"sci_{i:04d}.md"
        path.write_text(f"# SciFact part {i}\n\n{md}\n", encoding="utf-8")
        files.append(path)
        text = dest / f"sci_{i:04d}.txt"
        text.write_text(" ".join(r["text"] for r in group), encoding="utf-8")  # one paragraph
        files.append(text)
    table = "\n".join(f"| {r['_id']} | {r['text']} |" for r in records[:60])
    (dest / "table.md").write_text(f"# Table\n\n| id | abstract |\n|---|---|\n{table}\n")
    code = "\n".join(f"ABSTRACT_{r['_id']} = {r['text']!r}" for r in records[:60])
    (dest / "abstracts.py").write_text(code + "\n")
    return [*files, dest / "table.md", dest / "abstracts.py"]


def test_no_chunk_exceeds_the_model_limit_on_a_real_corpus(
    embedder: Embedder, tmp_path: Path
) -> None:
    files = _scifact_files(tmp_path, 400)
    chunks = []
    for path in files:
        chunks.extend(
            chunk_document(
                parse_bytes(path.read_bytes(), path.name), embedder, embedder.spec.max_tokens
            )
        )
    assert len(chunks) > 1000
    counted = _model_tokens(embedder, [c.embed_text for c in chunks])
    limit = embedder.spec.max_tokens
    assert max(counted) <= limit, "the model would silently truncate a chunk"
    assert [c.token_count for c in chunks] == counted, "stored token counts are exact"
    split_types = {c.chunk_type for c in chunks if "part" in c.metadata}
    assert {ChunkType.PARAGRAPH, ChunkType.TABLE, ChunkType.CODE} <= split_types
    assert max(counted) > limit * 0.8, "pieces are filled, not cut needlessly small"


def test_chunks_of_a_model_with_a_passage_prefix_fit_with_the_prefix(
    embedder: Embedder, tmp_path: Path
) -> None:
    """An e5-style pin (``passage: `` before every passage; the same weights here) reads
    the prefix, the section path and the chunk: the chunk's budget is what is left. The
    chunker counted the text without the prefix, so a chunk at the limit reached the
    model two tokens too long and sentence-transformers cut its tail off, unseen.

    Measured with the model's own tokenizer on exactly what :meth:`Embedder.embed`
    sends, against the ``max_seq_length`` it truncates at ([CLS]/[SEP] counted)."""
    base = embedder.spec
    prefixed = load_embedder(
        replace(base, name="minilm-e5-like", options={**base.options, **PREFIXES}), device="cpu"
    )
    files = _scifact_files(tmp_path, 200)
    chunks = [
        c
        for path in files
        for c in chunk_document(
            parse_bytes(path.read_bytes(), path.name), prefixed, prefixed.spec.max_tokens
        )
        if c.embeddable
    ]
    model = prefixed.model  # type: ignore[attr-defined]
    sent = [PREFIXES["passage_prefix"] + c.embed_text for c in chunks]
    read = [
        len(ids)
        for ids in model.tokenizer(sent, add_special_tokens=True, truncation=False)["input_ids"]
    ]
    assert max(read) <= model.max_seq_length == 256, "the model would cut a chunk's tail"
    assert max(read) > 256 * 0.9, "pieces are filled, not cut needlessly small"
    assert [c.token_count for c in chunks] == read, "stored counts are what the model reads"


# without the fix each test below runs for minutes; "signal": a str method and the regex
# engine hold the GIL
@pytest.mark.timeout(15, method="signal")
def test_a_table_of_many_rows_is_numbered_in_linear_time(embedder: Embedder) -> None:
    # each piece's first row was numbered by counting the line breaks from the table's top:
    # 8,000 rows of 480 characters (4 MB) took 10 s, 32,000 (16 MB) some 150 s
    rows = 32_000
    text = "| name |\n|---|\n" + "".join(f"| {'a' * 480} |\n" for _ in range(rows))
    block = Block(ChunkType.TABLE, text, 0, len(text), metadata={"header_lines": 2})
    chunks = chunk_document(ParsedDocument("markdown", None, [block]), embedder, 32)
    assert len(chunks) == rows  # a row a chunk: two rows are over 32 * 16 characters
    assert [c.metadata["row_range"][0] for c in chunks] == list(range(1, rows + 1))
    assert all(c.text.startswith("| name |\n|---|\n| a") for c in chunks)


@pytest.mark.timeout(15, method="signal")
def test_a_table_whose_second_line_is_all_spaces_is_read_in_linear_time(
    embedder: Embedder,
) -> None:
    # a table without declared header lines has its second line matched against a header
    # rule, r"^\s*\|?\s*:?-{3,}": a line of n spaces was tried split every way between
    # the two \s*, 8,000 spaces 0.9 s and 100,000 some 140 s
    for rule in (" " * 100_000 + "x", "\t" * 100_000 + "|" + " " * 100_000 + "x"):
        text = f"| a |\n{rule}\n| b |"
        block = Block(ChunkType.TABLE, text, 0, len(text))
        chunks = chunk_document(ParsedDocument("markdown", None, [block]), embedder, 256)
        assert "| a |" in chunks[0].text and "| b |" in chunks[-1].text
        assert not any(c.metadata.get("header_repeated") for c in chunks)
    # a rule is still a rule, with or without bars and spaces: its header is repeated
    for rule in ("---|---", "| --- | --- |", "  |  :--- | ---", "\t:---"):
        text = "| a | b |\n" + rule + "\n" + "\n".join(f"| {i} | row {i} |" for i in range(80))
        block = Block(ChunkType.TABLE, text, 0, len(text))
        chunks = chunk_document(ParsedDocument("markdown", None, [block]), embedder, 64)
        assert len(chunks) > 2 and all(c.metadata["header_repeated"] for c in chunks), rule
        assert all(c.text.startswith(f"| a | b |\n{rule}\n") for c in chunks), rule


class _SpansAsked:
    """The real model, counting the characters the chunker asks token spans of; with
    ``encodings=False`` it has no :meth:`token_encodings` (as a model without them)."""

    def __init__(self, embedder: Embedder, encodings: bool = True) -> None:
        self.embedder = embedder
        self.special_tokens = embedder.special_tokens
        self.joins_add_up = embedder.joins_add_up
        self.asked = 0
        if encodings:
            self.token_encodings = embedder.token_encodings

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.embedder.count_tokens(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        self.asked += len(text)
        return self.embedder.token_spans(text)


def test_a_huge_block_is_split_from_the_word_cache_not_from_spans(embedder: Embedder) -> None:
    # a block over 4,096 characters was split from token_spans, a tuple made per token by
    # the tokenizer's wrapper: 255 KB of "[" (a token a character) took 3.7 s on a loaded
    # machine; the word cache's index says the same eight times faster
    text = "[" * 150_000 + " Plain words. " * 2_000 + ".)" * 30_000 + "a\n" * 20_000
    doc = ParsedDocument("text", None, [Block(ChunkType.PARAGRAPH, text, 0, len(text))])
    cached = _SpansAsked(embedder)
    chunks = chunk_document(doc, cached, 256)
    assert cached.asked == 0
    spanned = _SpansAsked(embedder, encodings=False)
    assert [(c.text, c.char_start, c.token_count) for c in chunks] == [
        (c.text, c.char_start, c.token_count) for c in chunk_document(doc, spanned, 256)
    ]
    assert spanned.asked >= len(text)
