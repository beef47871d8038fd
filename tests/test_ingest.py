"""Ingest on the real database with the real model: storage, idempotence, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search

DOC_A = """# Gardening

## Tomatoes

Tomatoes need full sun, deep watering twice a week and a stake to climb.

## Roses

Prune roses in late winter, just above an outward-facing bud.
"""
DOC_B = "Sourdough bread rises slowly.\n\nFeed the starter with flour and water every day.\n"


def _counts(rt: Runtime, collection: str) -> tuple[int, int, int]:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        docs = conn.execute(
            "SELECT count(*) FROM documents WHERE collection_id = %s", (coll.id,)
        ).fetchone()
        chunks = conn.execute(
            "SELECT count(*), max(id) FROM chunks WHERE collection_id = %s", (coll.id,)
        ).fetchone()
        vecs = conn.execute(f"SELECT count(*) FROM {coll.table}").fetchone()
    assert docs and chunks and vecs
    return int(docs[0]), int(chunks[0]), int(vecs[0])


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "garden.md").write_text(DOC_A)
    (tmp_path / "bread.txt").write_text(DOC_B)
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    return tmp_path


def test_ingest_stores_documents_chunks_and_vectors(rt: Runtime, corpus: Path) -> None:
    report = ingest_paths(rt, [corpus], "garden")
    assert report.count("added") == 2 and not report.failed
    docs, chunks, vecs = _counts(rt, "garden")
    assert docs == 2
    # 3 headings + one chunk for the two short sections in the markdown file, one chunk
    # for the two short paragraphs of the text file
    assert chunks == 5
    assert vecs == 2, "headings carry no vector; every other chunk has one"


def test_ingest_records_section_path_and_parent(rt: Runtime, corpus: Path) -> None:
    ingest_paths(rt, [corpus], "parents")
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT c.section_path, p.text, c.text, c.metadata FROM chunks c"
            " JOIN chunks p ON p.id = c.parent_id WHERE c.text LIKE '%Prune roses%'"
        ).fetchone()
    assert row is not None
    # "Roses" is too short for a chunk of its own: it runs on from "Tomatoes", its heading
    # line kept in the text and named in the metadata
    assert row[0] == ["Gardening", "Tomatoes"]
    assert row[1] == "Tomatoes"
    assert "\n\n## Roses\n\nPrune roses" in row[2] and row[3]["headings"] == ["Roses"]


def test_reingest_of_unchanged_files_embeds_nothing_and_writes_nothing(
    rt: Runtime, corpus: Path
) -> None:
    ingest_paths(rt, [corpus], "idem")
    before = _counts(rt, "idem")
    with rt.db.connection() as conn:
        stamps = conn.execute("SELECT source, updated_at FROM documents ORDER BY source").fetchall()
    report = ingest_paths(rt, [corpus], "idem")
    assert report.count("unchanged") == 2
    assert report.embedded == 0 and report.reused == 0
    assert _counts(rt, "idem") == before
    with rt.db.connection() as conn:
        assert (
            conn.execute("SELECT source, updated_at FROM documents ORDER BY source").fetchall()
            == stamps
        )


def test_changed_file_is_replaced_and_unchanged_chunks_reuse_their_vectors(
    rt: Runtime, corpus: Path
) -> None:
    ingest_paths(rt, [corpus], "change")
    herbs = " ".join(["Basil likes warmth and rich soil, and a sunny windowsill indoors."] * 6)
    (corpus / "garden.md").write_text(DOC_A + f"\n## Herbs\n\n{herbs}\n")
    report = ingest_paths(rt, [corpus], "change")
    assert report.count("updated") == 1 and report.count("unchanged") == 1
    assert report.embedded == 1, "only the new section is sent to the model"
    assert report.reused == 1
    hits = search(rt, "which herb likes warmth?", collection="change", k=1)
    assert "Basil" in hits[0].text


def test_search_finds_the_right_chunk(rt: Runtime, corpus: Path) -> None:
    ingest_paths(rt, [corpus], "rank")
    hits = search(rt, "when should I cut back my rose bushes?", collection="rank", k=3)
    assert "Prune roses" in hits[0].text
    assert hits[0].section_path == ["Gardening", "Tomatoes"]
    assert hits[0].metadata["headings"] == ["Roses"]
    assert hits[0].score > hits[-1].score


def test_bad_files_fail_alone_and_leave_nothing_behind(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text(DOC_A)
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00def" * 10)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    report = ingest_paths(rt, [tmp_path, tmp_path / "missing.md"], "bad")
    codes = {Path(o.source).name: o.code for o in report.failed}
    assert codes == {
        "empty.md": "empty_document",
        "binary.txt": "binary_file",
        "latin1.txt": "invalid_encoding",
        "missing.md": "path_not_found",
    }
    assert report.count("added") == 1
    latin = next(o for o in report.failed if o.code == "invalid_encoding")
    assert "invalid UTF-8 at byte 3 (line 1)" in (latin.error or "")
    docs, _, _ = _counts(rt, "bad")
    assert docs == 1


def test_a_round_that_fails_in_the_database_falls_back_to_one_document_at_a_time(
    rt: Runtime, tmp_path: Path
) -> None:
    """A round is written in one transaction; when the database refuses one document, the
    round is retried document by document: that one fails alone, leaving nothing behind,
    and the others of the same round are stored."""
    for name in ("a", "b", "poison", "c"):
        (tmp_path / f"{name}.txt").write_text(f"Paragraph about {name} and its properties.\n")
    with rt.db.connection() as conn:
        conn.execute("""
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.source LIKE '%poison%' THEN
                    RAISE EXCEPTION 'poisoned document' USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON documents
                FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """)
    try:
        report = ingest_paths(rt, [tmp_path], "fallback")
    finally:
        with rt.db.connection() as conn:
            conn.execute("DROP TRIGGER refuse_poison ON documents; DROP FUNCTION refuse_poison()")
    assert report.count("added") == 3
    assert [Path(o.source).name for o in report.failed] == ["poison.txt"]
    assert _counts(rt, "fallback") == (3, 3, 3)
    with rt.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%poison%'").fetchone()
    assert row is not None and row[0] == 0


def test_new_metadata_on_unchanged_bytes_updates_the_document(rt: Runtime, tmp_path: Path) -> None:
    """The same file ingested again with other metadata is stored with it (it was
    answered "unchanged" and the new metadata dropped), its chunks keeping their vectors;
    ingested again with the same metadata, in any key order, it is unchanged."""
    (tmp_path / "team.md").write_text(DOC_A)
    first = ingest_paths(rt, [tmp_path], "meta-change", metadata={"team": "a", "tier": 1})
    assert first.count("added") == 1 and first.embedded > 0
    again = ingest_paths(rt, [tmp_path], "meta-change", metadata={"tier": 1, "team": "a"})
    assert again.count("unchanged") == 1
    moved = ingest_paths(rt, [tmp_path], "meta-change", metadata={"team": "b", "tier": 1})
    assert moved.count("updated") == 1
    assert moved.embedded == 0, "only the metadata changed: no chunk is embedded again"
    (outcome,) = moved.outcomes
    assert outcome.document and outcome.document["metadata"]["team"] == "b"
    assert search(rt, "tomatoes", collection="meta-change", where={"document.team": "b"})
    assert not search(rt, "tomatoes", collection="meta-change", where={"document.team": "a"})


def test_a_file_without_metadata_keeps_its_content_hash(rt: Runtime, tmp_path: Path) -> None:
    """Files ingested without metadata hash as before (their bytes and the chunking
    version), so an upgrade re-chunks none of them."""
    import hashlib

    from ragstore.chunking import CHUNKING_VERSION

    (tmp_path / "plain.md").write_text(DOC_B)
    report = ingest_paths(rt, [tmp_path], "meta-plain")
    (outcome,) = report.outcomes
    want = hashlib.sha256(f"ragstore-chunking-{CHUNKING_VERSION}\n".encode() + DOC_B.encode())
    assert outcome.document and outcome.document["content_hash"] == want.hexdigest()


def test_modified_at_is_the_time_of_the_content_stored(rt: Runtime, tmp_path: Path) -> None:
    """A file written after it was read (while it was parsed) kept its old content but
    got the new ``modified_at``: the time was looked up by name after the parse."""
    from datetime import UTC, datetime

    from ragstore.ingest import prepare
    from ragstore.ingest.service import Item

    f = tmp_path / "late.md"
    f.write_text("Figs ripen late in summer.\n")
    os.utime(f, (1_000_000_000, 1_000_000_000))

    coll = rt.collection("mtime1", create=True)
    job = prepare.Job(rt.embedder_for(coll), coll.model.max_tokens, 1 << 20, {})
    real_parse = prepare.parse_file

    def parse_then_rewrite(*args: object, **kwargs: object) -> object:
        out = real_parse(*args, **kwargs)  # type: ignore[arg-type]
        f.write_text("Figs were eaten by birds.\n")
        os.utime(f, (2_000_000_000, 2_000_000_000))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prepare, "parse_file", parse_then_rewrite)
        got = prepare.prepare(job, Item(str(f), f, str(f)), None)
    assert got.record is not None and got.error is None
    assert [c.text for c in got.chunks] == ["Figs ripen late in summer."]
    stamp = datetime.fromtimestamp(1_000_000_000, tz=UTC).isoformat()
    assert got.record.metadata["modified_at"] == stamp
