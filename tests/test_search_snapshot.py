"""A hybrid search answers with one version of each document: its two lists, run at once on
two connections, each read the database at its own moment, and a document replaced in
between came back with hits of its old chunks (one list) and its new ones (the other).
The lists now run again, then in one snapshot (search/service.py ``_hybrid_lists``)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ragstore.db.repository import Collection
from ragstore.runtime import Runtime
from ragstore.search import search, service
from tests.search_helpers import Doc, make_collection, write_docs

SOURCE = "apples.md"
OLD = ["apples grow on trees", "apples ripen on trees in the orchard"]
NEW = ["apples fall from trees", "apples drop from trees in the autumn wind"]
OTHERS = [
    Doc("pears.md", ["pears are picked before they are ripe"]),
    Doc("bread.md", ["knead the dough and let it rise overnight"]),
]
_names = itertools.count()


@pytest.fixture()
def coll(rt: Runtime) -> Collection:
    """A collection of its own for each test: the tests write its apples document again."""
    made = make_collection(rt, f"snapshot{next(_names)}")
    write_docs(rt, made, [Doc(SOURCE, OLD), *OTHERS])
    return made


@pytest.fixture()
def written_between(
    rt: Runtime, coll: Collection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[list[str]]]:
    """Versions of the apples document, each written after a hybrid search's BM25 list has
    read and before its vector list reads (one a round of the two lists), from another
    connection: the interleaving of a write that lands between the two statements."""
    versions: list[list[str]] = []
    original = service._Statement.execute
    bm25_read = threading.Event()

    def execute(self: service._Statement, stmt: Any, values: Any, **kw: Any) -> Any:
        if not kw.get("hnsw"):  # the BM25 list, on the list thread
            rows = original(self, stmt, values, **kw)
            bm25_read.set()
            return rows
        assert bm25_read.wait(30), "the BM25 list did not run"
        bm25_read.clear()
        if versions:
            write_docs(rt, coll, [Doc(SOURCE, versions.pop(0))])
        return original(self, stmt, values, **kw)

    monkeypatch.setattr(service._Statement, "execute", execute)
    yield versions


def _apples(rt: Runtime, coll: Collection) -> set[str]:
    hits = search(rt, "apples trees", collection=coll.name, k=10, mode="hybrid")
    assert {h.source for h in hits} >= {SOURCE}
    assert len({h.document_id for h in hits if h.source == SOURCE}) == 1
    return {h.text for h in hits if h.source == SOURCE}


def test_a_document_written_between_the_lists_shows_one_version(
    rt: Runtime, coll: Collection, written_between: list[list[str]]
) -> None:
    # without the check the hits held both "apples grow on trees" (the BM25 list's old
    # chunks) and "apples fall from trees" (the vector list's new ones)
    written_between.append(NEW)
    assert _apples(rt, coll) <= set(NEW)
    assert not written_between


def test_a_document_written_again_and_again_is_read_in_one_snapshot(
    rt: Runtime,
    coll: Collection,
    written_between: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a write between the lists of every try: the last resort reads both lists at once
    versions = [NEW, OLD, NEW, OLD][: 1 + service.SNAPSHOT_RETRIES]
    written_between.extend(versions)
    snapshots: list[int] = []
    original = service._Statement.execute_in_one_snapshot

    def in_one_snapshot(self: service._Statement, lists: Any) -> Any:
        snapshots.append(len(lists))
        return original(self, lists)

    monkeypatch.setattr(service._Statement, "execute_in_one_snapshot", in_one_snapshot)
    assert _apples(rt, coll) <= set(versions[-1])
    assert snapshots == [2]
    assert not written_between


@pytest.mark.parametrize(
    ("query", "where", "sections"),
    [
        ("apples trees", None, True),
        ("apples trees", None, False),
        ('"apples grow" trees -pears', None, True),  # a constrained list: the condition as text
        ("apples ripe", {"source": SOURCE}, True),  # a filtered one
    ],
)
def test_the_one_snapshot_path_answers_as_the_lists_at_once(
    rt: Runtime,
    coll: Collection,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    where: dict[str, Any] | None,
    sections: bool,
) -> None:
    def hits() -> list[tuple[Any, ...]]:
        return [
            (h.chunk_id, h.document_id, h.text, h.score, h.section_hits, h.explain)
            for h in search(
                rt,
                query,
                collection=coll.name,
                k=5,
                mode="hybrid",
                where=where,
                sections=sections,
                explain=True,
            )
        ]

    normal = hits()
    assert normal
    tries: list[int] = []
    monkeypatch.setattr(service, "_mixed_writes", lambda *lists: bool(tries.append(1)) or True)
    assert hits() == normal
    assert len(tries) == 1 + service.SNAPSHOT_RETRIES
    # the pooled connections went back as they came: not in autocommit, no transaction
    with rt.db.connection() as conn:
        assert not conn.autocommit
        assert conn.execute("SHOW transaction_isolation").fetchone() == ("read committed",)


def _row(doc: int, source: str, version: str) -> tuple[Any, ...]:
    return (1, 0.5, doc, source, None, "t", "paragraph", [], 0, None, "{}", None, version)


def test_mixed_writes() -> None:
    same = [_row(1, "a", "700"), _row(2, "b", "701")]
    assert not service._mixed_writes(same, [_row(1, "a", "700")])
    assert not service._mixed_writes(same, [])
    # one document at two versions of its row
    assert service._mixed_writes(same, [_row(1, "a", "702")])
    # one source as two documents: deleted and added again between the lists
    assert service._mixed_writes(same, [_row(3, "a", "702")])
