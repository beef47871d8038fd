"""Context around hits is of the version of the document that the search read: the context
is read after the search, in statements of its own, and a document replaced in between
gave a hit of its old version the new version's chunks around it (the old ordinals, in a
document of other chunks); a deleted one, a hit with an empty context. The context
statements now check each hit's chunk is still there, and the search runs once more when
one is not (search/context.py ``with_context``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from ragstore.db.repository import Collection
from ragstore.runtime import Runtime
from ragstore.search import context, service
from ragstore.store import Store, search_response
from tests.conftest import run_cli
from tests.search_helpers import make_collection

SOURCE = "orchard.md"
OLD = (
    "# Orchard\n\n## Apples\n\nApples grow on trees in the orchard.\n\n"
    "## Pears\n\nPears ripen after they are picked.\n\n## Plums\n\nPlums are dried as prunes.\n"
)
# one section more at the top: every ordinal of the old version holds another chunk
NEW = "# Orchard\n\n## Cherries\n\nCherries are eaten by birds.\n\n" + OLD.split("\n\n", 1)[1]
OTHER = ("kitchen.md", "# Kitchen\n\n## Apples\n\nApples are baked in a pie with cinnamon.\n")
_names = itertools.count()


@pytest.fixture()
def coll(rt: Runtime) -> Collection:
    """A collection of its own for each test: the tests write its orchard document again."""
    made = make_collection(rt, f"ctxsnap{next(_names)}")
    store = Store.from_runtime(rt)
    store.add_document(made.name, SOURCE, OLD)
    store.add_document(made.name, *OTHER)
    return made


@pytest.fixture()
def after_search(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], Any]]:
    """Writes made after a search has read and before its context is read (one a search),
    from another connection: the interleaving of a write landing between the two."""
    writes: list[Callable[[], Any]] = []
    original = service.search

    def search(*args: Any, **kw: Any) -> Any:
        hits = original(*args, **kw)
        if writes:
            writes.pop(0)()
        return hits

    monkeypatch.setattr(service, "search", search)
    return writes


def _current(rt: Runtime, coll: Collection) -> dict[int, set[int]]:
    """Each document's chunk ids now."""
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT document_id, array_agg(id) FROM chunks WHERE collection_id = %s"
            " GROUP BY document_id",
            (coll.id,),
        ).fetchall()
    return {int(d): set(ids) for d, ids in rows}


def _assert_consistent(rt: Runtime, coll: Collection, data: list[dict[str, Any]]) -> None:
    """Every hit's context is its own document's chunks now, the hit among them."""
    now = _current(rt, coll)
    for hit in data:
        ids = {c["chunk_id"] for c in hit["context"]}
        assert hit["chunk_id"] in ids, f"{hit['text']!r} came back amid another version"
        assert ids <= now[hit["document_id"]]


def _sources(data: list[dict[str, Any]]) -> set[str]:
    """The file names of the hits' documents (stored under the collection's uploads)."""
    return {h["source"].rsplit("/", 1)[-1] for h in data}


def _rewrite(rt: Runtime, coll: Collection, text: str) -> Callable[[], Any]:
    return lambda: Store.from_runtime(rt).add_document(coll.name, SOURCE, text)


@pytest.mark.parametrize(
    ("mode", "ctx"),
    [("hybrid", 1), ("vector", 2), ("fulltext", 1), ("hybrid", "section")],
)
def test_a_document_replaced_before_the_context_is_read_gives_the_new_version(
    rt: Runtime,
    coll: Collection,
    after_search: list[Callable[[], Any]],
    mode: str,
    ctx: int | str,
) -> None:
    after_search.append(_rewrite(rt, coll, NEW))
    data = search_response(rt, coll.name, "apples", k=10, mode=mode, context=ctx).model_dump()[
        "data"
    ]
    assert not after_search
    assert _sources(data) == {SOURCE, OTHER[0]}, "both documents still answer"
    _assert_consistent(rt, coll, data)
    orchard = " ".join(
        c["text"] for h in data if h["source"].endswith(SOURCE) for c in h["context"]
    )
    if ctx != 1 or mode != "fulltext":  # the full-text hit's one neighbour is a heading
        assert "Cherries" in orchard or "Apples grow" in orchard


def test_a_document_deleted_before_the_context_is_read_leaves_no_hit(
    rt: Runtime, coll: Collection, after_search: list[Callable[[], Any]]
) -> None:
    store = Store.from_runtime(rt)
    doc = next(d for d in store.list_documents(coll.name)["data"] if d["source"].endswith(SOURCE))
    after_search.append(lambda: store.delete_document(coll.name, doc["id"]))
    data = search_response(rt, coll.name, "apples", k=10, context=1).model_dump()["data"]
    assert _sources(data) == {OTHER[0]}
    assert all(h["context"] for h in data)
    # section mode: the document was deleted, so the hook has nothing left to do
    data = search_response(rt, coll.name, "apples", k=10, context="section").model_dump()["data"]
    assert _sources(data) == {OTHER[0]}


def test_a_document_written_again_at_each_search_leaves_out_its_stale_hits(
    rt: Runtime, coll: Collection, after_search: list[Callable[[], Any]]
) -> None:
    after_search.extend([_rewrite(rt, coll, NEW), _rewrite(rt, coll, OLD)])
    data = search_response(rt, coll.name, "apples", k=10, context="section").model_dump()["data"]
    assert not after_search, "the search ran twice"
    assert _sources(data) == {OTHER[0]}, "the orchard hits were left out"
    _assert_consistent(rt, coll, data)


def test_without_a_search_to_run_again_a_stale_hit_is_left_out(
    rt: Runtime, coll: Collection
) -> None:
    hits = service.search(rt, "apples", collection=coll.name, k=10, mode="fulltext")
    assert {h.source.rsplit("/", 1)[-1] for h in hits} == {SOURCE, OTHER[0]}
    _rewrite(rt, coll, NEW)()
    for mode in (1, "section"):
        kept = context.with_context(rt, hits, mode)
        assert [h.source.rsplit("/", 1)[-1] for h in kept] == [OTHER[0]]


def test_the_cli_reads_the_context_of_the_version_it_answers_with(
    rt: Runtime,
    coll: Collection,
    cli_env: dict[str, str],
    after_search: list[Callable[[], Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    after_search.append(_rewrite(rt, coll, NEW))
    argv = ["search", "apples", "-c", coll.name, "--json", "--context", "1", "--mode", "fulltext"]
    assert run_cli(*argv) == 0
    assert not after_search
    _assert_consistent(rt, coll, json.loads(capsys.readouterr().out))
