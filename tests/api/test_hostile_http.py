"""Hostile HTTP framing sent to a real server on loopback: a compressed body and a query
parameter given twice. Each is refused with one 422 problem naming what to change, and a
refused write stores nothing. (The JSON bodies themselves are fuzzed in
test_fuzz_inputs.py; the HTTP parser's limits in test_server_limits.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ragstore import Client

COLL = "hh"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with Client(open_url) as c:
        c.create_collection(COLL)
        c.add_texts(COLL, ["alpha beta", "gamma delta"], ids=["a", "b"])
    with httpx.Client(base_url=open_url, timeout=30) as h:
        yield h


def refused(r: httpx.Response, says: str) -> None:
    assert r.status_code == 422, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_input"
    assert says in r.json()["detail"], r.json()["detail"]


def stored_ids(http: httpx.Client) -> list[str]:
    r = http.post(f"/v1/collections/{COLL}/texts/get", json={"ids": ["a", "b", "z1", "z2"]})
    assert r.status_code == 200, r.text[:300]
    return sorted(t["id"] for t in r.json()["data"])


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/collections?limit=1&limit=500", "limit"),
        (f"/v1/collections/{COLL}/documents?format=text&format=markdown", "format"),
        (f"/v1/collections/{COLL}/documents?limit=1&cursor=x&limit=2", "limit"),
        ("/v1/jobs?collection=hh&collection=other", "collection"),
    ],
)
def test_a_query_parameter_given_twice_is_refused_naming_it(
    http: httpx.Client, path: str, param: str
) -> None:
    """The route read the last value and dropped the first without a word, as a JSON
    key given twice was before it was refused: ``?limit=1&limit=500`` answered 500."""
    refused(http.get(path), f"query parameter {param!r} is given 2 times for GET")
    assert http.get(path.split("&")[0]).status_code == 200
