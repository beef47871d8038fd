"""Input PostgreSQL would refuse (NUL bytes, integers out of range, non-finite numbers) and
loosely typed values (``{"k": true}``) are refused at the edge as 4xx / exit 65, never
answered as a database outage (503 / exit 69)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ragstore import Client
from tests.conftest import run_cli

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with Client(open_url) as c:
        c.create_collection("edge")
        c.add_document(
            "edge", "seed.md", "# Seed\n\nA page about kittens.\n", metadata={"team": "ops"}
        )
    with httpx.Client(base_url=open_url, timeout=60) as h:
        yield h


def _refused(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] != "database_error"
    return body


SEARCH_BODIES = {
    "nul_in_query": {"query": "kit\u0000tens"},
    "nul_in_where_key": {"query": "kittens", "where": {"te\u0000am": "ops"}},
    "nul_in_where_value": {"query": "kittens", "where": {"team": "o\u0000ps"}},
    "nul_in_where_operator_list": {"query": "kittens", "where": {"team": {"$in": ["\u0000"]}}},
    "page_float_overflow": {"query": "kittens", "where": {"page": 1e30}},
    "page_int_overflow": {"query": "kittens", "where": {"page": 10**30}},
    "page_int32_overflow": {"query": "kittens", "where": {"page": {"$gt": 2**40}}},
    "metadata_int_overflow": {"query": "kittens", "where": {"year": {"$gt": 10**30}}},
    # past a float's range: the message's short form of the number overflowed (a 500)
    "metadata_int_past_float": {"query": "kittens", "where": {"year": 10**400}},
    "metadata_int_past_float_in": {"query": "kittens", "where": {"year": {"$in": [-(10**400)]}}},
    "page_int_past_float": {"query": "kittens", "where": {"page": {"$gte": 10**400}}},
    "k_true": {"query": "kittens", "k": True},
    "k_string": {"query": "kittens", "k": "3"},
    "explain_int": {"query": "kittens", "explain": 1},
}


@pytest.mark.parametrize("case", sorted(SEARCH_BODIES))
def test_search_refuses_bad_input_as_4xx(http: httpx.Client, case: str) -> None:
    body = _refused(http.post("/v1/collections/edge/search", json=SEARCH_BODIES[case]), 400, 422)
    assert body["status"] in (400, 422)


def test_search_with_a_sane_body_still_finds(http: httpx.Client) -> None:
    """A page bound at the top of the range is taken, and the search finds the seed. The
    seed (Markdown) has no page, which ``$lt`` never matches: with that alone this test
    found nothing, and passed on the status; ``$ne`` matches a chunk without a page."""
    where = {"$or": [{"page": {"$lt": 2**31 - 1}}, {"page": {"$ne": 2**31 - 1}}]}
    r = http.post("/v1/collections/edge/search", json={"query": "kittens", "k": 3, "where": where})
    assert r.status_code == 200, r.text
    assert [hit["title"] for hit in r.json()["data"]] == ["Seed"], r.text


def test_non_finite_number_is_refused(http: httpx.Client) -> None:
    raw = b'{"query": "kittens", "where": {"year": NaN}}'
    _refused(
        http.post(
            "/v1/collections/edge/search", content=raw, headers={"content-type": "application/json"}
        ),
        400,
        422,
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {"te\u0000am": "x"},
        {"team": "x\u0000"},
        {"n": [1, {"deep": "\u0000"}]},
        {"big": 10**30},
        {"big": 10**400},
        {"big": [-(10**400)]},
    ],
)
def test_document_metadata_is_checked(http: httpx.Client, metadata: dict[str, Any]) -> None:
    r = http.post(
        "/v1/collections/edge/documents",
        json={"name": "m.md", "text": "# M\n\nmetadata", "metadata": metadata},
    )
    body = _refused(r, 422)
    assert "metadata" in body["detail"]


def test_upload_metadata_with_nul_is_refused(http: httpx.Client) -> None:
    r = http.post(
        "/v1/collections/edge/documents/upload",
        files={"files": ("u.md", b"# U\n\nupload")},
        data={"metadata": '{"team": "a\\u0000b"}'},
    )
    _refused(r, 422)


def test_upload_metadata_past_a_floats_range_is_refused(http: httpx.Client) -> None:
    r = http.post(
        "/v1/collections/edge/documents/upload",
        files={"files": ("u.md", b"# U\n\nupload")},
        data={"metadata": '{"n": 1' + "0" * 400 + "}"},
    )
    body = _refused(r, 422)
    assert "about 401 digits" in body["detail"]


def test_texts_metadata_past_a_floats_range_is_refused(http: httpx.Client) -> None:
    r = http.post(
        "/v1/collections/edge/texts",
        json={"texts": ["kittens"], "metadatas": [{"n": -(10**400)}]},
    )
    body = _refused(r, 422)
    assert "a negative number of about 401 digits" in body["detail"]


def test_collection_settings_with_nul_are_refused(http: httpx.Client) -> None:
    r = http.post("/v1/collections", json={"name": "nul", "settings": {"owner": "a\u0000"}})
    _refused(r, 422)
    assert http.get("/v1/collections/nul").status_code == 404


@pytest.mark.parametrize(
    "params",
    [{"source_prefix": "a\u0000"}, {"format": "mark\u0000"}, {"metadata": '{"team": "\\u0000"}'}],
)
def test_document_list_query_with_nul_is_refused(
    http: httpx.Client, params: dict[str, str]
) -> None:
    _refused(http.get("/v1/collections/edge/documents", params=params), 400)


def test_strict_booleans_in_migrate(http: httpx.Client) -> None:
    r = http.post("/v1/collections/edge/model/migrate", json={"to": "x", "switch": "yes"})
    _refused(r, 422, 404)
    r = http.post("/v1/collections/edge/model/migrate", json={"to": "x", "batch_size": True})
    _refused(r, 422, 404)


@pytest.mark.parametrize(
    "where",
    [
        '{"team": "o\\u0000ps"}',
        '{"te\\u0000am": 1}',
        '{"page": 1e30}',
        '{"page": 1000000000000000000000000000}',
        '{"year": 1' + "0" * 400 + "}",
        '{"year": NaN}',
    ],
)
def test_cli_search_refuses_bad_filters_with_exit_65(
    cli_env: dict[str, str], http: httpx.Client, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = run_cli("search", "kittens", "-c", "edge", "--where", where)
    err = capsys.readouterr().err
    assert status == 65, err
    assert "error[invalid_filter]" in err
