"""Full-text search reads a chunk's section path with its text (revision 0021): a question
naming what a section is about finds its chunks though their text never repeats the
heading; chunks with no heading above them keep the tsvector of their text alone."""

from __future__ import annotations

import pytest

from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search

REFERENCE = "\n\n".join(
    [
        "# Resolver reference",
        "## zorbulate(hostname)",
        "Resolves a host name the way the operating system does, through its own facility, "
        "and calls back with the first address found.",
        "## Caching",
        "Answers are kept for as long as the record's time to live allows.",
    ]
)
PLAIN = "Resolves names of hosts for programs that ask, and remembers nothing afterwards."


@pytest.fixture(scope="module")
def collection(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("section-path")
    (root / "reference.md").write_text(REFERENCE)
    (root / "plain.txt").write_text(PLAIN)
    report = ingest_paths(rt, [root], "section-path")
    assert not report.failed
    return "section-path"


def test_a_heading_word_finds_the_chunks_of_its_section(rt: Runtime, collection: str) -> None:
    hits = search(rt, "zorbulate", collection=collection, k=5, mode="fulltext")
    assert [h.section_path[-1] for h in hits] == ["zorbulate(hostname)"]
    assert hits[0].chunk_type != "heading" and "zorbulate" not in hits[0].text
    # the ancestors' words count too (the short last section rides with the one before it)
    found = search(rt, "reference", collection=collection, k=5, mode="fulltext")
    assert found and all(h.section_path[0] == "Resolver reference" for h in found)
    assert all("reference" not in h.text.lower() for h in found)


def test_what_the_tsvector_holds(rt: Runtime, collection: str) -> None:
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT c.chunk_type, c.section_path,"
            " c.tsv = to_tsvector(c.ts_config::regconfig, c.text),"
            " c.tsv = to_tsvector(c.ts_config::regconfig, array_to_string(c.section_path, E'\\n')"
            " || E'\\n' || c.text), c.tsv_length = ragstore_tsv_length(c.tsv)"
            " FROM chunks c JOIN collections k ON k.id = c.collection_id WHERE k.name = %s",
            (collection,),
        ).fetchall()
    assert rows
    for chunk_type, path, text_alone, path_and_text, length_ok in rows:
        assert length_ok
        if chunk_type == "heading" or not path:
            assert text_alone, (chunk_type, path)
        else:
            assert path_and_text and not text_alone, (chunk_type, path)


def test_a_changed_section_path_is_read_again(rt: Runtime, collection: str) -> None:
    """The chunk trigger recomputes the tsvector when the path changes, and the BM25
    statistics follow (the pruned list equals the exhaustive one)."""
    with rt.db.connection() as conn:
        cid, chunk = conn.execute(
            "SELECT c.collection_id, c.id FROM chunks c JOIN collections k"
            " ON k.id = c.collection_id WHERE k.name = %s"
            " AND c.section_path[2] = 'zorbulate(hostname)' AND c.chunk_type <> 'heading'",
            (collection,),
        ).fetchone()
        conn.execute(
            "UPDATE chunks SET section_path = ARRAY['Resolver reference', 'Quuxing'] WHERE id = %s",
            (chunk,),
        )
        got = conn.execute(
            "SELECT chunk_id FROM ragstore_bm25_topk(%s, 'english', 'quuxing', 5, 1.2, 0.75)",
            (cid,),
        ).fetchall()
        assert [r[0] for r in got] == [chunk]
        df = conn.execute(
            "SELECT df FROM bm25_terms WHERE collection_id = %s AND lexeme = 'quux'", (cid,)
        ).fetchone()
        assert df == (1,)
        conn.rollback()
