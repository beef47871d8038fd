"""Collection creation: settings validated up front, names refused as input errors, and
the whole creation one transaction (a failure leaves nothing that is listed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ragstore.db import repository
from ragstore.embedding.registry import resolve_spec
from ragstore.errors import ConflictError, InputError, RagstoreError
from ragstore.runtime import Runtime


def _create(
    rt: Runtime, name: str, settings: dict[str, Any] | None = None, dimension: int | None = None
) -> repository.Collection:
    spec = resolve_spec(rt.settings.model)
    if dimension is not None:
        spec = dataclasses.replace(spec, name=f"wide-{dimension}", dimension=dimension)
    with rt.db.connection() as conn:
        return repository.create_collection(conn, name, spec, settings)


def _names(rt: Runtime) -> list[str]:
    with rt.db.connection() as conn:
        return [str(r[0]) for r in conn.execute("SELECT name FROM collections")]


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"ts_config": "klingon"}, ["ts_config 'klingon'", "english", "simple"]),
        ({"tsconfig": "english"}, ["unknown collection setting 'tsconfig'", "ts_config"]),
        ({"bm25_b": 2}, ["bm25_b must be a number from 0 to 1, got 2"]),
        ({"bm25_k1": True}, ["bm25_k1 must be a number"]),
        ({"ts_config": "eng\x00lish"}, ["ts_config must be text"]),
    ],
)
def test_bad_settings_are_refused_at_creation(
    rt: Runtime, given: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(InputError) as err:
        _create(rt, "zz", given)
    assert err.value.code == "invalid_input" and err.value.http_status == 422
    for w in words:
        assert w in str(err.value)
    assert "zz" not in _names(rt)


def test_good_settings_are_kept(rt: Runtime) -> None:
    coll = _create(rt, "tuned", {"ts_config": "simple", "bm25_k1": 1.5, "bm25_b": 0.5})
    assert coll.settings == {"ts_config": "simple", "bm25_k1": 1.5, "bm25_b": 0.5}


def test_an_invalid_name_is_an_input_error_not_a_conflict(rt: Runtime) -> None:
    with pytest.raises(InputError) as err:
        _create(rt, "no spaces allowed")
    assert not isinstance(err.value, ConflictError)
    assert "invalid collection name" in str(err.value)


def test_a_failed_creation_leaves_nothing_behind(rt: Runtime) -> None:
    # no HNSW index takes over 4,000 dimensions: refused inside the creation transaction
    with pytest.raises(RagstoreError) as err:
        _create(rt, "wide", dimension=4001)
    assert err.value.http_status == 422, str(err.value)
    assert "wide" not in _names(rt)
    with rt.db.connection() as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM embedding_spaces"
            " WHERE collection_id IS NULL OR table_name LIKE 'emb_pending%'"
        ).fetchone()
    assert orphans is not None and orphans[0] == 0
    assert _create(rt, "wide").name == "wide"  # the name is free again
