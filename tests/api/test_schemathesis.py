"""Property-based run of schemathesis against the live server's /openapi.json: for
generated requests to every operation, no 5xx, and every error a valid problem+json."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from ragstore import Client

PROBLEM_FIELDS = {
    "type": str,
    "title": str,
    "status": int,
    "detail": str,
    "code": str,
    "request_id": str,
}


def problem_json(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """An error answer is RFC 9457 problem+json with our fields and its own status."""
    if response.status_code < 400:
        return
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    assert ctype == "application/problem+json", ctype
    body = response.json()
    for name, kind in PROBLEM_FIELDS.items():
        assert isinstance(body.get(name), kind), (name, body)
    assert body["status"] == response.status_code
    assert body["type"] == f"urn:ragstore:problem:{body['code']}"
    assert "Traceback" not in response.text


def server_errors_are_absent(
    ctx: object, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    assert response.status_code < 500, response.text


@pytest.fixture(scope="module")
def api_schema(open_url: str) -> schemathesis.BaseSchema:
    with Client(open_url) as c:
        c.create_collection("fuzz")
        c.add_document("fuzz", "seed.md", "# Seed\n\na document to find")
    spec = httpx.get(f"{open_url}/openapi.json").json()
    return schemathesis.openapi.from_dict(spec)


def test_api_never_answers_5xx_and_errors_are_problem_json(
    api_schema: schemathesis.BaseSchema, open_url: str
) -> None:
    """Each operation gets a bounded number of generated requests (derandomized)."""
    tested = []
    statuses: set[int] = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=open_url, timeout=60)
            server_errors_are_absent(None, response, case)
            problem_json(None, response, case)
            statuses.add(response.status_code)

        run()
        tested.append(operation.label)
    assert len(tested) >= 12, tested
    assert any(200 <= st < 300 for st in statuses)
    assert any(400 <= st < 500 for st in statuses)
