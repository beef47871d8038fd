"""Maximal marginal relevance (search/mmr.py): on the real model and database, two of
three copies of one passage take a plain top 3, MMR's top 3 holds one of them and two other
relevant passages, and its choice is LangChain's definition computed here in numpy from the same
stored vectors and the same query vector."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from ragstore import Store
from ragstore.config import Settings
from ragstore.errors import InputError
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.search_helpers import reference_mmr

COLL = "mmr"
QUERY = "how do I roll back a database schema migration?"
DUPLICATE = "To roll back a schema migration, run ragstore db downgrade to the previous revision."
TEXTS = {
    "dup-1": (DUPLICATE, {"team": "db"}),
    "dup-2": (DUPLICATE, {"team": "db"}),
    "dup-3": (DUPLICATE, {"team": "ops"}),
    "restore": (
        "A failed database migration can be undone by restoring last night's backup.",
        {"team": "ops"},
    ),
    "revert": (
        "Schema changes are reverted with the migration tool's downgrade command.",
        {"team": "db"},
    ),
    "cats": ("Kittens sleep most of the day in a sunny spot.", {"team": "pets"}),
    "lunch": ("The cafeteria serves lunch from noon until two.", {"team": "pets"}),
}
DUPS = {"dup-1", "dup-2", "dup-3"}


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        ids = list(TEXTS)
        s.add_texts(COLL, [TEXTS[i][0] for i in ids], [TEXTS[i][1] for i in ids], ids)
        yield s


def _vectors(rt: Runtime, chunk_ids: Sequence[int]) -> np.ndarray:
    coll = rt.collection(COLL)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL("SELECT chunk_id, embedding FROM {} WHERE chunk_id = ANY(%s)").format(
                sql.Identifier(coll.table)
            ),
            (list(chunk_ids),),
        ).fetchall()
    found = {int(r[0]): np.asarray(r[1].to_numpy(), dtype=np.float64) for r in rows}
    return np.stack([found[c] for c in chunk_ids])


def _expected(
    rt: Runtime, mode: str, k: int, fetch_k: int, lambda_mult: float, **kw: Any
) -> list[str]:
    """The sources MMR must pick: the plain ranking's best ``fetch_k`` (same mode and
    filter) through :func:`reference_mmr` with the query's embedding; in vector mode
    LangChain's definition itself (each candidate's cosine is its relevance), in the
    others with the mode's ranking as relevance."""
    candidates = search(rt, QUERY, collection=COLL, k=fetch_k, mode=mode, **kw)  # type: ignore[arg-type]
    q = rt.embedder_for(rt.collection(COLL)).embed_query(QUERY).astype(np.float64)
    vectors = _vectors(rt, [h.chunk_id for h in candidates])
    picked = reference_mmr(q, vectors, k, lambda_mult, ranked=mode != "vector")
    return [candidates[i].source for i in picked]


def test_plain_search_returns_the_copies_and_mmr_the_diverse_hits(
    store: Store, rt: Runtime
) -> None:
    plain = store.search(COLL, QUERY, k=3, mode="vector")
    # the copies rank 2nd to 4th (cosine 0.72 each), after "revert" (0.75), before
    # "restore" (0.68): two of them take the plain top 3
    assert [h["source"] for h in plain["data"]] == ["revert", "dup-1", "dup-2"]
    diverse = store.search(COLL, QUERY, k=3, mode="vector", mmr=True)
    sources = [h["source"] for h in diverse["data"]]
    assert sources == ["revert", "restore", "dup-1"]
    assert sources == _expected(rt, "vector", 3, 20, 0.5)
    # each hit keeps the ranking's score (cosine similarity in vector mode)
    ranked = {
        h["source"]: h["score"] for h in store.search(COLL, QUERY, k=7, mode="vector")["data"]
    }
    assert [h["score"] for h in diverse["data"]] == [ranked[s] for s in sources]


@pytest.mark.parametrize("mode", ["vector", "hybrid", "fulltext"])
@pytest.mark.parametrize(("k", "fetch_k", "lambda_mult"), [(3, 7, 0.5), (4, 5, 0.2), (2, 6, 0.9)])
def test_mmr_picks_what_langchains_definition_picks(
    rt: Runtime, store: Store, mode: str, k: int, fetch_k: int, lambda_mult: float
) -> None:
    hits = search(
        rt,
        QUERY,
        collection=COLL,
        k=k,
        mode=mode,
        mmr=True,
        fetch_k=fetch_k,  # type: ignore[arg-type]
        lambda_mult=lambda_mult,
    )
    assert [h.source for h in hits] == _expected(rt, mode, k, fetch_k, lambda_mult)


@pytest.mark.parametrize(
    ("mode", "sections"),
    [("vector", True), ("vector", False), ("hybrid", True), ("fulltext", True)],
)
def test_lambda_one_is_the_rankings_top_k_in_every_mode(
    store: Store, mode: str, sections: bool
) -> None:
    """Relevance is the mode's own ranking: lambda 1 returns the plain top k. It was each
    hit's cosine to the query, so a full-text or hybrid search at lambda 1 came back in
    the vector list's order ("revert" first, where BM25 ranks the copies first)."""
    plain = store.search(COLL, QUERY, k=4, mode=mode, sections=sections)
    mmr = store.search(
        COLL, QUERY, k=4, mode=mode, sections=sections, mmr=True, fetch_k=7, lambda_mult=1
    )
    assert [h["chunk_id"] for h in mmr["data"]] == [h["chunk_id"] for h in plain["data"]]


def test_the_candidates_are_the_filtered_ones(rt: Runtime, store: Store) -> None:
    where = {"team": "db"}
    hits = search(rt, QUERY, collection=COLL, k=2, mode="hybrid", where=where, mmr=True, fetch_k=5)
    assert [h.source for h in hits] == _expected(rt, "hybrid", 2, 5, 0.5, where=where)
    # the hybrid ranking's best (dup-1) first; dup-2 is too like it, "restore" (ops)
    # filtered out: "revert"
    assert [h.source for h in hits] == ["dup-1", "revert"]


def test_a_vector_given_is_the_query_vector(rt: Runtime, store: Store) -> None:
    """Searched by a vector, MMR compares the hits with that vector (here the embedding of
    the kittens text: the copies are the least relevant and come last)."""
    cats = rt.embedder_for(rt.collection(COLL)).embed_query(TEXTS["cats"][0])
    hits = store.search(COLL, vector=cats.tolist(), k=3, mmr=True, fetch_k=7)
    assert hits["data"][0]["source"] == "cats"
    assert len(DUPS & {h["source"] for h in hits["data"]}) <= 1


def test_explain_tells_the_mmr_pick_and_the_plan_its_depth(store: Store) -> None:
    out = store.search(COLL, QUERY, k=2, mode="vector", mmr=True, fetch_k=6, explain=True)
    first, second = (h["explain"]["mmr"] for h in out["data"])
    assert first["rank"] == 1 and first["max_similarity_to_picked"] is None
    assert second["rank"] == 2 and second["fetch_k"] == 6 and second["lambda_mult"] == 0.5
    # relevance is the ranking's order on the cosine scale: "similarity" alone read as
    # each hit's cosine to the query, in a fulltext or hybrid search too
    assert out["plan"]["mmr"] == {
        "fetch_k": 6,
        "lambda_mult": 0.5,
        "relevance": "ranking",
        "relevance_scale": "cosine",
        "similarity": "cosine",
    }
    assert out["plan"]["k"] == 2 and out["plan"]["lists"][0]["depth"] == 50  # the pool
    assert store.search(COLL, QUERY, k=2, explain=True)["plan"]["mmr"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 5, "fetch_k": 4}, r"fetch_k \(4\) is smaller than k \(5\)"),
        ({"fetch_k": 0}, "fetch_k must be between 1 and 1000, got 0"),
        ({"fetch_k": 1001}, "fetch_k must be between 1 and 1000, got 1001"),
        ({"fetch_k": "20"}, "fetch_k must be an integer, got '20'"),
        ({"fetch_k": True}, "fetch_k must be an integer, got True"),
        ({"lambda_mult": 1.5}, "lambda_mult must be between 0 .* and 1 .*, got 1.5"),
        ({"lambda_mult": -0.1}, "lambda_mult must be between 0 .* and 1 .*, got -0.1"),
        ({"lambda_mult": "0.5"}, "lambda_mult must be a number, got '0.5'"),
        ({"lambda_mult": float("nan")}, r"lambda_mult must be a finite number \(not NaN"),
        ({"mmr": "yes"}, "mmr must be True or False, got 'yes'"),
        # named as a Store, API or MCP caller spells them (not the CLI's --mmr)
        ({"mmr": False, "fetch_k": 20}, "^fetch_k only applies to a maximal-marginal-relevance"),
        (
            {"mmr": False, "lambda_mult": 0.3},
            "lambda_mult only applies to .*; set mmr too, or leave it out$",
        ),
        (
            {"mmr": False, "fetch_k": 20, "lambda_mult": 0.3},
            "fetch_k and lambda_mult only apply to .*; set mmr too, or leave them out$",
        ),
    ],
)
def test_bad_mmr_options_are_refused(store: Store, options: dict[str, Any], message: str) -> None:
    kw: dict[str, Any] = {"k": 3, "mmr": True, **options}
    with pytest.raises(InputError, match=message):
        store.search(COLL, QUERY, **kw)


def test_a_collection_of_imported_vectors_needs_the_querys_vector(store: Store) -> None:
    """Its model cannot embed the query, which MMR compares the hits with: refused with
    what to give instead, before anything runs; given a vector, MMR runs."""
    store.create_collection("mmr-imported", model="outside", dimension=3)
    store.add_texts(
        "mmr-imported",
        ["one", "two", "three"],
        ids=["a", "b", "c"],
        vectors=[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]],
    )
    with pytest.raises(InputError, match="cannot run, and mmr compares the hits with the"):
        store.search("mmr-imported", "one", mode="fulltext", mmr=True)
    hits = store.search("mmr-imported", vector=[1.0, 0.1, 0.0], k=2, mmr=True, lambda_mult=0.5)
    assert [h["source"] for h in hits["data"]] == ["a", "c"]  # b is a's copy
