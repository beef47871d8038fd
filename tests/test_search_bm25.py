"""Full-text search: BM25 scores from term statistics that stay exact as documents come
and go, websearch syntax, and the text search configuration per collection."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ragstore.db import documents, repository
from ragstore.errors import InputError
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.search.bm25 import DEFAULT_B, DEFAULT_K1, FullTextQuery, parse_query
from ragstore.search.plan import search_plan
from tests.search_helpers import Doc, make_collection, write_docs

COLL = "bm25"
DOCS = [
    Doc(
        "cats.md",
        ["Cats sleep most of the day and hunt at night.", "A cat purrs when it is content."],
    ),
    Doc("dogs.md", ["Dogs bark at strangers and sleep at night."]),
    Doc(
        "pg.md",
        [
            "PostgreSQL full text search ranks documents with tsvector and GIN.",
            "The planner uses the GIN index for tsvector matches.",
        ],
    ),
    Doc("long.md", ["Zebra " + "savanna grass water river " * 12 + "zebra herd."]),
    Doc("short.md", ["Zebra herd at dusk."]),
]


@pytest.fixture(scope="module")
def coll(rt: Runtime) -> repository.Collection:
    c = make_collection(rt, COLL)
    write_docs(rt, c, DOCS)
    return c


def stored_stats(rt: Runtime, cid: int) -> tuple[Any, dict[str, int]]:
    with rt.db.connection() as conn:
        stats = conn.execute(
            "SELECT chunks, tokens FROM bm25_collection_stats WHERE collection_id = %s", (cid,)
        ).fetchone()
        terms = dict(
            conn.execute(
                "SELECT lexeme, df FROM bm25_terms WHERE collection_id = %s", (cid,)
            ).fetchall()
        )
    return (tuple(stats) if stats else (0, 0)), terms


def recomputed_stats(rt: Runtime, cid: int) -> tuple[Any, dict[str, int]]:
    with rt.db.connection() as conn:
        stats = conn.execute(
            "SELECT count(*), coalesce(sum(ragstore_tsv_length(tsv)), 0) FROM chunks"
            " WHERE collection_id = %s AND chunk_type <> 'heading'",
            (cid,),
        ).fetchone()
        terms = dict(
            conn.execute(
                "SELECT l, count(*) FROM chunks c, unnest(tsvector_to_array(c.tsv)) l"
                " WHERE collection_id = %s AND chunk_type <> 'heading' GROUP BY l",
                (cid,),
            ).fetchall()
        )
    assert stats is not None
    return (int(stats[0]), int(stats[1])), terms


def test_statistics_match_a_recount_after_insert_replace_and_delete(
    rt: Runtime, coll: repository.Collection
) -> None:
    scratch = make_collection(rt, "bm25-scratch")
    write_docs(rt, scratch, DOCS)
    assert stored_stats(rt, scratch.id) == recomputed_stats(rt, scratch.id)
    assert stored_stats(rt, scratch.id)[0] == (7, recomputed_stats(rt, scratch.id)[0][1])
    write_docs(rt, scratch, [Doc("cats.md", ["Kittens nap in sunny windows."])])  # replaced
    stats, terms = stored_stats(rt, scratch.id)
    assert (stats, terms) == recomputed_stats(rt, scratch.id)
    assert stats[0] == 6 and "kitten" in terms and "purr" not in terms
    with rt.db.connection() as conn:
        documents.delete_documents(conn, scratch.id, ["pg.md", "dogs.md"])
    stats, terms = stored_stats(rt, scratch.id)
    assert (stats, terms) == recomputed_stats(rt, scratch.id)
    assert stats[0] == 3 and "tsvector" not in terms
    with rt.db.connection() as conn:  # an UPDATE of a chunk's text is counted too
        conn.execute(
            "UPDATE chunks SET text = 'Zebra zebra zebra' WHERE collection_id = %s"
            " AND text LIKE 'Zebra herd%%'",
            (scratch.id,),
        )
    assert stored_stats(rt, scratch.id) == recomputed_stats(rt, scratch.id)
    with rt.db.connection() as conn:
        conn.execute("DELETE FROM collections WHERE id = %s", (scratch.id,))
    assert stored_stats(rt, scratch.id) == ((0, 0), {})
    # the other collection's statistics were not touched
    assert stored_stats(rt, coll.id) == recomputed_stats(rt, coll.id)


def expected_bm25(rt: Runtime, cid: int, query: str) -> dict[str, float]:
    """BM25 per chunk text, computed here from the raw tsvectors (Lucene idf)."""
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT c.text, x.lexeme, cardinality(x.positions) FROM chunks c, unnest(c.tsv) x"
            " WHERE c.collection_id = %s",
            (cid,),
        ).fetchall()
        qlex = conn.execute(
            "SELECT tsvector_to_array(to_tsvector('english', %s))", (query,)
        ).fetchone()
    assert qlex is not None
    tf: dict[str, dict[str, int]] = {}
    for text, lexeme, count in rows:
        tf.setdefault(text, {})[lexeme] = count
    n = len(tf)
    avgdl = sum(sum(t.values()) for t in tf.values()) / n
    scores = {}
    for text, terms in tf.items():
        dl = sum(terms.values())
        s = 0.0
        for q in qlex[0]:
            if q not in terms:
                continue
            df = sum(1 for t in tf.values() if q in t)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            f = terms[q]
            norm = DEFAULT_K1 * (1 - DEFAULT_B + DEFAULT_B * dl / avgdl)
            s += idf * f * (DEFAULT_K1 + 1) / (f + norm)
        if s:
            scores[text] = s
    return scores


def test_fulltext_scores_are_bm25(rt: Runtime, coll: repository.Collection) -> None:
    query = "cats sleep at night"
    hits = search(rt, query, collection=COLL, mode="fulltext", k=10)
    expected = expected_bm25(rt, coll.id, query)
    assert {h.text: pytest.approx(h.score, rel=1e-9) for h in hits} == expected
    assert hits[0].source == "cats.md"  # matches 'cat', 'sleep' and 'night'
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_shorter_chunk_with_same_term_ranks_higher(
    rt: Runtime, coll: repository.Collection
) -> None:
    hits = search(rt, "zebra", collection=COLL, mode="fulltext", k=10)
    assert [h.source for h in hits] == ["short.md", "long.md"]


def test_rare_term_outweighs_common_term(rt: Runtime, coll: repository.Collection) -> None:
    hits = search(rt, "night purrs", collection=COLL, mode="fulltext", k=10)
    assert hits[0].text == "A cat purrs when it is content."


def test_websearch_phrase_or_and_exclusion(rt: Runtime, coll: repository.Collection) -> None:
    def texts(q: str) -> list[str]:
        return [h.text for h in search(rt, q, collection=COLL, mode="fulltext", k=10)]

    assert texts('"full text search"') == [
        "PostgreSQL full text search ranks documents with tsvector and GIN."
    ]
    assert set(texts("tsvector -planner")) == {
        "PostgreSQL full text search ranks documents with tsvector and GIN."
    }
    assert set(texts("purrs or bark")) == {
        "A cat purrs when it is content.",
        "Dogs bark at strangers and sleep at night.",
    }
    assert texts('sleep -"at night"') == []
    assert texts("the and of") == []  # only stop words: nothing to rank


def test_hybrid_phrases_and_exclusions_bind_the_vector_list_too(
    rt: Runtime, coll: repository.Collection
) -> None:
    """The collection is smaller than a hybrid search's vector list: without the
    constraints on that list every chunk would come back."""

    def hits(q: str, **kw: Any) -> list[Any]:
        return search(rt, q, collection=COLL, mode="hybrid", k=10, explain=True, **kw)

    excluded = hits("tsvector -planner")
    assert excluded and all("planner" not in h.text.lower() for h in excluded)
    assert any("tsvector" in h.text for h in excluded)  # the vector list still ranks the rest
    assert [h.text for h in hits('"full text search" ranks')] == [
        "PostgreSQL full text search ranks documents with tsvector and GIN."
    ]
    night = hits('sleep -"at night"', where={"absent": {"$exists": False}})
    assert night and all("at night" not in h.text for h in night)
    # only exclusions: nothing to search for, said so (it answered no hits, which read as
    # "nothing matches"); with a vector to rank by, the exclusions bind its list
    for mode in ("hybrid", "fulltext"):
        for q in ("-cats", '-cats -"full text"'):
            with pytest.raises(InputError, match=r"only excludes .* nothing to search for"):
                search(rt, q, collection=COLL, mode=mode, k=10)
    vec = rt.embedder_for(coll).embed_query("cats sleep at night").tolist()
    by_vector = hits("-cats -cat", vector=vec)
    assert by_vector and all("cat" not in h.text.lower() for h in by_vector)
    assert by_vector[0].text == "Dogs bark at strangers and sleep at night."
    # the model reads the words searched for: the distances are those of "tsvector"
    alone = {
        h.chunk_id: h.explain["vector"]["distance"]
        for h in search(rt, "tsvector", collection=COLL, mode="vector", k=10, explain=True)
        if h.explain and h.explain["vector"]
    }
    for h in excluded:
        assert h.explain is not None
        if h.explain["vector"] is not None:
            assert h.explain["vector"]["distance"] == pytest.approx(alone[h.chunk_id], abs=1e-6)
    vector_list = search_plan(rt, "tsvector -planner", COLL)["lists"][0]
    assert (vector_list["embedded"], vector_list["excluded"]) == ("tsvector", "planner")


def test_stop_word_query_in_hybrid_still_returns_vector_hits(
    rt: Runtime, coll: repository.Collection
) -> None:
    hits = search(rt, "the of", collection=COLL, mode="hybrid", k=3, explain=True)
    assert len(hits) == 3
    assert all(h.explain and h.explain["fulltext"] is None for h in hits)


@pytest.mark.parametrize("mode", ["fulltext", "hybrid"])
def test_a_quoted_phrase_of_stop_words_alone_requires_nothing(
    rt: Runtime, coll: repository.Collection, mode: str
) -> None:
    """websearch_to_tsquery drops a phrase of stop words (``zebra "to be"`` is
    ``'zebra'``), and an excluded one excludes nothing; required, it made ``@@`` false on
    every chunk: the search returned nothing at all, in both lists."""

    def ids(query: str) -> list[int]:
        hits = search(rt, query, collection=COLL, mode=mode, k=5)  # type: ignore[arg-type]
        return [h.chunk_id for h in hits]

    assert ids("zebra") and ids('zebra "to be"') == ids("zebra")
    assert ids('"to be or not" zebra "the"') == ids("zebra")
    assert ids('"zebra herd"') and ids('"zebra herd" "of the"') == ids('"zebra herd"')
    if mode == "hybrid":  # the vector list of the words alone
        assert ids('"to be or not to be"') == ids("to be or not to be") != []


def test_text_search_configuration_is_a_collection_setting(rt: Runtime) -> None:
    simple = make_collection(rt, "bm25-simple", {"ts_config": "simple"})
    english = make_collection(rt, "bm25-english")
    docs = [Doc("run.md", ["She runs every morning."])]
    write_docs(rt, simple, docs)
    write_docs(rt, english, docs)
    with rt.db.connection() as conn:
        configs = conn.execute(
            "SELECT collection_id, ts_config::text FROM chunks"
            " WHERE collection_id IN (%s, %s) ORDER BY 1",
            (simple.id, english.id),
        ).fetchall()
    assert configs == [(simple.id, "simple"), (english.id, "english")]
    assert [
        h.source for h in search(rt, "running", collection="bm25-english", mode="fulltext")
    ] == ["run.md"]  # stemmed
    assert search(rt, "running", collection="bm25-simple", mode="fulltext") == []
    assert [h.source for h in search(rt, "every", collection="bm25-simple", mode="fulltext")] == [
        "run.md"
    ]  # no stop words


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cats dogs", FullTextQuery("cats or dogs", None, None, "cats dogs")),
        (
            '"vector search" postgres -mysql',
            FullTextQuery(
                '"vector search" or postgres', '"vector search"', "mysql", "vector search postgres"
            ),
        ),
        (
            '"a b" or "c d" x',
            FullTextQuery('"a b" or "c d" or x', '"a b" or "c d"', None, "a b c d x"),
        ),
        ('x -"bad thing" OR y', FullTextQuery("x or y", None, '"bad thing"', "x y")),
        ("-only", FullTextQuery("", None, "only", "")),
    ],
)
def test_parse_query(query: str, expected: FullTextQuery) -> None:
    assert parse_query(query) == expected


@pytest.mark.parametrize("mode", ["vector", "fulltext", "hybrid"])
def test_a_query_with_a_lone_surrogate_or_a_nul_is_refused_in_every_mode(
    rt: Runtime, coll: repository.Collection, mode: str
) -> None:
    """A command-line argument of bytes that are not UTF-8 arrives as a lone surrogate
    (``\\udcff``): the tokenizer raised TypeError and psycopg UnicodeEncodeError."""
    with pytest.raises(InputError, match=r"the query holds a lone surrogate \(U\+DCFF\)"):
        search(rt, "zebra \udcff", collection=COLL, mode=mode)  # type: ignore[arg-type]
    # as the HTTP API's schema refuses it (the full-text list said "cannot be stored")
    with pytest.raises(InputError, match=r"the query holds a NUL character \(\\u0000\) at"):
        search(rt, "zebra\x00", collection=COLL, mode=mode)  # type: ignore[arg-type]
