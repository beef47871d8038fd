"""Pruned BM25 top k (revision 0006's impact-ordered postings and threshold algorithm).

The pruned list must be the exhaustive one, scores included, on real text (CISI records
and its paragraph-long queries), and must stay so as chunks are added, changed and
removed and the collection's average length drifts away from the one the stored impacts
were computed with. The collection keeps only 6 postings per term (``list_keep``; 20,000 by
default) so that lists are trimmed, floors rise and reads run off the end of lists, as
they do for common words in a large collection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from ragstore.db import documents, repository
from ragstore.runtime import Runtime
from ragstore.search import bm25, search
from ragstore.search.bm25 import DEFAULT_B, DEFAULT_K1, parse_query, ranked_list_sql
from tests.search_helpers import Doc, make_collection, write_docs

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
N_DOCS = 80
KEEP = 6


def _cisi() -> tuple[list[Doc], list[str]]:
    docs: list[Doc] = []
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(
                Doc(
                    f"cisi-{row['_id']}.txt",
                    [f"{row['title']}\n{row['text']}"],
                    metadata={"bucket": len(docs) % 10},
                )
            )
            if len(docs) == N_DOCS:
                break
    with (CISI / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh]
    return docs, queries[:40]


@pytest.fixture(scope="module")
def cisi(rt: Runtime) -> tuple[repository.Collection, list[Doc], list[str]]:
    docs, queries = _cisi()
    coll = make_collection(rt, "topk")
    write_docs(rt, coll, docs[:40])
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE bm25_collection_stats SET list_keep = %s WHERE collection_id = %s",
            (KEEP, coll.id),
        )
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (coll.id,))
    write_docs(rt, coll, docs[40:])  # written with trims as lists pass 2 * KEEP
    return coll, docs, queries


# filters as ragstore_bm25_topk takes them (SQL over c and d): about 30% and 10% of the
# documents, and a per-chunk one
FILTERS = (
    "(d.metadata->>'bucket')::int < 3",
    "(d.metadata->>'bucket')::int = 0",
    "c.id % 7 = 0",
)


def _lists(
    rt: Runtime,
    cid: int,
    query: str,
    k: int,
    start_n: int = 0,
    max_n: int = 4096,
    cond: str | None = None,
    alpha: float = 0.5,
    replan_at: int = 1024,
    replan_rise: float = 1.1,
) -> tuple[list[Any], list[Any]]:
    with rt.db.connection() as conn:
        pruned = conn.execute(
            "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, %s, %s, %s, %s, %s,"
            " %s, %s, replan_at => %s, replan_rise => %s)",
            (
                cid,
                query,
                k,
                DEFAULT_K1,
                DEFAULT_B,
                start_n,
                max_n,
                cond,
                alpha,
                replan_at,
                replan_rise,
            ),
        ).fetchall()
        # the reference: every match scored (filtered: the exhaustive statement plus the filter)
        exact = conn.execute(
            "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive_where(%s, 'english', %s, %s, %s,"
            " %s, %s)",
            (cid, query, k, DEFAULT_K1, DEFAULT_B, cond),
        ).fetchall()
    return pruned, exact


def _chunks_read(rt: Runtime, cid: int, query: str, fn: str, cond: str | None = None) -> int:
    """Chunk rows one call of ragstore_bm25_<fn> fetched (this transaction's statistics)."""

    def fetched(conn: Any) -> int:
        row = conn.execute(
            "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
            " FROM pg_stat_xact_user_tables WHERE relname = 'chunks'"
        ).fetchone()
        return int(row[0])

    with rt.db.connection() as conn:
        before = fetched(conn)
        if cond is None:
            conn.execute(
                f"SELECT count(*) FROM ragstore_bm25_{fn}(%s, 'english', %s, 1, %s, %s)",
                (cid, query, DEFAULT_K1, DEFAULT_B),
            )
        else:
            conn.execute(
                f"SELECT count(*) FROM ragstore_bm25_{fn}(%s, 'english', %s, 1, %s, %s,"
                " cond => %s)",
                (cid, query, DEFAULT_K1, DEFAULT_B, cond),
            )
        return fetched(conn) - before


def _assert_same(pruned: list[Any], exact: list[Any], query: str) -> None:
    assert [r[0] for r in pruned] == [r[0] for r in exact], query[:60]
    assert [r[1] for r in pruned] == pytest.approx([r[1] for r in exact], rel=1e-12)


def _all_agree(rt: Runtime, cid: int, queries: list[str], **kw: Any) -> None:
    for i, q in enumerate(queries):
        for k in (1, 10, 50):
            _assert_same(*_lists(rt, cid, q, k, **kw), q)
            if i < 12:  # filtered: fewer queries, same coverage of the code paths
                for cond in FILTERS:
                    _assert_same(*_lists(rt, cid, q, k, cond=cond, **kw), f"{cond}: {q}")


def test_pruned_top_k_is_the_exhaustive_top_k_on_cisi(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    coll, _, queries = cisi
    _all_agree(rt, coll.id, queries)
    # a tiny cap: the exhaustive fallback; the cut budget at both ends (most terms read
    # deep, or most left unread)
    _all_agree(rt, coll.id, queries[:10], max_n=8)
    _all_agree(rt, coll.id, queries[:10], alpha=0.05)
    _all_agree(rt, coll.id, queries[:10], alpha=1.0)
    assert _chunks_read(rt, coll.id, queries[0], "topk") * 3 < _chunks_read(
        rt, coll.id, queries[0], "exhaustive"
    ), "the pruned path must not read every match"
    for q in queries[:10]:
        fast = [h.chunk_id for h in search(rt, q, collection="topk", k=10, mode="fulltext")]
        slow = [
            h.chunk_id for h in search(rt, q, collection="topk", k=10, mode="fulltext", exact=True)
        ]
        assert fast == slow and len(fast) == 10


def test_planning_the_contenders_again_keeps_the_exhaustive_top_k(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """Revision 0018: with ``replan_at`` 1 and ``replan_rise`` 1 the function plans its
    contenders again after any batch that leaves one above theta (up to three times,
    alpha halved each time); the lists stay the exhaustive ones, filtered or not."""
    coll, _, queries = cisi
    _all_agree(rt, coll.id, queries[:12], replan_at=1, replan_rise=1.0)
    _all_agree(rt, coll.id, queries[:6], replan_at=1, replan_rise=1.0, alpha=1.0)
    plans: list[str] = []
    with rt.db.connection() as conn:
        conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        conn.execute("SET client_min_messages = debug1")
        for q in queries[:12]:
            for k in (1, 10):
                conn.execute(
                    "SELECT count(*) FROM ragstore_bm25_topk(%s, 'english', %s, %s, %s, %s,"
                    " replan_at => 1, replan_rise => 1.0)",
                    (coll.id, q, k, DEFAULT_K1, DEFAULT_B),
                )
        conn.execute("RESET client_min_messages")
    replans = [m for m in plans if m.startswith("ragstore_bm25_topk: plan")]
    assert replans, "the queries above plan their contenders again"


def test_floors_exact_false_plans_over_the_stored_postings_with_exact_scores(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """Revision 0019: where the trimmed postings alone could reach theta, the approximate
    list (hybrid's) does not score every match; what it returns is scored exactly, best
    first, and here (6 postings a term: every list trimmed) holds most of the exact top k."""
    coll, _, queries = cisi
    notes: list[str] = []
    found = wanted = 0
    with rt.db.connection() as conn:
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        conn.execute("SET client_min_messages = debug1")
        for q in queries:
            rows = conn.execute(
                "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, 10, %s, %s,"
                " floors_exact => false)",
                (coll.id, q, DEFAULT_K1, DEFAULT_B),
            ).fetchall()
            every = conn.execute(
                "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive(%s, 'english', %s, 100000,"
                " %s, %s)",
                (coll.id, q, DEFAULT_K1, DEFAULT_B),
            ).fetchall()
            score = dict(every)
            assert [r[1] for r in rows] == pytest.approx([score[r[0]] for r in rows], rel=1e-12)
            assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
            assert len({r[0] for r in rows}) == len(rows) <= 10
            found += len({r[0] for r in rows} & {r[0] for r in every[:10]})
            wanted += len(every[:10])
        conn.execute("RESET client_min_messages")
    approximate = [m for m in notes if "stored postings only" in m]
    assert approximate, "some queries reach the floors and take the approximate plan"
    assert found >= 0.7 * wanted, f"the approximate lists hold {found} of the exact {wanted}"


def test_filtered_searches_prune_and_match_the_exhaustive_lists(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """A filtered full-text search goes to the pruned top k with its filter rendered as SQL
    text; ``exact`` scores every match with the filter inline (the independent reference)."""
    coll, _, queries = cisi
    where: dict[str, Any]
    for where in ({"bucket": {"$lt": 3}}, {"bucket": 0}, {"$or": [{"bucket": 1}, {"bucket": 7}]}):
        for q in queries[:8]:
            fast = search(rt, q, collection="topk", k=10, mode="fulltext", where=where)
            slow = search(rt, q, collection="topk", k=10, mode="fulltext", where=where, exact=True)
            assert [h.chunk_id for h in fast] == [h.chunk_id for h in slow], (where, q[:40])
            assert [h.score for h in fast] == pytest.approx([h.score for h in slow], rel=1e-12)
            assert fast
    cond = FILTERS[0]
    assert _chunks_read(rt, coll.id, queries[0], "topk", cond) < _chunks_read(
        rt, coll.id, queries[0], "exhaustive_where", cond
    ), "the pruned path must not read every match (it reads each chunk it filters)"


def _against_exhaustive(
    rt: Runtime,
    cid: int,
    query: str,
    where: dict[str, Any] | None,
    test: str,
    sql_filter: str,
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """A full-text search's top 10 and the exhaustive list of the same query, the syntax
    ``test`` and the ``sql_filter`` checked after every match of any word is scored
    (``ragstore_bm25_exhaustive_where``, an independent statement)."""
    fast = search(rt, query, collection="topk", k=10, mode="fulltext", where=where)
    with rt.db.connection() as conn:
        ref = conn.execute(
            "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive_where(%s, 'english',"
            " %s, 10, %s, %s, %s)",
            (
                cid,
                parse_query(query).terms,
                DEFAULT_K1,
                DEFAULT_B,
                f"({test}) AND ({sql_filter})",
            ),
        ).fetchall()
    return list(fast), ref


def test_phrases_and_exclusions_match_the_exhaustive_lists(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """A required phrase or an exclusion is a condition on which chunks may rank. An
    exclusion goes to the pruned top k as SQL text (with a filter or without); a required
    phrase picks the candidates itself. Either way the list is the exhaustive one, scores
    included: every match of any query word scored, the condition checked after
    (``ragstore_bm25_exhaustive_where``, an independent statement)."""
    coll, _, queries = cisi
    checked = 0
    for suffix, test in (
        (" -library", "NOT (c.tsv @@ websearch_to_tsquery('english', 'library'))"),
        (
            ' "information retrieval"',
            "c.tsv @@ websearch_to_tsquery('english', '\"information retrieval\"')",
        ),
        (
            ' -"the user" -science',
            "NOT (c.tsv @@ websearch_to_tsquery('english', '\"the user\" or science'))",
        ),
    ):
        for where, sql_filter in (
            (None, "true"),
            ({"bucket": {"$lt": 5}}, "(d.metadata->>'bucket')::int < 5"),
        ):
            for q in queries[:6]:
                query = q + suffix
                fast, ref = _against_exhaustive(rt, coll.id, query, where, test, sql_filter)
                assert [h.chunk_id for h in fast] == [r[0] for r in ref], (suffix, q[:40])
                assert [h.score for h in fast] == pytest.approx([r[1] for r in ref], rel=1e-12)
                checked += bool(fast)
    assert checked >= 20  # most lists hold hits: the comparison is not of empty lists
    excluded = "NOT (c.tsv @@ websearch_to_tsquery('english', 'library'))"
    assert _chunks_read(rt, coll.id, queries[0], "topk", excluded) < _chunks_read(
        rt, coll.id, queries[0], "exhaustive_where", excluded
    ), "an exclusion must not make the list read every match"
    for query in ("cats -dogs", 'cats -"full text" search'):  # the top k, with a condition
        stmt = ranked_list_sql(parse_query(query), sql.SQL("true"), False).as_string(None)
        assert "ragstore_bm25_topk(" in stmt and "cond => %(ftcond)s" in stmt, query
    # a required phrase picks the candidates: no probe of every word's matches, but where
    # the phrase has no lexeme (stop words alone), which then requires nothing
    stmt = ranked_list_sql(parse_query('"full text" search'), sql.SQL("true"), False)
    assert "ragstore_any_lexeme" not in stmt.as_string(None).split(") > 0 OR c.tsv @@ (SELECT")[0]


@pytest.mark.parametrize("threshold", [0, 10**9], ids=["pruned", "every-match"])
def test_required_single_words_match_the_exhaustive_lists(
    rt: Runtime,
    cisi: tuple[repository.Collection, list[Doc], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    threshold: int,
) -> None:
    """Quoted single words are required terms: the pruned top k checks them where each is
    common, every chunk holding them is scored where one is rare. Both branches (forced
    by the document-frequency threshold) give the exhaustive list, scores included."""
    monkeypatch.setattr(bm25, "REQUIRED_SCORE_ALL_DF", threshold)
    coll, _, queries = cisi
    checked = 0
    for suffix in (' "information"', ' "library" "users"', ' "zzyzx"', ' "the"'):
        words = suffix.replace('"', "").split()
        test = " AND ".join(f"c.tsv @@ websearch_to_tsquery('english', '{w}')" for w in words)
        if suffix == ' "the"':  # a stop word alone requires nothing, as in websearch_to_tsquery
            test = "true"
        for where, sql_filter in (
            (None, "true"),
            ({"bucket": {"$lt": 5}}, "(d.metadata->>'bucket')::int < 5"),
        ):
            for q in queries[:5]:
                query = q + suffix
                fast, ref = _against_exhaustive(rt, coll.id, query, where, test, sql_filter)
                assert [h.chunk_id for h in fast] == [r[0] for r in ref], (suffix, q[:40])
                assert [h.score for h in fast] == pytest.approx([r[1] for r in ref], rel=1e-12)
                checked += bool(fast)
    assert checked >= 12
    single = ranked_list_sql(parse_query('search "text"'), sql.SQL("true"), False)
    assert "ragstore_bm25_topk(" in single.as_string(None)
    phrase = ranked_list_sql(parse_query('search "full text"'), sql.SQL("true"), False)
    assert "ragstore_bm25_topk(" not in phrase.as_string(None)


def _check_postings(rt: Runtime, cid: int) -> int:
    """Stored postings are true ones; a term keeps all of its postings until its floor
    rises, and at most 2 * KEEP; returns how many terms have a floor."""
    with rt.db.connection() as conn:
        stored = set(
            conn.execute(
                "SELECT t.lexeme, p.chunk_id, p.tf, p.len FROM bm25_postings p"
                " JOIN bm25_terms t ON t.term_id = p.term_id WHERE t.collection_id = %s",
                (cid,),
            ).fetchall()
        )
        expected = set(
            conn.execute(
                "SELECT u.lexeme, c.id, greatest(cardinality(u.positions), 1), c.tsv_length"
                " FROM chunks c, unnest(c.tsv) u WHERE c.collection_id = %s"
                " AND c.chunk_type <> 'heading'",
                (cid,),
            ).fetchall()
        )
        floors = dict(
            conn.execute(
                "SELECT lexeme, floor FROM bm25_terms WHERE collection_id = %s", (cid,)
            ).fetchall()
        )
    assert stored <= expected
    missing = {e[0] for e in expected - stored}
    assert all(floors[lex] > 0 for lex in missing), "a term without a floor lost postings"
    per_term: dict[str, int] = {}
    for lex, *_ in stored:
        per_term[lex] = per_term.get(lex, 0) + 1
    assert max(per_term.values()) <= 2 * KEEP
    return sum(1 for f in floors.values() if f > 0)


def test_postings_and_pruning_stay_right_under_inserts_updates_and_deletes(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    coll, docs, queries = cisi
    assert _check_postings(rt, coll.id) > 50
    with rt.db.connection() as conn:
        before = conn.execute(
            "SELECT impact_avgdl FROM bm25_collection_stats WHERE collection_id = %s", (coll.id,)
        ).fetchone()
    # longer chunks raise avgdl above what the impacts were written with
    long_text = " ".join(d.texts[0] for d in docs[:6])
    write_docs(
        rt,
        coll,
        [
            Doc("long-1.txt", [long_text]),
            Doc("long-2.txt", [long_text[::-1]]),
            Doc(docs[0].source, ["retrieval of information " * 30]),
        ],
    )
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE chunks SET text = text || ' indexing vocabulary indexing'"
            " WHERE collection_id = %s AND id IN (SELECT id FROM chunks"
            " WHERE collection_id = %s ORDER BY id LIMIT 5)",
            (coll.id, coll.id),
        )
        documents.delete_documents(conn, coll.id, [docs[1].source, docs[2].source])
        avgdl, impact_avgdl = conn.execute(
            "SELECT tokens::float8 / chunks, impact_avgdl FROM bm25_collection_stats"
            " WHERE collection_id = %s",
            (coll.id,),
        ).fetchone()  # type: ignore[misc]
    assert before is not None and impact_avgdl == pytest.approx(before[0])
    assert avgdl > impact_avgdl * 1.05, "the test must move avgdl past the stored one"
    _check_postings(rt, coll.id)
    _all_agree(rt, coll.id, [*queries[:20], "indexing vocabulary", "retrieval of information"])


def test_query_term_frequency_counts(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    coll, _, _ = cisi
    once, _ = _lists(rt, coll.id, "thesaurus", 3)
    twice, _ = _lists(rt, coll.id, "thesaurus Thesaurus thesaurus", 3)
    assert once and [r[0] for r in once] == [r[0] for r in twice]
    assert twice[0][1] == pytest.approx(3 * once[0][1])


def test_plain_syntax_takes_operators_as_words() -> None:
    q = parse_query('what -is "retrieval" or indexing', plain=True)
    assert q.required is None and q.excluded is None
    assert q.terms == "what -is retrieval or indexing"
    web = parse_query('what -is "retrieval" or indexing')
    assert web.excluded == "is" and web.required == '"retrieval"'


def test_sql_and_python_bm25_defaults_agree(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """Impacts are written with the SQL defaults and searched with Python's: a mismatch would
    silently send every full-text search to the exhaustive path."""
    coll, _, _ = cisi
    with rt.db.connection() as conn:
        row = conn.execute("SELECT k1, b FROM ragstore_bm25_params(%s)", (coll.id,)).fetchone()
        stats = conn.execute(
            "SELECT impact_k1, impact_b FROM bm25_collection_stats WHERE collection_id = %s",
            (coll.id,),
        ).fetchone()
    assert row == (DEFAULT_K1, DEFAULT_B) == stats
    with rt.db.connection() as conn:
        default = conn.execute(
            "SELECT column_default FROM information_schema.columns"
            " WHERE table_name = 'bm25_collection_stats' AND column_name = 'list_keep'"
        ).fetchone()
    assert default == ("20000",), "revision 0009 keeps 20,000 postings a term by default"


def test_a_tail_follows_the_exact_top_k_with_exact_scores(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """``tail`` (revision 0017): the first k rows are the exhaustive top k, the rest are
    other chunks with their exact scores, best first, and most of the exact next ranks."""
    coll, _, queries = cisi
    found = wanted = 0
    for q in queries[:12]:
        for k, tail, cond in ((5, 20, None), (10, 30, None), (5, 15, FILTERS[0])):
            with rt.db.connection() as conn:
                rows = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, %s, %s, %s,"
                    " cond => %s, tail => %s)",
                    (coll.id, q, k, DEFAULT_K1, DEFAULT_B, cond, tail),
                ).fetchall()
                every = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive_where(%s, 'english', %s,"
                    " 100000, %s, %s, %s)",
                    (coll.id, q, DEFAULT_K1, DEFAULT_B, cond),
                ).fetchall()
            _assert_same(rows[:k], every[:k], q)
            assert min(k, len(every)) <= len(rows) <= tail
            score = dict(every)
            assert [r[1] for r in rows] == pytest.approx([score[r[0]] for r in rows], rel=1e-12)
            assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
            assert len({r[0] for r in rows}) == len(rows)
            found += len({r[0] for r in rows[k:]} & {r[0] for r in every[k:tail]})
            wanted += len(every[k:tail])
    assert found >= 0.8 * wanted, f"the tail holds {found} of the exact {wanted}"


def test_where_the_floors_reach_theta_the_exact_list_scores_chunks_holding_enough_terms(
    rt: Runtime, cisi: tuple[repository.Collection, list[Doc], list[str]]
) -> None:
    """Revision 0020: where the trimmed postings alone could reach theta, the exact list
    (full-text search's) scores the chunks whose terms' bounds add up to a try at or above
    theta, not every match; the list is the exhaustive one, tails and ties included."""
    coll, _, queries = cisi
    notes: list[str] = []
    enough = []
    with rt.db.connection() as conn:
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        conn.execute("SET client_min_messages = debug1")
        for q in queries:
            notes.clear()
            for k, tail in ((1, 0), (10, 0), (10, 25), (50, 0)):  # a tail: every match
                rows = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, %s, %s, %s,"
                    " tail => %s)",
                    (coll.id, q, k, DEFAULT_K1, DEFAULT_B, tail),
                ).fetchall()
                exact = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive(%s, 'english', %s, %s,"
                    " %s, %s)",
                    (coll.id, q, k, DEFAULT_K1, DEFAULT_B),
                ).fetchall()
                _assert_same(rows[:k], exact, q)
            if any("chunks holding enough terms" in m for m in notes):
                enough.append(q)
        filtered = 0
        for q in queries[:12]:  # a filter joins the condition
            for cond in FILTERS:
                notes.clear()
                rows = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, 10, %s, %s,"
                    " cond => %s)",
                    (coll.id, q, DEFAULT_K1, DEFAULT_B, cond),
                ).fetchall()
                exact = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive_where(%s, 'english', %s,"
                    " 10, %s, %s, %s)",
                    (coll.id, q, DEFAULT_K1, DEFAULT_B, cond),
                ).fetchall()
                _assert_same(rows, exact, f"{cond}: {q}")
                filtered += any("chunks holding enough terms" in m for m in notes)
        conn.execute("RESET client_min_messages")
    assert len(enough) >= 5, "queries of common words reach the floors"
    assert filtered >= 3, "filtered queries reach the floors too"
    # fewer chunks read than scoring every match, on the query that reads the most
    read = max(enough, key=lambda q: _chunks_read(rt, coll.id, q, "exhaustive"))
    assert _chunks_read(rt, coll.id, read, "topk") < _chunks_read(rt, coll.id, read, "exhaustive")


@pytest.mark.parametrize(
    ("lexs", "ubs", "need", "matches", "misses"),
    [
        # one term is enough alone, the other two only together
        (
            ["wal", "slot", "archiv"],
            [5.0, 3.0, 2.5],
            5.0,
            ["wal", "slot archiv"],
            ["slot", "archiv"],
        ),
        # quotes and backslashes in lexemes survive tsquery's input syntax
        (["o'neil", "c:\\dir", "x"], [2.0, 2.0, 2.0], 4.0, ["o'neil c:\\dir", "x o'neil"], ["x"]),
    ],
)
def test_the_enough_terms_condition(
    rt: Runtime,
    lexs: list[str],
    ubs: list[float],
    need: float,
    matches: list[str],
    misses: list[str],
) -> None:
    """``ragstore_bm25_enough``: every set of terms whose bounds reach the need matches,
    no other does; a need no term is needed for gives no condition (NULL)."""
    with rt.db.connection() as conn:
        q = conn.execute(
            "SELECT ragstore_bm25_enough(%s::text[], %s::float8[], %s)", (lexs, ubs, need)
        ).fetchone()[0]
        assert q is not None

        def holds(words: str) -> bool:
            row = conn.execute(
                "SELECT array_to_tsvector(%s::text[]) @@ ragstore_bm25_enough(%s::text[],"
                " %s::float8[], %s)",
                (words.split(" "), lexs, ubs, need),
            ).fetchone()
            return bool(row[0])

        assert all(holds(m) for m in matches) and not any(holds(m) for m in misses)
        none = conn.execute(
            "SELECT ragstore_bm25_enough(%s::text[], %s::float8[], 0)", (lexs, ubs)
        ).fetchone()[0]
        assert none is None
        # a tiny budget leaves terms out: a weaker condition, never a stronger one
        weak = conn.execute(
            "SELECT array_to_tsvector(%s::text[]) @@ ragstore_bm25_enough(%s::text[],"
            " %s::float8[], %s, 1)",
            (matches[0].split(" "), lexs, ubs, need),
        ).fetchone()
        assert weak is None or weak[0] is None or weak[0] is True


BM25_LISTS = (
    "ragstore_bm25_topk",
    "ragstore_bm25_exhaustive",
    "ragstore_bm25_exhaustive_where",
    "ragstore_bm25_enough_topk",
)


def test_bm25_list_functions_tell_the_planner_they_return_a_short_list(rt: Runtime) -> None:
    """At PostgreSQL's default estimate (1,000 rows) a search over some thousands of chunks
    was planned as a hash join over every chunk and document (15-30 ms beside a 3 ms list,
    revision 0022); a revision that redefines a list function must keep ``ROWS 50``."""
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT p.proname, p.prorows FROM pg_proc p WHERE p.proname = ANY(%s) AND p.proretset",
            (list(BM25_LISTS),),
        ).fetchall()
    assert sorted(rows) == sorted((name, 50.0) for name in BM25_LISTS)
