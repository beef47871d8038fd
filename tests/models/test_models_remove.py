"""``ragstore models remove``: a pin nothing uses is deleted, one in use is refused naming
each use, and a migration that looked the pin up before its removal stops cleanly.

Pins were never deleted: a pin holding an endpoint's password (made before ``models add``
refused one) kept it in the database for good, and experiments piled up. On the real
database with the real default model (the pins here are copies of it under other names).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import models
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, resolve_spec
from ragstore.errors import ModelNotFoundError
from ragstore.ingest.texts import add_texts
from ragstore.modelops import list_models, migrate, model_status
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.conftest import run_cli

TEXTS = ["Tomatoes need full sun.", "Sourdough rises slowly.", "Glaciers carve valleys."]


def _pin(rt: Runtime, name: str) -> ModelSpec:
    """A pin of the default model's weights under ``name@r1`` (as `models add` makes)."""
    spec = replace(resolve_spec(DEFAULT_MODEL), name=name, revision="r1")
    with rt.db.connection() as conn:
        models.upsert_model(conn, spec)
    return spec


def _pinned(rt: Runtime) -> set[str]:
    return {m.spec.key for m in list_models(rt)}


def _remove(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli("models", "remove", *args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def cli(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RAGSTORE_MODEL", raising=False)
    yield


def test_an_unused_pin_is_removed_and_a_dry_run_removes_nothing(
    rt: Runtime, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _pin(rt, "exp-unused")
    code, _, err = _remove(capsys, spec.key, "--dry-run")
    assert code == 0 and f"would remove {spec.key}" in err, err
    assert spec.key in _pinned(rt)
    code, out, _ = _remove(capsys, spec.key, "--yes", "--json")
    assert code == 0 and json.loads(out) == {"model": spec.key, "dry_run": False, "removed": True}
    assert spec.key not in _pinned(rt)
    code, _, err = _remove(capsys, spec.key, "--yes")
    assert code == 78 and f"error[model_not_found]: no pinned model {spec.key!r}" in err, err


def test_a_pin_in_use_is_refused_naming_the_use_until_nothing_uses_it(
    rt: Runtime, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused (conflict, exit 65, nothing changed) while it is a collection's active model,
    while its vectors are kept for a rollback after a migration, and while a migration to
    it is in progress; removed once pruned."""
    spec = _pin(rt, "exp-used")
    Store.from_runtime(rt).create_collection("rm-used", model=spec.key)
    add_texts(rt, "rm-used", TEXTS, create=False)

    code, _, err = _remove(capsys, spec.key, "--yes")
    assert code == 65 and f"error[conflict]: model {spec.key} is in use" in err, err
    assert "it is the active model of collection 'rm-used'" in err
    assert "ragstore models migrate -c rm-used --to MODEL" in err
    assert spec.key in _pinned(rt)

    migrate(rt, "rm-used", TRUNCATED_MODEL, sample_queries=0)
    code, _, err = _remove(capsys, spec.key, "--yes", "--dry-run")
    assert code == 65 and "collection 'rm-used' keeps its vectors for a rollback" in err, err
    assert "ragstore models prune -c rm-used" in err and spec.key in _pinned(rt)

    target = _pin(rt, "exp-building")
    migrate(rt, "rm-used", target.key, switch=False, sample_queries=0)
    code, _, err = _remove(capsys, target.key, "--yes")
    assert code == 65 and "collection 'rm-used' is being migrated to it" in err, err
    assert "ragstore models cancel -c rm-used" in err and target.key in _pinned(rt)

    assert run_cli("models", "cancel", "-c", "rm-used") == 0
    assert run_cli("models", "prune", "-c", "rm-used", "--yes") == 0
    capsys.readouterr()
    for key in (spec.key, target.key):
        code, _, err = _remove(capsys, key, "--yes")
        assert code == 0 and f"removed {key}" in err, err
    assert not {spec.key, target.key} & _pinned(rt)
    assert rt.collection("rm-used").model.key == resolve_spec(TRUNCATED_MODEL).key


def test_the_configured_default_model_is_refused_unless_built_in(
    rt: Runtime, cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Removed, a default that is not built in leaves every new collection failing; a
    built-in's pin nothing uses goes (it is pinned again, the same, when next needed)."""
    spec = _pin(rt, "exp-default")
    monkeypatch.setenv("RAGSTORE_MODEL", spec.key)
    code, _, err = _remove(capsys, spec.key, "--yes")
    assert code == 65 and "is the default model of new collections here" in err, err
    assert spec.key in _pinned(rt)
    builtin = resolve_spec(DEFAULT_MODEL)
    monkeypatch.setenv("RAGSTORE_MODEL", DEFAULT_MODEL)
    with rt.db.connection() as conn:  # no collection of this module is on it (yet)
        assert models.pin_uses(conn, models.upsert_model(conn, builtin)) == []
    code, _, err = _remove(capsys, builtin.key, "--yes")
    assert code == 0 and builtin.key not in _pinned(rt), err
    Store.from_runtime(rt).create_collection("rm-default")  # pinned again
    assert rt.collection("rm-default").model == builtin


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _waiting_on_pins(admin: psycopg.Connection[Any]) -> bool:
    """Whether a backend waits for a lock in a statement on pins or spaces."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
        " AND (query ILIKE '%embedding_models%' OR query ILIKE '%embedding_spaces%')"
    ).fetchone()
    return bool(row and row[0])


def test_a_migration_that_looked_the_pin_up_before_its_removal_stops_saying_so(
    rt: Runtime, settings: Settings
) -> None:
    """The removal holds the pin's row until it commits; a migration to the pin waiting
    for it then finds the pin gone and stops with ``model_not_found``, changing nothing
    (it failed on the foreign key as "something removed meanwhile")."""
    add_texts(rt, "rm-race", TEXTS)
    before = rt.collection("rm-race")
    spec = _pin(rt, "exp-race")
    pinned = next(m for m in list_models(rt) if m.spec.key == spec.key)
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    errors: list[BaseException] = []

    def run() -> None:
        with Runtime(settings) as other:
            try:
                migrate(other, "rm-race", spec.key, sample_queries=0)
            except BaseException as exc:  # handed to the test
                errors.append(exc)

    with psycopg.connect(url) as removal, psycopg.connect(url, autocommit=True) as admin:
        assert models.lock_pin(removal, pinned.id)
        assert models.pin_uses(removal, pinned.id) == []
        models.delete_pin(removal, pinned.id)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _wait_for(lambda: _waiting_on_pins(admin), "the migration to wait for the pin")
        removal.commit()
        thread.join(120)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, ModelNotFoundError), repr(error)
    assert f"model {spec.key} was removed" in str(error)
    after = rt.collection("rm-race")
    assert (after.table, after.model) == (before.table, before.model)
    assert [r["model"] for r in model_status(rt, "rm-race")] == [before.model.key]
