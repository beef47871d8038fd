"""Bad and odd inputs sent to a real server on loopback: hand-written tables and small,
derandomized hypothesis runs over the search body, its ``where`` filter, the texts and
documents routes, collection creation and the list routes' query parameters.

Every answer must come within a few seconds, be below 500, and, when an error, be
problem+json; the regression tests at the end pin inputs that were answered with a success
where they should have been refused."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragstore import Client

COLL = "fz"
SEARCH = f"/v1/collections/{COLL}/search"
TEXTS = f"/v1/collections/{COLL}/texts"
DOCS = f"/v1/collections/{COLL}/documents"
SLOW_S = 5.0  # an answer later than this counts as a hang
DIM = 384  # the default model's dimension

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with Client(open_url) as c:
        c.create_collection(COLL)
        c.add_texts(
            COLL,
            ["alpha beta gamma", "delta epsilon"],
            [{"team": "ops", "year": 2020}, {"a": {"b": 1}}],
            ids=["a", "b"],
        )
    with httpx.Client(base_url=open_url, timeout=60) as h:
        yield h


def send(
    http: httpx.Client, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> httpx.Response:
    """Send ``raw`` bytes (or ``body`` as JSON) and check the answer's shape: in time,
    below 500, an error as problem+json with its own status."""
    content = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if content is not None else {}
    t0 = time.monotonic()
    r = http.request(method, path, content=content, headers=headers)
    took = time.monotonic() - t0
    what = f"{method} {path[:100]} {(content or b'')[:200]!r} -> {r.status_code} {r.text[:300]}"
    assert r.status_code < 500, what
    assert took < SLOW_S, f"{took:.1f}s: {what}"
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json", what
        problem = r.json()
        assert problem["status"] == r.status_code, what
        assert problem["type"] == f"urn:ragstore:problem:{problem['code']}", what
        assert "Traceback" not in r.text, what
    return r


def nested(opening: str, leaf: str, closing: str, depth: int) -> bytes:
    return (opening * depth + leaf + closing * depth).encode()


def vector(value: str, n: int = DIM) -> bytes:
    return b"[" + b",".join([value.encode()] * n) + b"]"


# --- tables ------------------------------------------------------------------------------

# (raw body, whether it must be refused): raw, so that NaN/Infinity tokens, 1e400, lone
# surrogates and nesting deeper than json.dumps recurses can be sent
SEARCH_RAW: list[tuple[bytes, bool]] = [
    (b'{"query": "a\\u0000b"}', True),
    (b'{"query": "\\ud800"}', True),
    (b'{"query": "\\udfff x"}', True),
    (b'{"query": "' + b"x" * 1_000_000 + b'"}', True),
    (b'{"query": "a", "k": 1e400}', True),
    (b'{"query": "a", "k": NaN}', True),
    (b'{"query": "a", "rrf_k": NaN}', True),
    (b'{"query": "a", "rrf_k": Infinity}', True),
    (b'{"query": "a", "vector_weight": -Infinity}', True),
    (b'{"query": "a", "where": {"year": {"$gt": NaN}}}', True),
    (b'{"query": "a", "where": {"year": {"$lt": -1e400}}}', True),
    (b'{"query": "a", "where": {"year": {"$in": [1e400]}}}', True),
    (b'{"query": "a", "where": {"year": 123456789012345678901234567890}}', True),
    (b'{"query": "a", "where": {"\\ud800": 1}}', True),
    (b'{"query": "a", "where": {"team": "\\ud800"}}', True),
    (b'{"query": "a", "vector": [NaN, 1]}', True),
    (b'{"vector": ' + vector("1e400") + b"}", True),
    (b'{"vector": ' + vector("1e38") + b"}", True),  # beyond half precision
    (b'{"vector": ' + vector("1e-320") + b"}", True),  # all zeros in float32
    (b'{"vector": ' + vector("0") + b"}", True),
    (b'{"vector": ' + vector("1", DIM - 1) + b"}", True),
    (b'{"vector": ' + vector("1", DIM + 1) + b"}", True),
    (b'{"vector": ' + vector("1", 16_001) + b"}", True),
    (b'{"vector": ' + vector("true") + b"}", True),
    (b'{"vector": ' + vector('"1"') + b"}", True),
    (b'{"vector": ' + vector("1") + b', "mode": "fulltext"}', True),
    (b"{", True),
    (b"[]", True),
    (b"null", True),
    (b"\xff\xfe", True),
    (b'{"query": "a", "query": "b"}', True),
    (b"[" * 100_000, True),
    (
        b'{"query": "a", "where": ' + nested('{"$and": [', '{"team": "ops"}', "]}", 1000) + b"}",
        True,
    ),
    (b'{"query": "a", "where": ' + nested('{"$or": [', '{"team": "ops"}', "]}", 100) + b"}", True),
    (b'{"query": "a", "where": ' + nested('{"$not": ', '{"team": "ops"}', "}", 60) + b"}", True),
    (b'{"query": "a", "where": {"a": ' + nested("[", "1", "]", 20_000) + b"}}", True),
    (
        b'{"query": "alpha", "where": ' + nested('{"$and": [', '{"team": "ops"}', "]}", 20) + b"}",
        False,
    ),
    (b'{"vector": ' + vector("0.1") + b"}", False),
    (b'{"query": "a & | ! ( ) :* <->", "mode": "fulltext"}', False),
    (b'{"query": "\\u200b\\u200b"}', False),
]


@pytest.mark.parametrize("raw,refused", SEARCH_RAW, ids=lambda v: repr(v)[:40])
def test_search_raw_bodies(http: httpx.Client, raw: bytes, refused: bool) -> None:
    r = send(http, "POST", SEARCH, raw=raw)
    assert (r.status_code >= 400) == refused, r.text[:300]


# (where filter, refused): each sent in the default mode and in vector mode
WHERES: list[tuple[Any, bool]] = [
    ({"team": {"$in": "ops"}}, True),
    ({"team": {"$in": {"a": 1}}}, True),
    ({"team": {"$nin": "ops"}}, True),
    ({"team": {"$in": list(range(20_000))}}, True),
    ({"$or": [{"team": str(i)} for i in range(2000)]}, True),
    ({"year": {"$gt": {"a": 1}}}, True),
    ({"year": {"$gt": [1]}}, True),
    ({"year": {"$gt": None}}, True),
    ({"year": {"$gt": True}}, True),
    ({"year": {"$gt": 2**63}}, True),
    ({"year": {"$exists": "yes"}}, True),
    ({"year": {"$exists": 1}}, True),
    ({"year": {"$gt": 1, "$foo": 2}}, True),
    ({"year": {"$gt": 1, "a": 2}}, True),
    ({"year": {"$regex": ".*"}}, True),
    ({"$and": "x"}, True),
    ({"$and": []}, True),
    ({"$or": [1]}, True),
    ({"$not": "x"}, True),
    ({"$not": {}}, True),
    ({"$and": [{}]}, True),
    ({"$or": [{"team": "ops"}, {}]}, True),
    ({"$not": {"$and": [{}]}}, True),
    ({"$nor": [{"team": "ops"}]}, True),
    ({"": 1}, True),
    ({".": 1}, True),
    ({"a..b": 1}, True),
    ({"k" * 100_000: 1}, True),
    ({"a\x00b": 1}, True),
    ({"team": "o\x00ps"}, True),
    ({"source": 1}, True),
    ({"created_at": "not a date"}, True),
    ({"created_at": {"$gt": "99999-01-01"}}, True),
    ({"created_at": {"$gt": "2020-01-01T00:00:00+99:00"}}, True),
    ({"page": "x"}, True),
    ({"page": 2**31}, True),
    ({"page": {"$gt": 1.5}}, True),
    ({"page": {"$in": [None, 1]}}, True),
    ({"title": {"$in": [1, "a"]}}, True),
    ({"team": {"$in": []}}, False),
    ({"team": {"$in": [None, [1], {"a": 1}]}}, False),
    ({"year": {"$gt": "2020"}}, False),
    ({"year": None}, False),
    ({"a'b": 1, 'a"b': 1, "a\\\\b": 1, "a b{c}": 1}, False),
    # a backslash escapes a dot or a backslash in a path, nothing else: refused, not guessed
    ({"a\\b": 1}, True),
    ({"version\\.major": 1}, False),
    ({"a": {"$eq": {"b": 1}}}, False),
    ({"created_at": {"$exists": True}}, False),
    ({"team": "x" * 500_000}, False),
]


@pytest.mark.parametrize("where,refused", WHERES, ids=lambda v: repr(v)[:40])
def test_search_filters(http: httpx.Client, where: Any, refused: bool) -> None:
    for mode in (None, "vector"):
        body = {"query": "alpha", "where": where, **({"mode": mode} if mode else {})}
        r = send(http, "POST", SEARCH, body)
        assert (r.status_code >= 400) == refused, r.text[:300]


TEXTS_BODIES: list[Any] = [
    {"texts": ["x"], "ids": [1]},
    {"texts": ["x"], "ids": [""]},
    {"texts": ["x"], "ids": ["a\x00"]},
    {"texts": ["x"], "ids": ["i" * 100_000]},
    {"texts": ["x"], "ids": ["a", "b"]},
    {"texts": ["x", "y"], "ids": ["d", "d"]},
    {"texts": ["x"], "metadatas": [None]},
    {"texts": ["x"], "metadatas": [1]},
    {"texts": ["x"], "metadatas": [{"a": 1}, {"b": 2}]},
    {"texts": ["x"], "metadatas": [{"a": "v" * 2_000_000}]},
    {"texts": ["x"], "metadatas": [{"a\x00": 1}]},
    {"texts": ["x"], "metadatas": [{"a": 2**64}]},
    {"texts": ["x"], "vectors": [[1.0] * DIM, [1.0] * DIM]},
    {"texts": ["x"], "vectors": [[1.0] * (DIM - 1)]},
    {"texts": ["x"], "vectors": [[70_000.0] * DIM]},
    {"texts": [" "]},
    {"texts": [1]},
    {"texts": "abc"},
    {"texts": [None]},
]
TEXTS_RAW: list[bytes] = [
    b'{"texts": ["x"], "metadatas": [{"a": ' + nested('{"k": ', "1", "}", 1000) + b"}]}",
    b'{"texts": ["x"], "metadatas": [{"a": ' + nested('{"k": ', "1", "}", 65) + b"}]}",
    b'{"texts": ["x"], "metadatas": [{"a": NaN}]}',
    b'{"texts": ["x"], "metadatas": [{"a": 1e400}]}',
    b'{"texts": ["x"], "metadatas": [{"\\ud800": 1}]}',
    b'{"texts": ["\\ud800"]}',
    b'{"texts": ["x"], "ids": ["\\udc00"]}',
    b'{"texts": ["x"], "vectors": [' + vector("NaN") + b"]}",
    b'{"texts": ["x"], "vectors": [' + vector("1e39") + b"]}",
]


@pytest.mark.parametrize("body", TEXTS_BODIES, ids=lambda v: repr(v)[:40])
def test_texts_refused(http: httpx.Client, body: Any) -> None:
    assert send(http, "POST", TEXTS, body).status_code >= 400


@pytest.mark.parametrize("raw", TEXTS_RAW, ids=lambda v: repr(v)[:40])
def test_texts_raw_refused(http: httpx.Client, raw: bytes) -> None:
    assert send(http, "POST", TEXTS, raw=raw).status_code >= 400


@pytest.mark.parametrize(
    "body",
    [
        {
            "name": "a.md",
            "text": "x",
            "metadata": {"a": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]},
        },
        {"name": "", "text": "x"},
        {"name": "a\x00.md", "text": "x"},
        {"name": "../../etc/passwd", "text": "x"},
        {"name": "/abs.md", "text": "x"},
        {"name": "n" * 10_000 + ".md", "text": "x"},
        {"name": "a.pdf", "text": "x"},
        {"name": "a.md", "text": "x", "metadata": []},
        {"name": "a.md", "text": "x", "background": "yes"},
        {"name": "a.md", "text": "x\ud800"},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_documents_refused(http: httpx.Client, body: Any) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate goes as \\ud800
    if "metadata" in body and body["metadata"] and "a" in body["metadata"]:
        raw = raw.replace(b"[[[[", b"[" * 70).replace(b"]]]]", b"]" * 70)
    assert send(http, "POST", DOCS, raw=raw).status_code >= 400


COLLECTION_BODIES: list[Any] = [
    {"name": "a" * 64},
    {"name": "\u00e9"},
    {"name": "_a"},
    {"name": ""},
    {"name": 1},
    {"name": "a\x00"},
    {"name": "s1", "settings": []},
    {"name": "s2", "settings": {"bm25_k1": "NaN"}},
    {"name": "s3", "settings": {"bm25_k1": -1}},
    {"name": "s4", "settings": {"bm25_k1": 1e308}},
    {"name": "s5", "settings": {"bm25_k1": None}},
    {"name": "s6", "settings": {"bm25_k1": True}},
    {"name": "s7", "settings": {"nope": 1}},
    {"name": "s8", "settings": {"ts_config": "x'; drop"}},
    {"name": "s9", "settings": {"bm25_b": 2}},
    {"name": "s10", "settings": {"chunk_size": 2**63}},
    {"name": "s11", "dimension": 0},
    {"name": "s12", "dimension": 2**63},
    {"name": "s13", "distance": "x"},
    {"name": "s14", "model": "nope"},
    {"name": "s15", "dimension": 3},
]


@pytest.mark.parametrize("body", COLLECTION_BODIES, ids=lambda v: repr(v)[:40])
def test_collection_create_refused(http: httpx.Client, body: Any) -> None:
    assert send(http, "POST", "/v1/collections", body).status_code >= 400


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        (DOCS, b'{"name": "a\\ud800.md", "text": "x"}', "name"),
        (DOCS, b'{"name": "a.md", "text": "x\\udfff"}', "text"),
        ("/v1/collections", b'{"name": "a\\ud800"}', "name"),
        ("/v1/collections", b'{"name": "a", "model": "m\\ud800"}', "model"),
        (SEARCH, b'{"query": "\\ud800"}', "query"),
    ],
)
def test_a_lone_surrogate_in_a_checked_field_is_named(
    http: httpx.Client, path: str, raw: bytes, field: str
) -> None:
    """A field with a length or a pattern answered pydantic's vague "unable to parse raw
    data as a unicode string"; it gets the message every other field gets, naming it."""
    r = send(http, "POST", path, raw=raw)
    assert r.status_code == 422, r.text
    assert "lone surrogate (U+D" in r.json()["detail"], r.text
    assert f"at '{field}'" in r.json()["detail"], r.text
    assert "unable to parse" not in r.text


@pytest.mark.parametrize(
    ("path", "raw", "detail"),
    [
        (  # SearchRequest's own check
            SEARCH,
            b"{}",
            "the search has neither `query` nor `vector`: give `query` (text) or `vector` "
            "(an embedding), or both",
        ),
        (  # Strict._storable
            DOCS,
            b'{"name": "a.md", "text": "x\\u0000"}',
            "the request holds a NUL byte (\\u0000) at 'text'; remove it",
        ),
        (  # Strict._unicode
            "/v1/collections",
            b'{"name": "a\\ud800"}',
            "the request holds a lone surrogate (U+D800) at 'name', which is not valid "
            "Unicode; fix the text or the \\u escape that made it",
        ),
    ],
    ids=["query_or_vector", "storable", "unicode"],
)
def test_a_validators_refusal_is_said_in_its_own_words(
    http: httpx.Client, path: str, raw: bytes, detail: str
) -> None:
    """A request model's own check answered ``body: Value error, give `query` ...``:
    pydantic's name for the exception before the sentence written for the caller. The
    detail is now the check's message alone (it names its fields itself)."""
    r = send(http, "POST", path, raw=raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"the request is invalid: {detail}", r.text
    assert r.json()["errors"] == [{"loc": "body", "msg": detail}], r.text


def test_a_type_error_keeps_pydantics_words_at_its_field(http: httpx.Client) -> None:
    """A value of the wrong type is said as pydantic says it, at the field's place."""
    r = send(http, "POST", SEARCH, {"query": "alpha", "k": "3"})
    assert r.status_code == 422, r.text
    said = "Input should be a valid integer"
    assert r.json()["detail"] == f"the request is invalid: body.k: {said}", r.text
    assert r.json()["errors"] == [{"loc": "body.k", "msg": said}], r.text


def test_collection_create_raw_and_limits(http: httpx.Client) -> None:
    for raw in [
        b'{"name": "r1", "settings": {"bm25_k1": NaN}}',
        b'{"name": "r2", "settings": {"bm25_k1": Infinity}}',
        b'{"name": "r3", "settings": {"bm25_k1": 1e400}}',
        b'{"name": "\\ud800"}',
        b'{"name": "r4", "settings": {"\\ud800": 1}}',
    ]:
        assert send(http, "POST", "/v1/collections", raw=raw).status_code >= 400
    longest = "a" * 63
    assert send(http, "POST", "/v1/collections", {"name": longest}).status_code == 201
    assert send(http, "GET", f"/v1/collections/{longest}").status_code == 200


LIST_QUERIES = [
    "limit=0",
    "limit=-1",
    "limit=abc",
    "limit=99999999999999999999",
    "limit=1.5",
    "cursor=abc",
    "cursor=%00",
    "cursor=" + "A" * 10_000,
    "cursor=eyJ4IjoxfQ",  # {"x":1}
    "cursor=e30=",  # {}
    "cursor=bnVsbA==",  # null
    "cursor=WzEsMl0=",  # [1,2]
    "cursor=%FF%FF%FF%FF",
]


@pytest.mark.parametrize("query", LIST_QUERIES)
def test_list_query_junk(http: httpx.Client, query: str) -> None:
    for path in (DOCS, "/v1/jobs"):
        assert send(http, "GET", f"{path}?{query}").status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        "format=%00",
        "source_prefix=%00",
        "metadata=%7B",
        "metadata=%5B%5D",
        "metadata=null",
        "metadata=%7B%22a%22%3ANaN%7D",
        "metadata=%7B%22a%22%3A%22%5Cu0000%22%7D",
        "metadata=%7B%22a%22%3A%22%5Cud800%22%7D",
        "metadata=" + "%5B" * 10_000,
    ],
)
def test_documents_filter_junk(http: httpx.Client, query: str) -> None:
    assert send(http, "GET", f"{DOCS}?{query}").status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        f"{DOCS}/0",
        f"{DOCS}/99999999999999999999",
        f"{DOCS}/1.5",
        "/v1/jobs/-1",
        "/v1/jobs/99999999999999999999",
        f"{DOCS}/1/chunks?after=-2",
        "/v1/collections/%00",
        "/v1/collections/" + "a" * 1000,
        "/v1/collections/%FF",
    ],
)
def test_path_junk(http: httpx.Client, path: str) -> None:
    assert send(http, "GET", path).status_code in (404, 422)


# --- hypothesis --------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
ODD_KEYS = st.sampled_from(
    ["team", "year", "a.b", "source", "title", "page", "created_at", "chunk_type", "", ".",
     "a..b", "a\x00", "$x", "k" * 300, "é.ü", "a'b", "\U0001f600"]
)  # fmt: skip
OPS = st.sampled_from(["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _conditions(filters: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    field = st.dictionaries(ODD_KEYS, VALUES | st.dictionaries(OPS, VALUES, max_size=3), max_size=3)
    logical = st.sampled_from(["$and", "$or", "$not"]).flatmap(
        lambda op: st.fixed_dictionaries(
            {op: filters if op == "$not" else st.lists(filters, max_size=3) | VALUES}
        )
    )
    return field | logical


WHERE = st.recursive(st.dictionaries(ODD_KEYS, VALUES, max_size=2), _conditions, max_leaves=10)


@FUZZ
@given(where=WHERE)
def test_fuzz_where(http: httpx.Client, where: Any) -> None:
    send(http, "POST", SEARCH, {"query": "alpha", "where": where})


SEARCH_BODY = st.fixed_dictionaries(
    {},
    optional={
        "query": st.text(max_size=30) | st.integers() | st.none(),
        "vector": st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=3)
        | st.just([0.1] * DIM),
        "k": st.integers(min_value=-(2**65), max_value=2**65) | st.floats() | st.text(max_size=3),
        "mode": st.sampled_from(["vector", "fulltext", "hybrid", "", "VECTOR", None, 1]),
        "context": st.integers(-2, 60) | st.sampled_from(["section", "x", None, 1.5]),
        "ef_search": st.integers(-1, 2000) | st.none(),
        "rrf_k": st.floats(allow_nan=False, allow_infinity=False) | st.none(),
        "vector_weight": st.floats(-1, 200, allow_nan=False) | st.text(max_size=2),
        "fulltext_weight": st.floats(-1, 200, allow_nan=False),
        "sections": st.booleans() | st.integers(0, 1),
        "explain": st.booleans() | st.just("yes"),
        "extra": st.integers(),
    },
)


@FUZZ
@given(body=SEARCH_BODY)
def test_fuzz_search_body(http: httpx.Client, body: dict[str, Any]) -> None:
    send(http, "POST", SEARCH, body)


TEXTS_BODY = st.fixed_dictionaries(
    {"texts": st.lists(st.text(max_size=20) | st.integers(), max_size=3)},
    optional={
        "ids": st.lists(st.text(max_size=8) | st.integers() | st.none(), max_size=3) | st.text(),
        "metadatas": st.lists(
            st.dictionaries(st.text(max_size=6), VALUES, max_size=3) | SCALARS, max_size=3
        ),
        "vectors": st.lists(
            st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3), max_size=3
        ),
    },
)


@FUZZ
@given(body=TEXTS_BODY)
def test_fuzz_texts_body(http: httpx.Client, body: dict[str, Any]) -> None:
    r = send(http, "POST", TEXTS, body)
    if r.status_code < 300:
        # what was stored reads back the same
        ids = r.json()["ids"]
        got = send(http, "POST", f"{TEXTS}/get", {"ids": ids}).json()["data"]
        assert [t["text"] for t in got] == body["texts"]
        for t, meta in zip(got, body.get("metadatas") or [{}] * len(got), strict=True):
            assert t["metadata"] == meta or _same_json(t["metadata"], meta), (t, meta)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON numbers compare (2.0 comes back as 2 from jsonb)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not isinstance(a, bool) and not isinstance(b, bool) and math.isclose(a, b)
    return bool(a == b)


LIST_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "limit": st.integers(-5, 600).map(str) | st.text(max_size=5),
        "cursor": st.binary(max_size=24).map(lambda b: base64.urlsafe_b64encode(b).decode())
        | st.text(max_size=10),
        "format": st.text(max_size=8),
        "source_prefix": st.text(max_size=8),
        "metadata": st.text(max_size=10) | VALUES.map(json.dumps),
    },
)  # fmt: skip


@FUZZ
@given(params=LIST_PARAMS)
def test_fuzz_list_params(http: httpx.Client, params: dict[str, str]) -> None:
    t0 = time.monotonic()
    r = http.get(DOCS, params=params)
    assert time.monotonic() - t0 < SLOW_S
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json", r.text


# --- regressions: successes where the input should have been refused ------------------


def test_texts_all_zero_vector_refused_where_cosine(http: httpx.Client) -> None:
    """An all-zero vector has no direction: stored in a cosine collection it ranked in an
    arbitrary place with a NaN score. It was stored (201) though a search by it and an
    import of it were refused; now the add is refused too, and nothing is stored."""
    body = {"texts": ["x", "y"], "ids": ["z-ok", "z-zero"], "vectors": [[0.1] * DIM, [0.0] * DIM]}
    r = send(http, "POST", TEXTS, body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"
    assert "vectors[1] is all zeros" in r.json()["detail"]
    got = send(http, "POST", f"{TEXTS}/get", {"ids": ["z-ok", "z-zero"]}).json()
    assert got["count"] == 0
    # a distance that is defined for the zero vector still takes it
    create = {"name": "fz-l2", "model": "outside", "dimension": 3, "distance": "l2"}
    assert send(http, "POST", "/v1/collections", create).status_code == 201
    l2 = {"texts": ["origin"], "ids": ["o"], "vectors": [[0.0, 0.0, 0.0]]}
    assert send(http, "POST", "/v1/collections/fz-l2/texts", l2).status_code == 201


def test_collection_create_empty_model_refused(http: httpx.Client) -> None:
    """``"model": ""`` made a collection bound to the default model (``model or
    default``), which the caller did not name; now it is refused and nothing is made."""
    r = send(http, "POST", "/v1/collections", {"name": "fz-empty-model", "model": ""})
    assert r.status_code == 422, r.text
    assert "model is empty" in r.json()["detail"]
    assert send(http, "GET", "/v1/collections/fz-empty-model").status_code == 404


def test_collection_create_empty_revision_refused(http: httpx.Client) -> None:
    """``"model": "all-MiniLM-L6-v2@"`` (an empty revision) was read as the name alone, so
    the collection was bound to the default revision the caller did not name; now it is
    refused and nothing is made."""
    body = {"name": "fz-empty-revision", "model": "all-MiniLM-L6-v2@"}
    r = send(http, "POST", "/v1/collections", body)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"
    assert "has an empty revision after '@'" in r.json()["detail"]
    assert send(http, "GET", "/v1/collections/fz-empty-revision").status_code == 404


def test_field_index_drop_with_nul_refused(http: httpx.Client) -> None:
    """The DELETE's field is a query parameter, which no schema checks for NUL: it was
    answered 200 "not indexed" for a path no filter can name; now 422 naming the NUL."""
    r = send(http, "DELETE", "/v1/field-indexes?field=a%00b&type=number")
    assert r.status_code == 422, r.text
    assert "NUL" in r.json()["detail"]


def test_field_index_for_a_name_no_filter_can_address_refused(http: httpx.Client) -> None:
    """``{"field": "$gt"}`` was indexed (201), though a filter reads a key starting with
    ``$`` as an operator and so can never name that field; now 422 with the filter's own
    rule, and nothing is built."""
    for field in ("$gt", "$team"):
        r = send(http, "POST", "/v1/field-indexes", {"field": field, "type": "number"})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert f"invalid metadata field {field!r}" in detail
        assert "read as an operator" in detail
    listed = send(http, "GET", "/v1/field-indexes").json()["data"]
    assert not [i for i in listed if i["field"].startswith("$")]


@pytest.mark.parametrize("where", [["team"], "team", 1, True])
@pytest.mark.parametrize(
    ("path", "body"),
    [(SEARCH, {"query": "alpha"}), (f"{TEXTS}/query", {}), (f"{TEXTS}/delete-where", {})],
)
def test_a_where_that_is_no_object_is_an_invalid_filter(
    http: httpx.Client, path: str, body: dict[str, Any], where: Any
) -> None:
    """The schemas refused it 422 ``invalid_input``, where the Store raises
    InvalidFilterError (400): a Client raised another class than the Store for it."""
    r = send(http, "POST", path, {**body, "where": where})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_filter"), r.text
    assert r.json()["detail"].startswith("the filter must be a JSON object, got a")
    assert "send 'where' as an object" in r.json()["detail"]


@pytest.mark.parametrize(
    ("where", "at"),
    [
        ({"$and": [{}]}, "$and[0]"),
        ({"$or": [{"team": "ops"}, {}]}, "$or[1]"),
        ({"$not": {"$and": [{"team": "ops"}, {}]}}, "$not.$and[1]"),
    ],
)
def test_empty_sub_filter_refused_where_it_is(http: httpx.Client, where: Any, at: str) -> None:
    """``$and: [{}]`` matched every chunk (an empty ``$or`` member made the whole ``$or``
    true) where ``$not: {}`` was refused; now each is refused 400, naming where."""
    r = send(http, "POST", SEARCH, {"query": "alpha", "where": where})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_filter"
    assert f"invalid filter at {at!r}: expected a non-empty filter object" in r.json()["detail"]
