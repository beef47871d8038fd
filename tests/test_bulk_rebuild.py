"""A large load into a collection that holds chunks already (``BulkLoad.REBUILD``).

It is written in one transaction with the BM25 triggers off, like a first load; its
vectors are staged with the collection's old ones (less those of the chunks it replaced),
indexed there and swapped in; its chunks' postings are added to the collection's at the
end (revision 0030). What it leaves must search as the incremental path's does, and
searches of the collection must go on, on the old contents, while it runs: the space's
own table and index serve until the swap. Loads that bring less than a quarter of the stored
bytes, and unchanged files, stay incremental. And a BM25 rewrite of a store's only
collection keeps the postings' indexes (revision 0029).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragstore import integrity
from ragstore.config import Settings
from ragstore.db import documents, repository, spaces
from ragstore.errors import DatabaseError
from ragstore.ingest import ingest_paths, service
from ragstore.ingest.service import IngestInterrupted, IngestReport
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.bm25_rows import bm25_rows, bulk_loads, collection_keeping, full_text
from tests.conftest import TEMPLATE, create_database
from tests.models.corpus import write_corpus

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
# one made-up word per rewritten file, found by nothing else
WORDS = ("aardvark", "bassoon", "cormorant", "dulcimer", "egret", "fennel", "gazebo", "harpsichord")
KEEP = 3  # postings kept per term: lists are trimmed (past 6 in a load) and floors rise


@pytest.fixture(scope="module", autouse=True)
def stage_small_loads() -> Iterator[None]:
    """Stage loads of any size (only loads of tens of megabytes are staged by default)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "STAGE_MIN_BYTES", 0)
        yield


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Twelve CISI records as files, in two folders of six, and fifteen queries."""
    root = tmp_path_factory.mktemp("cisi")
    first, second = root / "first", root / "second"
    first.mkdir()
    second.mkdir()
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for n, line in zip(range(12), fh, strict=False):
            row = json.loads(line)
            folder = first if n < 6 else second
            (folder / f"cisi-{row['_id']}.txt").write_text(
                f"{row['title']}\n\n{row['text']}\n", encoding="utf-8"
            )
    with (CISI / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:15]
    return first, second, queries


def _vectors_match_chunks(rt: Runtime, coll: repository.Collection) -> int:
    """The space holds one vector per embeddable chunk and none of a chunk that is gone."""
    with rt.db.connection() as conn:
        vectors = spaces.count_vectors(conn, coll.table)
        row = conn.execute(
            "SELECT count(*) FROM chunks WHERE collection_id = %s AND chunk_type <> 'heading'",
            (coll.id,),
        ).fetchone()
        orphans = conn.execute(
            f"SELECT count(*) FROM {coll.table} e"
            " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = e.chunk_id)"
        ).fetchone()
        assert spaces.has_index(conn, coll.table)
    assert orphans == (0,)
    assert row is not None and vectors == row[0]
    return vectors


@pytest.fixture(scope="module")
def loaded(rt: Runtime, halves: tuple[Path, Path, list[str]]) -> Iterator[dict[str, Any]]:
    """Collection ``rb`` (the only one in the store then): the first half as a first load,
    the second half as a rebuilding load, with a look from another connection taken
    right after the load's BM25 build, before it commits. Then collection ``inc``: both
    halves through the incremental path."""
    first, second, queries = halves
    bulk_loads(rt, True)
    rb = collection_keeping(rt, "rb", KEEP)
    one = ingest_paths(rt, [first], "rb")
    assert not one.failed and "attach" in one.stages
    with rt.db.connection() as conn:
        before = {q: full_text(conn, rb.id, q) for q in queries}
    assert any(before.values())
    old_vectors = _vectors_match_chunks(rt, rb)
    old_postings = bm25_rows(rt, rb.id)["postings"]

    seen: dict[str, Any] = {}
    finish = documents.finish_bulk_add

    def finish_and_look(conn: Any, *args: Any) -> None:
        finish(conn, *args)
        # another connection, as a search would, while the load's transaction is open
        with rt.db.connect(autocommit=True) as other:
            other.execute("SET lock_timeout = '3s'")
            seen["full_text"] = {q: full_text(other, rb.id, q) for q in queries}
            seen["vectors"] = spaces.count_vectors(other, rb.table)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(documents, "finish_bulk_add", finish_and_look)
        two = ingest_paths(rt, [second], "rb")
    inc = collection_keeping(rt, "inc", KEEP)
    bulk_loads(rt, False)
    for folder in (first, second):
        report = ingest_paths(rt, [folder], "inc")
        assert not report.failed and "attach" not in report.stages
    bulk_loads(rt, True)
    yield {
        "rb": rb,
        "inc": inc,
        "two": two,
        "before": before,
        "seen": seen,
        "old_vectors": old_vectors,
        "old_postings": old_postings,
        "queries": queries,
    }


def test_a_load_as_large_as_the_collection_rebuilds_it(
    rt: Runtime, loaded: dict[str, Any], halves: tuple[Path, Path, list[str]]
) -> None:
    two: IngestReport = loaded["two"]
    assert not two.failed and two.count("added") == 6
    assert two.stages.keys() >= {"bm25_build", "index_build", "attach"}
    rb = loaded["rb"]
    assert _vectors_match_chunks(rt, rb) > loaded["old_vectors"]
    with rt.db.connection() as conn:
        staged = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'ragstore\\_load\\_%'"
        ).fetchone()
    assert staged == (0,)
    # a vector search finds old documents and new ones through the swapped-in index
    for folder in halves[:2]:
        path = sorted(folder.iterdir())[0]
        title = path.read_text(encoding="utf-8").split("\n", 1)[0]
        hits = search(rt, title, collection="rb", k=3, mode="vector")
        assert any(h.source.endswith(path.name) for h in hits), (title, hits)


def test_searches_go_on_during_the_load_and_see_the_old_contents(
    loaded: dict[str, Any],
) -> None:
    """Right after the load's BM25 build (its postings written in its open transaction)
    another connection's full-text top k neither waits for it nor sees it; the space's
    table is still the old one."""
    seen = loaded["seen"]
    assert seen["full_text"] == loaded["before"]
    assert seen["vectors"] == loaded["old_vectors"]


def _same_bm25(rt: Runtime, rb_id: int, inc_id: int, queries: list[str]) -> dict[str, Any]:
    """The bulk-loaded collection's statistics and document frequencies are the incremental
    one's, no posting is of a chunk that is gone, and every full-text top k is the exact
    one, equal to the incremental collection's. Returns the bulk one's BM25 rows."""
    got, want = bm25_rows(rt, rb_id), bm25_rows(rt, inc_id)
    assert got["stats"][:2] == want["stats"][:2] and got["stats"][5] == KEEP
    assert got["df"] == want["df"] and len(got["df"]) > 500
    assert any(floor > 0 for floor, _ in got["lists"].values())
    with rt.db.connection() as conn:
        stray = conn.execute(
            "SELECT count(*) FROM bm25_postings p JOIN bm25_terms t ON t.term_id = p.term_id"
            " WHERE t.collection_id = %s AND NOT EXISTS"
            " (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id AND c.collection_id = %s)",
            (rb_id, rb_id),
        ).fetchone()
        assert stray == (0,)
        for query in queries:
            exact = full_text(conn, rb_id, query, "exhaustive")
            assert exact, query
            assert full_text(conn, rb_id, query) == exact
            assert full_text(conn, inc_id, query, "exhaustive") == exact
    return got


def test_the_bulk_loaded_collection_searches_as_the_incremental_one(
    rt: Runtime, loaded: dict[str, Any]
) -> None:
    """The same statistics, frequencies and full-text lists as the same files loaded round
    by round; the postings the collection had are kept as they were (nothing rewritten,
    only trimmed), the load's added."""
    rb, inc = loaded["rb"], loaded["inc"]
    got = _same_bm25(rt, rb.id, inc.id, loaded["queries"])
    old, now = set(loaded["old_postings"]), set(got["postings"])
    assert len(old & now) > len(old) // 2 and len(now) > len(old & now)
    kept_exactly = {(p[0], p[1], p[2]): p[3:] for p in now}
    assert all(kept_exactly[p[:3]] == p[3:] for p in old if p[:3] in kept_exactly)
    assert _vectors_match_chunks(rt, rb) == _vectors_match_chunks(rt, inc)


def test_unchanged_files_and_small_loads_stay_incremental(
    rt: Runtime, loaded: dict[str, Any], halves: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    first, second, _ = halves
    again = ingest_paths(rt, [first, second], "rb")
    assert again.count("unchanged") == 12 and "attach" not in again.stages
    # the next records, just over the bulk threshold, into a collection of twelve: under
    # a quarter of the stored bytes
    ingest_paths(rt, [first, second], "small-later-load")
    more = tmp_path / "more"
    more.mkdir()
    size = 0
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in list(fh)[12:]:
            row = json.loads(line)
            path = more / f"cisi-{row['_id']}.txt"
            path.write_text(f"{row['title']}\n\n{row['text']}\n", encoding="utf-8")
            size += path.stat().st_size
            if size > 2048:
                break
    stored = sum(f.stat().st_size for f in [*first.iterdir(), *second.iterdir()])
    assert size < 0.25 * stored
    added = ingest_paths(rt, [more], "small-later-load")
    assert not added.failed and added.count("added") >= 1 and "attach" not in added.stages


def test_a_load_replacing_most_documents_keeps_no_vector_of_the_old_ones(
    rt: Runtime, loaded: dict[str, Any], halves: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    """Eight of the twelve files rewritten (a new last line, so another size): the load
    rebuilds, carrying over the four unchanged documents' vectors and none of the eight
    replaced ones; a search finds the new line, and BM25 equals a rebuild of the same
    edits made incrementally."""
    first, second, _ = halves
    names = sorted(first.iterdir()) + sorted(second.iterdir())
    edited = set(names[::3]) ^ set(names)  # eight of twelve
    assert len(edited) == 8
    words = dict(zip(sorted(edited), WORDS, strict=True))
    for path, word in words.items():
        path.write_text(
            path.read_text(encoding="utf-8") + f"\nRevised edition note: {word}.\n", "utf-8"
        )
    report = ingest_paths(rt, [first, second], "rb")
    assert report.count("updated") == 8 and report.count("unchanged") == 4
    assert "attach" in report.stages
    bulk_loads(rt, False)
    try:
        inc = ingest_paths(rt, [first, second], "inc")
    finally:
        bulk_loads(rt, True)
    assert inc.count("updated") == 8 and "attach" not in inc.stages
    rb_coll, inc_coll = loaded["rb"], loaded["inc"]
    _vectors_match_chunks(rt, rb_coll)
    _same_bm25(rt, rb_coll.id, inc_coll.id, loaded["queries"])
    for path, word in words.items():
        hits = search(rt, word, collection="rb", k=1, mode="fulltext")
        assert hits and hits[0].source.endswith(path.name) and word in hits[0].text


def _snapshot(rt: Runtime, name: str) -> dict[str, Any]:
    """What a collection holds: documents, vectors by chunk, BM25 rows."""
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        docs = conn.execute(
            "SELECT source, content_hash FROM documents WHERE collection_id = %s ORDER BY 1",
            (coll.id,),
        ).fetchall()
        vectors = conn.execute(
            f"SELECT chunk_id, embedding::text FROM {coll.table} ORDER BY 1"
        ).fetchall()
        assert spaces.has_index(conn, coll.table)
    return {"documents": docs, "vectors": vectors, "bm25": bm25_rows(rt, coll.id)}


def test_a_rebuilding_load_that_fails_leaves_the_collection_as_it_was(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load's connection dies in its BM25 build: every file of the load is reported
    failed, the collection keeps its documents, vectors, index and BM25 rows as they were,
    and no staged table is left; the same load then goes through."""
    bulk_loads(rt, True)
    first = write_corpus(tmp_path / "a", docs=8, paragraphs=3, prefix="kept")
    assert not ingest_paths(rt, [first], "rb-fails").failed
    before = _snapshot(rt, "rb-fails")

    def dying(conn: Any, *_: object) -> None:
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    real = documents.finish_bulk_add
    monkeypatch.setattr(documents, "finish_bulk_add", dying)
    more = write_corpus(tmp_path / "b", docs=8, paragraphs=3, prefix="lost")
    report = ingest_paths(rt, [more], "rb-fails")
    assert report.outcomes and all(o.status == "failed" for o in report.outcomes)
    assert _snapshot(rt, "rb-fails") == before
    with rt.db.connection() as conn:
        staged = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'ragstore\\_load\\_%'"
        ).fetchone()
    assert staged == (0,)
    monkeypatch.setattr(documents, "finish_bulk_add", real)
    again = ingest_paths(rt, [more], "rb-fails")
    assert not again.failed and "attach" in again.stages
    assert _vectors_match_chunks(rt, rt.collection("rb-fails")) > len(before["vectors"])


def test_a_rebuild_whose_swap_is_refused_adds_only_the_new_rows(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A swap that fails in its savepoint (a lock timeout would): the staged rows the
    space's own table lacks are copied into it, through its live index, and nothing is
    there twice."""
    bulk_loads(rt, True)
    first = write_corpus(tmp_path / "a", docs=8, paragraphs=3, prefix="old")
    assert not ingest_paths(rt, [first], "rb-copied").failed
    before = _snapshot(rt, "rb-copied")

    def refused(*_: object) -> None:
        raise spaces._NotSwapped("refused by the test")

    monkeypatch.setattr(spaces, "_rename", refused)
    more = write_corpus(tmp_path / "b", docs=8, paragraphs=3, prefix="new")
    with caplog.at_level(logging.WARNING, "ragstore.db"):
        report = ingest_paths(rt, [more], "rb-copied")
    assert not report.failed and "refused by the test" in caplog.text
    after = _snapshot(rt, "rb-copied")
    assert set(before["vectors"]) < set(after["vectors"])
    assert _vectors_match_chunks(rt, rt.collection("rb-copied")) == len(after["vectors"])
    hits = search(rt, "Paragraph 1 of new3", collection="rb-copied", k=1, mode="vector")
    assert hits and "new3" in hits[0].text


def test_rewriting_the_stores_only_collection_does_not_hold_searches(
    pg_admin_uri: str,
    template_url: str,
    halves: tuple[Path, Path, list[str]],
    tmp_path: Path,
) -> None:
    """Revision 0029: ``ragstore_bm25_rebuild`` of the one collection a store has (as an
    operator runs it after changing k1 or b) used to find the postings table empty after
    deleting the collection's rows, and dropped its indexes until it committed: another
    connection's full-text search then waited. It now gets the old lists at once."""
    url = create_database(pg_admin_uri, TEMPLATE)  # a store of its own: one collection
    with Runtime(Settings(database_url=url, data_dir=tmp_path, profile="test")) as alone:
        bulk_loads(alone, False)
        coll = collection_keeping(alone, "alone", KEEP)
        assert not ingest_paths(alone, [halves[0]], "alone").failed
        query = halves[2][0]
        with alone.db.connection() as conn:
            before = full_text(conn, coll.id, query)
        assert before
        with alone.db.connection() as rewriting:
            rewriting.execute("SELECT ragstore_bm25_rebuild(%s)", (coll.id,))
            with alone.db.connect(autocommit=True) as other:
                other.execute("SET lock_timeout = '2s'")
                assert full_text(other, coll.id, query) == before


@pytest.mark.parametrize("where", ["bm25", "attach", "interrupted-bm25", "interrupted-attach"])
def test_a_rebuilding_load_rewriting_the_stored_files_that_fails_keeps_the_old_versions(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A rebuilding load that rewrites every stored file and fails, or is interrupted
    (Ctrl-C), in its BM25 build or where its staged table is attached: the old versions
    stay whole (documents, vectors, BM25 rows), both searches find the old text, and
    ``db check`` finds nothing, no staged table left behind either. An interrupt after
    the staging transaction had committed used to leave its table to the next load."""
    bulk_loads(rt, True)
    name = f"rb-rewrite-{where}"
    folder = write_corpus(tmp_path / "a", docs=8, paragraphs=3, prefix="kept")
    assert not ingest_paths(rt, [folder], name).failed
    before = _snapshot(rt, name)
    for f in folder.iterdir():
        f.write_text(f.read_text().replace("kept", "lost") + "\nA later paragraph on zebras.\n")

    def failing(*_: object, **__: object) -> None:
        if where.startswith("interrupted"):
            raise KeyboardInterrupt
        raise DatabaseError("failed by the test")

    if where.endswith("attach"):
        monkeypatch.setattr(spaces, "attach_load_table", failing)
    else:
        monkeypatch.setattr(documents, "finish_bulk_add", failing)
    if where.startswith("interrupted"):
        with pytest.raises(IngestInterrupted) as stopped:
            ingest_paths(rt, [folder], name)
        assert not stopped.value.report.outcomes, "nothing of the load was stored"
    else:
        report = ingest_paths(rt, [folder], name)
        assert [o.status for o in report.outcomes] == ["failed"] * 8
    monkeypatch.undo()
    assert _snapshot(rt, name) == before
    hits = search(rt, "Paragraph 1 of kept3", collection=name, k=1, mode="vector")
    assert hits and "kept3" in hits[0].text
    hits = search(rt, "kept3", collection=name, k=1, mode="fulltext")
    assert hits and "kept3" in hits[0].text
    found = integrity.check(rt, name)
    assert found.ok, found.findings
