"""Section packing on real long documents: the blocks of a section merged up to the model's
budget, short sections sharing a chunk, nothing lost or reordered, counts exact; and a
chunking upgrade re-chunks files whose bytes did not change."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ragstore.chunking import chunk_document, chunker
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.models import ChunkType
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime

NODE_DOCS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nodejs-api" / "docs"
LONG = " ".join(f"Sentence {i} explains one more detail of the topic at hand." for i in range(18))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu")


@pytest.mark.parametrize("name", ["readline.md", "events.md"])
def test_sections_are_packed_to_the_budget_without_losing_or_reordering_text(
    embedder: Embedder, name: str
) -> None:
    doc = parse_bytes((NODE_DOCS / name).read_bytes(), name)
    chunks = chunk_document(doc, embedder, 256)
    body = [c for c in chunks if c.chunk_type is not ChunkType.HEADING]
    blocks = [b for b in doc.blocks if b.type is not ChunkType.HEADING]
    assert len(body) * 2 < len(blocks), "a question meets passages, not one chunk per block"
    counted = embedder.count_tokens([c.embed_text for c in chunks])
    assert [c.token_count for c in chunks] == counted, "stored token counts are exact"
    assert max(counted) <= 256
    assert sorted(counted)[len(counted) // 2] > 100 or len(body) < 10
    # every block lies inside the chunks, which follow each other without overlapping
    spans = [(c.char_start, c.char_end) for c in body]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    for b in blocks:
        assert any(lo <= b.char_start and b.char_end <= hi for lo, hi in spans) or any(
            lo <= b.char_start < hi for lo, hi in spans
        ), f"block lost: {b.text[:60]!r}"
    assert sum(len(b.text.split()) for b in blocks) <= sum(len(c.text.split()) for c in body)
    ordinals = [c.ordinal for c in chunks]
    assert ordinals == list(range(len(chunks)))
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts), "chunks stay in document order"
    by_ordinal = {c.ordinal: c for c in chunks}
    for c in body:
        assert c.parent_ordinal is not None
        parent = by_ordinal[c.parent_ordinal]
        assert parent.chunk_type is ChunkType.HEADING
        assert list(c.section_path) == [*parent.section_path, parent.text]
        assert c.context.endswith(c.section_path[-1]), "the model reads the section path"
        # a chunk that runs on into a following section shows that section's heading line
        for heading in c.metadata.get("headings", []):
            assert f"# {' '.join(heading.split())}\n" in c.text


def test_short_sections_share_a_chunk_and_long_ones_keep_their_own(embedder: Embedder) -> None:
    md = (
        f"# Guide\n\n## Short one\n\nTiny note.\n\n## Short two\n\nAnother tiny note.\n\n"
        f"## Long one\n\n{LONG}\n\n## Long two\n\n{LONG}\n"
    )
    chunks = chunk_document(parse_bytes(md.encode(), "guide.md"), embedder, 256)
    body = [c for c in chunks if c.chunk_type is not ChunkType.HEADING]
    assert [c.section_path[-1] for c in body] == ["Short one", "Long one", "Long two"]
    assert body[0].text == "Tiny note.\n\n## Short two\n\nAnother tiny note."
    assert body[0].metadata["headings"] == ["Short two"]
    assert body[1].text == LONG and "headings" not in body[1].metadata
    # the heading chunks stay, in document order, as parents of what follows them
    kinds = [(c.chunk_type.value, c.text[:10]) for c in chunks]
    assert kinds == [
        ("heading", "Guide"),
        ("heading", "Short one"),
        ("paragraph", "Tiny note."),
        ("heading", "Short two"),
        ("heading", "Long one"),
        ("paragraph", LONG[:10]),
        ("heading", "Long two"),
        ("paragraph", LONG[:10]),
    ]


def test_an_upgraded_chunker_re_chunks_unchanged_files_and_reuses_vectors(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "guide.md").write_text(f"# Guide\n\n## Long one\n\n{LONG}\n")
    first = ingest_paths(rt, [tmp_path], "upgrade")
    assert first.count("added") == 1 and first.embedded == 1
    assert ingest_paths(rt, [tmp_path], "upgrade").count("unchanged") == 1
    monkeypatch.setattr(chunker, "CHUNKING_VERSION", chunker.CHUNKING_VERSION + 1)
    upgraded = ingest_paths(rt, [tmp_path], "upgrade")
    assert upgraded.count("updated") == 1, "same bytes, new chunking: chunked again"
    assert upgraded.embedded == 0 and upgraded.reused == 1, "same chunk text: vector reused"


class _Counted:
    """The real tokenizer without ``joins_add_up``: every merged chunk is tokenized."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.special_tokens = embedder.special_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.embedder.count_tokens(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.embedder.token_spans(text)


def test_summed_counts_of_merged_chunks_equal_tokenizing_them(embedder: Embedder) -> None:
    """BERT's tokenizer never reads across whitespace, so the chunker sums the counts of a
    merged chunk's parts instead of tokenizing it again: the same chunks, the same counts."""
    assert getattr(embedder, "joins_add_up", False)
    doc = parse_bytes((NODE_DOCS / "readline.md").read_bytes(), "readline.md")
    summed = chunk_document(doc, embedder, 256)
    counted = chunk_document(doc, _Counted(embedder), 256)
    assert any(len(c.metadata.get("headings", [])) or c.metadata.get("blocks") for c in summed)
    assert [(c.text, c.context, c.token_count) for c in summed] == [
        (c.text, c.context, c.token_count) for c in counted
    ]
