"""The bulk write path: a large first load defers the space's HNSW index and builds it once
at the end; small loads stay incremental, and a load into a non-empty space never drops
its index (tests/test_bulk_rebuild.py: one a quarter its size or more rebuilds it on the
side); a load that was killed with the index deferred gets it back from the next ingest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.db import spaces
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.models.corpus import write_corpus


@pytest.fixture(scope="module")
def bulk_rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime whose bulk threshold is 2 KB and whose rounds are small, so a few files
    make a bulk load written in several transactions."""
    rt = Runtime(settings.model_copy(update={"bulk_load_bytes": 2048, "ingest_batch_chunks": 8}))
    yield rt
    rt.close()


def _indexed_during(rt: Runtime, folder: Path, name: str) -> list[bool]:
    seen: list[bool] = []

    def progress(event: str, files: int, chunks: int) -> None:
        coll = rt.collection(name)
        with rt.db.connection() as conn:
            seen.append(spaces.has_index(conn, coll.table))

    report = ingest_paths(rt, [folder], name, progress=progress)
    assert not report.failed and seen
    return seen


def test_a_large_first_load_builds_the_index_once_at_the_end(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    folder = write_corpus(tmp_path / "a", docs=8, paragraphs=3)
    assert sum(f.stat().st_size for f in folder.iterdir()) > 2048
    assert not any(_indexed_during(bulk_rt, folder, "bulk")), "index deferred during the load"
    coll = bulk_rt.collection("bulk")
    with bulk_rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)
    # a second load into the now non-empty space (as large: it rebuilds the index on the
    # side) keeps the space's index throughout
    more = write_corpus(tmp_path / "b", docs=8, paragraphs=3, prefix="more")
    assert all(_indexed_during(bulk_rt, more, "bulk"))
    text = (
        "Paragraph 2 of more5: common mistakes with glaciers, with detail number 502 that "
        "nobody else repeats."
    )
    hits = search(bulk_rt, text, collection="bulk", k=3, mode="vector")
    assert hits and text in hits[0].text


def test_a_small_first_load_is_incremental(bulk_rt: Runtime, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "s", docs=1, paragraphs=2)
    assert all(_indexed_during(bulk_rt, folder, "small"))


def test_a_killed_bulk_load_gets_its_index_back(bulk_rt: Runtime, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "k", docs=1, paragraphs=2)
    ingest_paths(bulk_rt, [folder], "killed")
    coll = bulk_rt.collection("killed")
    with bulk_rt.db.connection() as conn:  # as a load killed before its final build
        spaces.drop_index(conn, coll.table)
    ingest_paths(
        bulk_rt, [write_corpus(tmp_path / "k2", docs=1, paragraphs=1, prefix="x")], "killed"
    )
    with bulk_rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)


def test_a_first_load_from_256_kib_is_bulk_under_the_default_limit(
    rt: Runtime, tmp_path: Path
) -> None:
    """``RAGSTORE_BULK_LOAD_BYTES`` is 4 MiB by default, but a first load is a bulk load
    from 256 KiB (row by row it was 3-4x slower at 1 MB); a load of that size into the
    collection once it holds rows stays incremental."""
    assert rt.settings.bulk_load_bytes > 1 << 20
    folder = write_corpus(tmp_path / "f", docs=36, paragraphs=12, long=True)
    assert 256 << 10 < sum(f.stat().st_size for f in folder.iterdir()) < 1 << 20
    assert not any(_indexed_during(rt, folder, "first256")), "index deferred during the load"
    coll = rt.collection("first256")
    with rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)
    more = write_corpus(tmp_path / "m", docs=36, paragraphs=12, long=True, prefix="more")
    assert all(_indexed_during(rt, more, "first256")), "a second load: incremental"
    # both loads' chunks are found by their words (the bulk load's BM25 built, the
    # second load's rows added to it)
    hits = search(rt, "1105", collection="first256", k=5, mode="fulltext")
    assert {Path(h.source).parent.name for h in hits} == {"f", "m"}
    assert all("1105" in h.text for h in hits)
