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
from ragstore.models import Chunk, ChunkType
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


# about 370 characters: three of them are a short section, far over a quarter of the budget
PARA = (
    "This paragraph describes one aspect of the subject in enough words to matter, with a "
    "second sentence that adds a detail and a third that closes the thought. It goes on "
    "for a while so that it reaches about three hundred and seventy characters in all, "
    "which is what a short section of a manual or a README holds in one of its paragraphs,"
    " give or take a clause or two."
)


def _body(md: str, embedder: Embedder) -> tuple[list[Chunk], list[Chunk]]:
    chunks = chunk_document(parse_bytes(md.encode(), "doc.md"), embedder, 256)
    by_ordinal = {c.ordinal: c for c in chunks}
    body = [c for c in chunks if c.chunk_type is not ChunkType.HEADING]
    for c in body:  # a chunk's parent is the heading of the section it is labelled with
        if c.section_path:
            parent = by_ordinal[c.parent_ordinal] if c.parent_ordinal is not None else None
            assert parent is not None
            assert [*parent.section_path, parent.text] == list(c.section_path)
        else:
            assert c.parent_ordinal is None
    return chunks, body


def _texts(body: list[Chunk]) -> list[tuple[list[str], str]]:
    return [(list(c.section_path), c.text) for c in body]


def test_a_short_section_after_a_one_line_intro_keeps_its_own_section(
    embedder: Embedder,
) -> None:
    """The intro was tiny, so Section A (three paragraphs, not tiny) was taken into the
    intro's chunk: its text labelled with no section, its heading chunk left empty."""
    assert len(PARA) > 360
    section = f"{PARA}\n\n{PARA}\n\n{PARA}"
    chunks, body = _body(f"One-line intro.\n\n# Section A\n\n{section}\n", embedder)
    assert _texts(body) == [([], "One-line intro."), (["Section A"], section)]
    assert all("headings" not in c.metadata for c in body)
    assert [c.chunk_type for c in chunks] == [
        ChunkType.PARAGRAPH,
        ChunkType.HEADING,
        ChunkType.PARAGRAPH,
    ]
    assert body[1].context == "Section A", "the model reads the section the text is in"


def test_a_parents_one_line_stays_out_of_its_subsections_chunk(embedder: Embedder) -> None:
    section = f"{PARA}\n\n{PARA}\n\n{PARA}"
    _, body = _body(f"# Parent\n\nJust a line.\n\n## Child\n\n{section}\n", embedder)
    assert _texts(body) == [(["Parent"], "Just a line."), (["Parent", "Child"], section)]


def test_a_tiny_section_between_long_ones_is_named_by_the_chunk_that_holds_it(
    embedder: Embedder,
) -> None:
    _, body = _body(
        f"# Doc\n\n## Long one\n\n{LONG}\n\n## Tiny\n\nA tiny note.\n\n## Long two\n\n{LONG}\n",
        embedder,
    )
    assert _texts(body) == [
        (["Doc", "Long one"], f"{LONG}\n\n## Tiny\n\nA tiny note."),
        (["Doc", "Long two"], LONG),
    ]
    assert body[0].metadata["headings"] == ["Tiny"]


def test_a_heading_with_nothing_under_it_ends_no_chunk(embedder: Embedder) -> None:
    section = f"{PARA}\n\n{PARA}\n\n{PARA}"
    chunks, body = _body(
        f"# Doc\n\n## A\n\nA short note.\n\n## Empty\n\n## Full\n\n{section}\n", embedder
    )
    assert _texts(body) == [(["Doc", "A"], "A short note."), (["Doc", "Full"], section)]
    assert [c.text for c in chunks if c.chunk_type is ChunkType.HEADING] == [
        "Doc",
        "A",
        "Empty",
        "Full",
    ]


def test_a_tiny_section_is_never_labelled_with_no_section_or_a_deeper_one(
    embedder: Embedder,
) -> None:
    """A tiny section still shares a chunk, but only one whose label holds it: never the
    chunk of a document's intro (outside every section), nor a subsection's chunk when it
    is a section of a higher level."""
    _, body = _body("One-line intro.\n\n# Only\n\nA tiny note.\n", embedder)
    assert _texts(body) == [([], "One-line intro."), (["Only"], "A tiny note.")]
    _, body = _body("# A\n\n## A1\n\nA short note.\n\n# B\n\nAnother note.\n", embedder)
    assert _texts(body) == [(["A", "A1"], "A short note."), (["B"], "Another note.")]
    # a subsection and a sibling's subsection still join: the chunk's section holds them
    _, body = _body(
        "# A\n\n## A1\n\nA short note.\n\n### A1a\n\nA deeper note.\n\n## A2\n\nA sibling note.\n",
        embedder,
    )
    assert _texts(body) == [
        (
            ["A", "A1"],
            "A short note.\n\n### A1a\n\nA deeper note.\n\n## A2\n\nA sibling note.",
        )
    ]
    assert body[0].metadata["headings"] == ["A1a", "A2"]


def test_a_document_of_one_tiny_section_is_one_chunk_under_it(embedder: Embedder) -> None:
    chunks, body = _body("# Only\n\nA tiny note.\n", embedder)
    assert len(chunks) == 2 and _texts(body) == [(["Only"], "A tiny note.")]


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
