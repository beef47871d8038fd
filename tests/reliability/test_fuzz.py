"""Zero 5xx while the database is up: a stateful schemathesis run over the live API (links
inferred from the schema, so created collections and documents are used by later calls),
and a hypothesis run that aims NUL bytes, out-of-range integers and booleans-for-numbers
at every JSON body field and query parameter that reaches PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.stateful.state_machine import APIStateMachine

from ragstore import Client


@pytest.fixture(scope="module")
def seeded(open_url: str) -> Iterator[str]:
    with Client(open_url) as c:
        c.create_collection("fz")
        c.add_document("fz", "seed.md", "# Seed\n\nkittens and ledgers\n", metadata={"t": 1})
    yield open_url


def test_stateful_run_never_answers_5xx(seeded: str) -> None:
    schema = schemathesis.openapi.from_url(f"{seeded}/openapi.json")
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[valid-type,misc]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            assert response.status_code < 500, (case.method, case.path, response.text[:500])

    Machine.run(
        settings=settings(
            max_examples=12,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert issubclass(Machine, APIStateMachine)


EDGE_TEXT = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8).map(lambda s: s + "\x00"),
    st.just("\x00"),
    st.just("a\u0000b"),
    st.text(max_size=5),
)
EDGE_NUMBER = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(1e30),
)
EDGE_VALUE = st.one_of(
    EDGE_TEXT,
    EDGE_NUMBER,
    st.none(),
    st.dictionaries(EDGE_TEXT, st.one_of(EDGE_TEXT, EDGE_NUMBER), max_size=2),
)
EDGE_OBJECT = st.dictionaries(EDGE_TEXT, EDGE_VALUE, max_size=3)

BODIES = st.one_of(
    st.builds(
        lambda q, k, w: ("POST", "/v1/collections/fz/search", {"query": q, "k": k, "where": w}),
        EDGE_TEXT.filter(bool),
        EDGE_NUMBER,
        EDGE_OBJECT,
    ),
    st.builds(
        lambda w: ("POST", "/v1/collections/fz/search", {"query": "kittens", "where": w}),
        st.dictionaries(
            st.sampled_from(["page", "chunk_type", "title", "t"]),
            st.one_of(
                EDGE_VALUE,
                st.dictionaries(
                    st.sampled_from(["$gt", "$in", "$eq", "$exists"]),
                    st.one_of(EDGE_VALUE, st.lists(EDGE_VALUE, max_size=2)),
                    max_size=2,
                ),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
    st.builds(
        lambda n, t, m: (
            "POST",
            "/v1/collections/fz/documents",
            {"name": n, "text": t, "metadata": m},
        ),
        st.one_of(EDGE_TEXT, st.just("ok.md")),
        EDGE_TEXT.filter(bool),
        EDGE_OBJECT,
    ),
    st.builds(
        lambda n, s: ("POST", "/v1/collections", {"name": n, "settings": s}),
        st.one_of(EDGE_TEXT, st.just("fz2")),
        EDGE_OBJECT,
    ),
    st.builds(
        lambda p, f, m: (
            "GET",
            "/v1/collections/fz/documents",
            {"source_prefix": p, "format": f, "metadata": m},
        ),
        EDGE_TEXT,
        EDGE_TEXT,
        EDGE_TEXT,
    ),
)


def test_edge_values_never_answer_5xx(seeded: str) -> None:
    with httpx.Client(base_url=seeded, timeout=60) as h:

        @given(call=BODIES)
        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(call: tuple[str, str, dict[str, Any]]) -> None:
            method, path, payload = call
            if method == "GET":
                r = h.get(path, params={k: v for k, v in payload.items() if v is not None})
            else:
                r = h.post(path, json=payload)
            assert r.status_code < 500, (method, path, payload, r.text[:300])

        run()
