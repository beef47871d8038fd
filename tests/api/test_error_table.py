"""The one error table: complete, consistent with the classes, and read back by the client."""

from __future__ import annotations

import ragstore
from ragstore.client import error_from_problem
from ragstore.errors import (
    DatabaseUnavailableError,
    RagstoreError,
    RateLimitedError,
    all_error_classes,
)
from ragstore.http.problems import PROBLEMS, error_class_for_code, problem_body


def test_problem_table_covers_every_error_class() -> None:
    missing = [c.__name__ for c in all_error_classes() if c not in PROBLEMS]
    assert missing == []


def test_problem_table_statuses_match_the_classes() -> None:
    wrong = {
        c.__name__: (p.status, c.http_status)
        for c, p in PROBLEMS.items()
        if p.status != c.http_status
    }
    assert wrong == {}


def test_error_codes_are_unique() -> None:
    codes = [c.code for c in all_error_classes()]
    assert len(codes) == len(set(codes))


def test_every_code_maps_back_to_its_class() -> None:
    for cls in all_error_classes():
        assert error_class_for_code(cls.code) is cls


def test_client_raises_the_class_a_problem_names() -> None:
    for cls in all_error_classes():
        body = problem_body(cls("boom"), request_id="r1", instance="/x")
        exc = error_from_problem(body["status"], body)
        assert type(exc) is cls
        assert str(exc) == (
            "boom" if cls is not DatabaseUnavailableError else body["detail"]
        )  # its public text, never the address
        assert exc.request_id == "r1"  # type: ignore[attr-defined]


def test_unknown_code_becomes_the_root_error() -> None:
    exc = error_from_problem(500, {"code": "something_new", "detail": "x"})
    assert type(exc) is RagstoreError


def test_rate_limited_keeps_retry_after() -> None:
    assert RateLimitedError("slow down", retry_after=2.5).retry_after == 2.5


def test_package_exports_a_sorted_all() -> None:
    assert ragstore.__all__ == sorted(ragstore.__all__)
    assert "Client" in ragstore.__all__
    for name in ragstore.__all__:
        assert hasattr(ragstore, name)
