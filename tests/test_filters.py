"""The JSON filter language: every operator matches and excludes on the real database,
injection attempts stay data, and bad filters name the operator or path at fault."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from ragstore.errors import InvalidFilterError
from ragstore.models import ChunkType
from ragstore.runtime import Runtime
from ragstore.search import compile_filter, parse_filter, search, service
from ragstore.search.filters import CompiledFilter
from ragstore.search.plan import search_plan
from tests.search_helpers import Doc, make_collection, write_docs

COLL = "filters"


@pytest.fixture(scope="module")
def docs(rt: Runtime) -> Runtime:
    coll = make_collection(rt, COLL)
    write_docs(
        rt,
        coll,
        [
            Doc(
                "a.md",
                ["Quarterly search relevance report."],
                page=1,
                title="Report",
                metadata={
                    "year": 2019,
                    "team": "search",
                    "tags": ["x", "y"],
                    "author": {"name": "Ann", "age": 40},
                },
                chunk_metadata={"lang": "en", "year": 2018},
            ),
            Doc(
                "b.md",
                ["Latency table for the ingest workers."],
                chunk_type=ChunkType.TABLE,
                page=2,
                metadata={"year": 2021, "team": "infra", "author": {"name": "Bob"}},
            ),
            Doc(
                "c.md",
                ["def rank(hits): return sorted(hits)"],
                chunk_type=ChunkType.CODE,
                metadata={"year": 2023, "team": "search", "draft": True, "title_word": "Zeta"},
            ),
            Doc(
                "d.md",
                ["Meeting notes about the roadmap."],
                page=5,
                metadata={"year": "unknown", "team": None},
            ),
        ],
    )
    with rt.db.connection() as conn:  # one load's documents share a time: spread them
        conn.execute(
            "UPDATE documents d SET created_at = v.at::timestamptz"
            " FROM (VALUES ('a.md', '2024-03-01T00:00:00Z'), ('b.md', '2025-02-01T00:00:00Z'),"
            " ('c.md', '2025-11-30T23:00:00Z'), ('d.md', '2026-01-01T00:00:00Z')) v(source, at)"
            " WHERE d.collection_id = %s AND d.source = v.source",
            (coll.id,),
        )
    return rt


def sources(rt: Runtime, where: dict[str, Any], mode: str = "vector") -> set[str]:
    hits = search(rt, "report about search", collection=COLL, k=50, where=where, mode=mode)  # type: ignore[arg-type]
    return {h.source for h in hits}


CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("eq-builtin", {"chunk_type": "table"}, {"b.md"}),
    ("eq-builtin-none", {"chunk_type": "list"}, set()),
    ("eq-metadata", {"team": "infra"}, {"b.md"}),
    ("eq-metadata-none", {"team": "ops"}, set()),
    ("eq-explicit", {"team": {"$eq": "search"}}, {"a.md", "c.md"}),
    ("ne", {"team": {"$ne": "search"}}, {"b.md", "d.md"}),
    ("ne-none", {"source": {"$ne": "a.md"}, "chunk_type": {"$ne": "paragraph"}}, {"b.md", "c.md"}),
    ("in", {"source": {"$in": ["a.md", "c.md", "zz.md"]}}, {"a.md", "c.md"}),
    ("in-none", {"team": {"$in": ["ops", "hr"]}}, set()),
    ("nin", {"team": {"$nin": ["search"]}}, {"b.md", "d.md"}),
    ("nin-all", {"chunk_type": {"$nin": ["paragraph", "table", "code"]}}, set()),
    ("gt", {"document.year": {"$gt": 2021}}, {"c.md"}),
    ("gt-none", {"document.year": {"$gt": 2023}}, set()),
    ("gte", {"document.year": {"$gte": 2021}}, {"b.md", "c.md"}),
    ("lt", {"page": {"$lt": 2}}, {"a.md"}),
    ("lt-none", {"page": {"$lt": 1}}, set()),
    ("lte", {"page": {"$lte": 2}}, {"a.md", "b.md"}),
    ("range", {"document.year": {"$gte": 2019, "$lt": 2023}}, {"a.md", "b.md"}),
    ("exists", {"draft": {"$exists": True}}, {"c.md"}),
    ("exists-false", {"draft": {"$exists": False}}, {"a.md", "b.md", "d.md"}),
    ("exists-builtin", {"page": {"$exists": False}}, {"c.md"}),
    ("dotted", {"author.name": "Ann"}, {"a.md"}),
    ("dotted-none", {"author.name": "Cy"}, set()),
    ("chunk-first", {"year": 2018}, {"a.md"}),  # chunk metadata wins over the document's
    ("chunk-overrides", {"year": 2019}, set()),  # a.md's chunk says 2018
    ("chunk-only", {"chunk.lang": "en"}, {"a.md"}),
    ("document-only", {"document.lang": "en"}, set()),
    ("string-compare", {"document.year": {"$gte": "a"}}, {"d.md"}),
    ("array-eq", {"tags": ["x", "y"]}, {"a.md"}),
    ("and", {"$and": [{"team": "search"}, {"chunk_type": "code"}]}, {"c.md"}),
    ("and-none", {"$and": [{"team": "search"}, {"chunk_type": "table"}]}, set()),
    ("or", {"$or": [{"chunk_type": "table"}, {"draft": True}]}, {"b.md", "c.md"}),
    ("or-none", {"$or": [{"team": "ops"}, {"page": 99}]}, set()),
    ("not", {"$not": {"team": "search"}}, {"b.md", "d.md"}),
    ("not-none", {"$not": {"collection": COLL}}, set()),
    ("collection", {"collection": COLL}, {"a.md", "b.md", "c.md", "d.md"}),
    ("title", {"title": "Report"}, {"a.md"}),
    ("created_at", {"created_at": {"$gte": "2000-01-01"}}, {"a.md", "b.md", "c.md", "d.md"}),
    ("created_at-none", {"created_at": {"$lt": "2000-01-01T00:00:00+00:00"}}, set()),
    (
        "created_at-range",
        {"created_at": {"$gte": "2025-01-01", "$lt": "2025-12-01"}},
        {"b.md", "c.md"},
    ),
    ("created_at-since", {"created_at": {"$gt": "2025-12-01T00:00:00+01:00"}}, {"d.md"}),
    ("created_at-eq", {"created_at": "2024-03-01T00:00:00+00:00"}, {"a.md"}),
    ("json-null", {"team": None}, {"d.md"}),
    ("array-position", {"tags.0": "x"}, {"a.md"}),  # #> reads an array's element
    # PostgreSQL reads "+1" and " 0" as array positions too (strtol): not found by containment
    ("array-position-signed", {"tags.+1": "y"}, {"a.md"}),
    ("array-position-spaced", {"tags. 0": {"$in": ["x"]}}, {"a.md"}),
    ("in-some", {"author.name": {"$in": ["Bob", "Cy"]}, "draft": {"$ne": True}}, {"b.md"}),
    ("or-probed", {"$or": [{"team": "infra"}, {"chunk.lang": "en"}]}, {"a.md", "b.md"}),
    ("source-range", {"source": {"$gte": "b", "$lt": "d"}}, {"b.md", "c.md"}),
    ("source-folder", {"source": {"$gte": "a", "$lt": "b"}}, {"a.md"}),
    ("source-range-none", {"source": {"$gt": "e"}}, set()),
]
# the cases whose filter pins metadata values: compile_filter gives their candidates
PROBED = {
    "in",
    "eq-metadata",
    "eq-metadata-none",
    "eq-explicit",
    "in-none",
    "dotted",
    "dotted-none",
    "chunk-first",
    "chunk-overrides",
    "chunk-only",
    "document-only",
    "array-eq",
    "and",
    "and-none",
    "json-null",
    "in-some",
    "or-probed",
    "source-range",
    "source-folder",
    "source-range-none",
    "created_at",
    "created_at-none",
    "created_at-range",
    "created_at-since",
}


@pytest.mark.parametrize(
    ("where", "expected"), [(w, e) for _, w, e in CASES], ids=[name for name, _, _ in CASES]
)
def test_filter_operator_on_vector_search(
    docs: Runtime, where: dict[str, Any], expected: set[str]
) -> None:
    assert sources(docs, where) == expected


@pytest.mark.parametrize("bound", [0, 1])
@pytest.mark.parametrize(
    ("where", "expected"), [(w, e) for _, w, e in CASES], ids=[name for name, _, _ in CASES]
)
def test_filter_keeps_the_same_chunks_above_the_exact_bound(
    docs: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    bound: int,
    where: dict[str, Any],
    expected: set[str],
) -> None:
    """Above ``EXACT_FILTER_CHUNKS`` candidates the lists go through the HNSW index and
    the pruned top k instead of ranking the candidates exactly: the same chunks pass (with
    1, a filter that one chunk passes still takes the exact branch)."""
    monkeypatch.setattr(service, "EXACT_FILTER_CHUNKS", bound)
    assert sources(docs, where) == expected
    assert sources(docs, where, mode="hybrid") == expected


def test_candidates_hold_every_chunk_the_filter_keeps(docs: Runtime) -> None:
    """The candidate statement finds, through the metadata indexes, at least the chunks
    each filter keeps (the filter itself still applies), and only filters that pin
    metadata values or sources or range sources or creation times get one: other
    ranges, $ne, $exists, $not, other built-ins and array positions do not."""
    cid = docs.collection(COLL).id
    probed = set()
    for name, where, expected in CASES:
        compiled = compile_filter(where)
        if compiled.candidates is None:
            continue
        probed.add(name)
        stmt = sql.SQL(
            "SELECT DISTINCT d.source FROM ({}) f JOIN chunks c ON c.id = f.id"
            " JOIN documents d ON d.id = c.document_id"
        ).format(compiled.candidates)
        with docs.db.connection() as conn:
            found = {r[0] for r in conn.execute(stmt, {**compiled.params, "cid": cid})}
        assert expected <= found, name
    assert probed == PROBED
    plan = search_plan(docs, "report", COLL, where={"team": "infra"})
    assert [x["filter_exact_at_most"] for x in plan["lists"]] == [service.EXACT_FILTER_CHUNKS] * 2
    plan = search_plan(docs, "report", COLL, where={"page": 1})
    assert all("filter_exact_at_most" not in x for x in plan["lists"])
    # by source alone the vector list is left to the planner, which ranks a few files'
    # chunks exactly already; the full-text list's pruned top k cannot
    plan = search_plan(docs, "report", COLL, where={"source": {"$gte": "a", "$lt": "b"}})
    assert ["filter_exact_at_most" in x for x in plan["lists"]] == [False, True]


def candidates_plan(rt: Runtime, compiled: CompiledFilter, *, without: str = "") -> str:
    """The plan of a filter's candidate statement with sequential scans priced out (as a
    large table prices them out): which indexes it reads. ``without``: a constraint of
    ``documents`` dropped for the plan (rolled back), so that an index the planner prices
    the same on a table this small does not take the plan by a tie."""
    assert compiled.candidates is not None
    cid = rt.collection(COLL).id
    with rt.db.connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        if without:
            conn.execute(
                sql.SQL("ALTER TABLE documents DROP CONSTRAINT {}").format(sql.Identifier(without))
            )
        rows = conn.execute(
            sql.SQL("EXPLAIN {}").format(compiled.candidates), {**compiled.params, "cid": cid}
        ).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def test_the_plan_says_a_bound_vector_list_short_of_its_depth_is_ranked_exactly(
    docs: Runtime,
) -> None:
    """A vector list a filter or the query's phrases bind comes back, when pgvector's
    index scan stops short of its depth (``hnsw.max_scan_tuples``), ranked exactly in the
    same statement (service._vector_sql; test_search_order.py shows it). ``explain``'s
    plan said only ``filter_exact_at_most``, which a filter no metadata index counts
    (``$exists``) never gets: the plan now says ``exact_when_short`` of such a list, and
    of no list an unbound scan or BM25 ranks."""

    def vector_list(query: str, **kw: Any) -> dict[str, Any]:
        plan = search_plan(docs, query, COLL, **kw)
        assert all("exact_when_short" not in x for x in plan["lists"] if x["list"] != "vector")
        return next(x for x in plan["lists"] if x["list"] == "vector")

    for where in ({"team": {"$exists": True}}, {"team": "infra"}, {"page": 1}):
        assert vector_list("report", mode="vector", where=where)["exact_when_short"] is True
        assert vector_list("report", where=where)["exact_when_short"] is True
    assert vector_list('report -"tape"')["exact_when_short"] is True  # hybrid: bound too
    assert vector_list('"search report"')["exact_when_short"] is True
    assert "exact_when_short" not in vector_list("report", mode="vector")
    assert "exact_when_short" not in vector_list("report")
    assert "exact_when_short" not in vector_list("report -tape", mode="vector")  # words alone
    plan = search_plan(docs, "report", COLL, mode="fulltext", where={"team": "infra"})
    assert [x["list"] for x in plan["lists"]] == ["fulltext"]
    assert "exact_when_short" not in plan["lists"][0]


def test_a_source_range_reads_the_source_index(docs: Runtime) -> None:
    """A range of sources (a folder's files) is found through the unique
    ``(collection_id, source)`` index."""
    compiled = compile_filter({"source": {"$gte": "docs/api/", "$lt": "docs/api0"}})
    assert "documents_collection_id_source_key" in candidates_plan(docs, compiled)


def test_a_creation_time_range_reads_the_documents_index(docs: Runtime) -> None:
    """What came in since a date is found through ``(collection_id, created_at)``
    (revision 0027), and the full-text list of a filter that keeps few chunks ranks
    them exactly."""
    compiled = compile_filter({"created_at": {"$gte": "2025-12-01"}})
    # on three documents the (collection_id, source) key reads the collection at the same
    # price, a tie either index may win (adding the origin column, revision 0035, turned
    # it): without that key the plan shows the created_at index serves the range
    plan = candidates_plan(docs, compiled, without="documents_collection_id_source_key")
    assert "documents_created_at_idx" in plan
    # as by source, PostgreSQL plans the vector list over those documents' chunks itself
    plan = search_plan(docs, "report", COLL, where={"created_at": {"$gte": "2025-12-01"}})
    assert ["filter_exact_at_most" in x for x in plan["lists"]] == [False, True]
    plan = search_plan(
        docs, "report", COLL, where={"created_at": {"$gte": "2025-12-01"}, "team": "x"}
    )
    assert ["filter_exact_at_most" in x for x in plan["lists"]] == [True, True]


@pytest.mark.parametrize("name", ["eq-builtin", "ne", "gte", "or", "not", "dotted"])
def test_filter_applies_to_fulltext_search_too(docs: Runtime, name: str) -> None:
    _, where, expected = next(c for c in CASES if c[0] == name)
    fulltext = {
        h.source
        for h in search(
            docs,
            "report OR latency OR rank OR notes",
            collection=COLL,
            k=50,
            where=where,
            mode="fulltext",
        )
    }
    assert fulltext == expected


def test_injection_in_key_and_value_is_harmless(docs: Runtime) -> None:
    evil = "x'); DROP TABLE chunks; --"
    assert sources(docs, {evil: evil}) == set()
    assert sources(docs, {"source": {"$in": [evil]}, f"a.{evil}": {"$exists": False}}) == set()
    assert sources(docs, {"source": "a.md' OR '1'='1"}) == set()
    with docs.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM chunks").fetchone()
    assert row is not None and row[0] == 4


def test_compiled_filter_carries_values_only_as_parameters() -> None:
    evil = "zz'; DROP TABLE chunks; --"
    compiled = compile_filter({evil: {"$in": [evil]}, "page": {"$gt": 3}})
    text = compiled.condition.as_string(None)  # type: ignore[arg-type]
    assert "DROP" not in text and "zz" not in text
    assert compiled.candidates is not None
    candidates = compiled.candidates.as_string(None)  # type: ignore[arg-type]
    assert "DROP" not in candidates and "zz" not in candidates
    assert [evil] in compiled.params.values() and 3 in compiled.params.values()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            {"year": {"$regex": "x"}},
            "invalid filter at 'year': unknown operator '$regex'; use one of "
            "$eq, $ne, $in, $nin, $gt, $gte, $lt, $lte, $exists",
        ),
        ({"$nor": []}, "invalid filter at the top level: unknown operator '$nor'"),
        (
            {"$or": {"a": 1}},
            "invalid filter at '$or': $or takes a non-empty array of filter objects, got an object",
        ),
        (
            {"$and": [{"a": 1}, 3]},
            "invalid filter at '$and[1]': expected a non-empty filter object, got a number",
        ),
        (
            {"$not": []},
            "invalid filter at '$not': $not takes a non-empty filter object, got an empty array",
        ),
        (
            {"$or": []},
            "invalid filter at '$or': $or takes a non-empty array of filter objects, "
            "got an empty array",
        ),
        (
            {"$not": {}},
            "invalid filter at '$not': $not takes a non-empty filter object, got an empty object",
        ),
        ({"a..b": 1}, "invalid filter path 'a..b'"),
        ({"year": {"$in": 2020}}, "invalid filter at 'year': $in takes an array, got a number"),
        (
            {"year": {"$gt": True}},
            "invalid filter at 'year': $gt compares numbers or strings, got a boolean",
        ),
        ({"draft": {"$exists": "yes"}}, "invalid filter at 'draft': $exists takes true or false"),
        (
            {"page": {"$gte": "two"}},
            "invalid filter at 'page': $gte needs an integer, got a string",
        ),
        ({"chunk_type": "tabel"}, "invalid filter at 'chunk_type': unknown chunk type 'tabel'"),
        (
            {"created_at": {"$gt": "last week"}},
            "invalid filter at 'created_at': 'last week' is not an ISO 8601 date",
        ),
        ({"year": {"$gt": 1, "x": 2}}, "invalid filter at 'year': an object mixes operators"),
        ({"$gt": 3}, "invalid filter at the top level: $gt needs a field"),
        ({"$or": [{"a": {"$foo": 1}}]}, "invalid filter at 'a': unknown operator '$foo'"),
    ],
)
def test_invalid_filter_names_the_operator_or_path(where: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFilterError) as info:
        compile_filter(where)
    assert str(info.value).startswith(message)
    assert info.value.code == "invalid_filter"


def test_parse_filter_rejects_bad_json_and_non_objects() -> None:
    with pytest.raises(InvalidFilterError, match="the filter is not valid JSON: Expecting"):
        parse_filter("{year: 2020}")
    with pytest.raises(InvalidFilterError, match="must be a JSON object, got an array"):
        parse_filter("[1, 2]")
    with pytest.raises(InvalidFilterError, match="not valid JSON: nested deeper than"):
        parse_filter("[" * 3000)  # RecursionError inside json.loads
    assert parse_filter('{"year": {"$gte": 2020}}') == {"year": {"$gte": 2020}}


def test_a_filter_naming_a_key_twice_is_refused_not_the_last_kept() -> None:
    # json.loads kept the second: --where '{"team": "a", "team": "b"}' searched team b
    twice = '{"team": "search", "year": {"$gte": 2020, "$gte": 1990}}'
    with pytest.raises(InvalidFilterError, match=r"the key '\$gte' appears twice") as info:
        parse_filter(twice)
    assert f"at character {twice.rfind('$gte') - 1}" in str(info.value)
    with pytest.raises(InvalidFilterError, match="the key 'team' appears twice"):
        parse_filter('{"team": "a", "team": "b"}')
    # the same key in two objects is two keys
    assert parse_filter('{"$or": [{"team": "a"}, {"team": "b"}]}') == {
        "$or": [{"team": "a"}, {"team": "b"}]
    }


def _nested_and(levels: int) -> dict[str, Any]:
    where: dict[str, Any] = {"team": "search"}
    for _ in range(levels):
        where = {"$and": [{"$and": [where]}]}
    return where


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"$and": 5}, "invalid filter at '$and': $and takes a non-empty array"),
        ({"$or": 5}, "invalid filter at '$or': $or takes a non-empty array"),
        ({"$and": [{"$or": 3}]}, "invalid filter at '$and[0].$or': $or takes a non-empty array"),
        ([{"team": "search"}], "the filter must be a JSON object, got an array"),
        ("team", "the filter must be a JSON object, got a string"),
        (_nested_and(1000), "the filter holds nested deeper than 64 levels"),
    ],
    ids=["and-number", "or-number", "nested-or-number", "list", "string", "nested-2000-deep"],
)
def test_a_filter_of_the_wrong_shape_is_invalid_filter_in_every_mode(
    docs: Runtime, where: Any, message: str
) -> None:
    """A search checks whether a filter ranges an indexed field before compiling it:
    that look raised a TypeError for ``{"$and": 5}`` (a 500 through the API), an
    AttributeError for a list or a string from ``Store.search`` and a RecursionError for
    a deep filter, where the filter's own error was due."""
    for mode in ("vector", "fulltext", "hybrid"):
        with pytest.raises(InvalidFilterError) as info:
            search(docs, "report", collection=COLL, where=where, mode=mode)  # type: ignore[arg-type]
        assert str(info.value).startswith(message), mode


def test_invalid_filter_is_raised_before_touching_the_database(docs: Runtime) -> None:
    with pytest.raises(InvalidFilterError, match=r"unknown operator '\$like'"):
        search(docs, "anything", collection=COLL, where={"team": {"$like": "s%"}})


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            {f"k{i}": i for i in range(1001)},
            "invalid filter: 1001 conditions, over the limit of 1000",
        ),
        (
            {"$or": [{"team": str(i)} for i in range(1001)]},
            "invalid filter: 1001 conditions, over the limit of 1000",
        ),
        (
            {"a": {"$in": list(range(6000))}, "b": {"$nin": list(range(4001))}},
            "invalid filter: 10001 values in $in/$nin arrays, over the limit of 10000",
        ),
    ],
)
def test_filter_size_is_bounded(where: dict[str, Any], message: str) -> None:
    # 20,000 ANDed keys (300 kB of JSON) kept two database backends busy for minutes
    with pytest.raises(InvalidFilterError) as info:
        compile_filter(where)
    assert str(info.value).startswith(message)
    compile_filter({f"k{i}": i for i in range(1000)})
    compile_filter({"a": {"$in": list(range(10_000))}})


@pytest.mark.parametrize("mode", ["fulltext", "hybrid"])
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"page": {"$ne": -(2**31)}}, {"a.md", "b.md", "c.md", "d.md"}),
        ({"page": {"$gt": -(2**31)}}, {"a.md", "b.md", "d.md"}),
        ({"year": {"$gt": -(2**63)}}, {"a.md", "b.md", "c.md"}),
    ],
)
def test_the_lowest_integer_of_a_cast_is_taken_by_the_fulltext_list(
    docs: Runtime, mode: str, where: dict[str, Any], expected: set[str]
) -> None:
    """The full-text list takes the filter as SQL text with its values quoted client-side,
    where a negative integer is `` -2147483648`` and its cast followed: PostgreSQL read
    ``-2147483648::integer`` as ``-(2147483648::integer)``, which overflows, and the search
    was answered "integer out of range" (422) at the bottom of the range."""
    found = {
        h.source
        for h in search(
            docs,
            "report OR latency OR rank OR notes",
            collection=COLL,
            k=50,
            where=where,
            mode=mode,
        )
    }
    assert found == expected
