"""A number in a filter compares with every digit it has, in each search list and in the
texts' selections: a decimal of 17 significant digits bound as float8 and cast to numeric
kept 15 of them, so the vector list and the texts' queries compared another number than
the one stored (and than the full-text list, which got the exact literal)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from ragstore import Store
from ragstore.config import Settings
from ragstore.search import compile_filter, service

X = 1717171717.1234567  # 17 significant digits: float8 -> numeric keeps 1717171717.12346
Y = 1717171717.1234599
BIG = 2**53 + 1  # an integer a float8 cannot hold
COLL = "precision"
TEXTS = {
    "x": ("Quarterly report on the search service latency.", {"ts": X, "n": BIG}),
    "y": ("Quarterly report on the search service errors.", {"ts": Y, "n": BIG + 2}),
}


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        ids = list(TEXTS)
        s.add_texts(COLL, [TEXTS[i][0] for i in ids], [TEXTS[i][1] for i in ids], ids=ids)
        yield s


WHERE: list[tuple[dict[str, Any], list[str]]] = [
    ({"ts": {"$gte": X, "$lte": X}}, ["x"]),
    ({"ts": {"$lt": X}}, []),
    ({"ts": {"$gt": X}}, ["y"]),
    ({"ts": {"$lte": Y, "$gt": X}}, ["y"]),
    ({"ts": X}, ["x"]),
    ({"ts": {"$in": [Y]}}, ["y"]),
    ({"ts": {"$ne": X}}, ["y"]),
    ({"n": {"$gt": BIG}}, ["y"]),
    ({"n": {"$gte": BIG, "$lte": BIG}}, ["x"]),
    ({"n": BIG + 2}, ["y"]),
    ({"ts": {"$gte": np.float64(X), "$lte": np.float64(X)}}, ["x"]),  # a float's subclass
    ({"ts": {"$gt": -1e300, "$lt": 1e300}}, ["x", "y"]),  # an exponent's digits
]


def _searched(store: Store, where: dict[str, Any], mode: str) -> list[str]:
    found = store.search(COLL, "quarterly search report", k=10, mode=mode, where=where)
    return sorted({h["source"] for h in found["data"]})


def _check_all(store: Store) -> None:
    for where, expected in WHERE:
        for mode in ("vector", "fulltext", "hybrid"):
            assert _searched(store, where, mode) == expected, (where, mode)
        assert store.text_ids(COLL, where=where) == expected, where


def test_a_decimal_bound_keeps_every_digit(store: Store) -> None:
    """Each list, and the texts' selection, keeps the texts whose stored number is within
    the bounds exactly as written."""
    _check_all(store)


def test_an_indexed_number_field_compares_every_digit(store: Store) -> None:
    """Through an indexed field's candidates too (its probe binds the bounds the same way)."""
    store.index_field("ts", "number")
    try:
        compiled = compile_filter(
            {"ts": {"$gt": X}}, indexed=[f for f in _indexed(store) if f.keys == ("ts",)]
        )
        assert compiled.candidates is not None  # the probe is in play
        _check_all(store)
    finally:
        store.drop_field_index("ts", "number")


def _indexed(store: Store) -> list[Any]:
    from ragstore.db import field_indexes

    with store.runtime.db.connection() as conn:
        return list(field_indexes.indexed(conn))


def test_delete_where_deletes_by_the_exact_bound(settings: Settings) -> None:
    """``delete_texts_where`` selects as ``text_ids`` does: only the text above X goes."""
    with Store(settings=settings) as s:
        s.add_texts("precision-delete", ["one", "two"], [{"ts": X}, {"ts": Y}], ids=["x", "y"])
        assert s.delete_texts_where("precision-delete", where={"ts": {"$gt": X}}) == ["y"]
        assert s.text_ids("precision-delete") == ["x"]


@pytest.mark.parametrize(("bound", "path"), [(2, "few"), (1, "many")])
def test_a_chunk_found_twice_counts_once_against_the_exact_bound(
    store: Store, monkeypatch: pytest.MonkeyPatch, bound: int, path: str
) -> None:
    """add_texts stores the metadata on the chunk and on its document, so a pinned value
    finds each chunk through both candidate branches: 2 chunks came as 4 rows, and a
    bound of 2 chunks sent the lists through the index instead of ranking them exactly."""
    compiled = compile_filter({"ts": {"$in": [X, Y]}})
    assert compiled.candidates is not None and compiled.candidate_repeats == 2
    monkeypatch.setattr(service, "EXACT_FILTER_CHUNKS", bound)
    stmt = service._by_filter_size(
        compiled.candidates,
        sql.SQL("SELECT 0::bigint AS chunk_id, 'few' AS raw"),
        sql.SQL("SELECT 0::bigint AS chunk_id, 'many' AS raw"),
        compiled.candidate_repeats,
    )
    rt = store.runtime
    with rt.db.connection() as conn:
        rows = conn.execute(stmt, {**compiled.params, "cid": rt.collection(COLL).id}).fetchall()
    assert rows == [(0, path)]
