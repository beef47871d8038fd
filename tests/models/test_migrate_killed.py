"""Model migrations killed outright (SIGKILL) at their decisive points.

The resume of a plain backfill killed midway is proven in ``test_resume``; here: a
re-cutting migration killed after some of its batches committed, a migration killed as
it switches, and a rollback killed as it switches back. After each, searches answer from
one whole model, ``ragstore db check`` is clean and the same command run again ends in the
state it promises.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import documents, repository, spaces
from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.modelops import rechunk
from ragstore.modelops.migrate import migrate
from ragstore.modelops.specs import find_model
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.conftest import run_cli
from tests.killing import killed_when

NARROW = "minilm-32-killed"
SENTENCE = "The {t} of part {p} behave in ways that take a long sentence, number {n}, to explain. "


def _write(folder: Path, docs: int) -> Path:
    """``docs`` Markdown files, each one paragraph of two sentences (~45 tokens): one chunk
    at 256 tokens, two at 32 (a migration to the narrow model cuts them again). Short, for
    every document is embedded three or four times over (ingest, the killed run, the run
    again) on a machine whose cores the other tests share."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        text = "".join(SENTENCE.format(t=f"topic{d}", p=d, n=n) for n in range(2))
        (folder / f"doc{d}.md").write_text(f"# Document {d}\n\n{text}\n")
    return folder


@pytest.fixture(scope="module")
def narrow(rt: Runtime) -> str:
    base = resolve_spec(DEFAULT_MODEL)
    with rt.db.connection() as conn:
        upsert_model(conn, dataclasses.replace(base, name=NARROW, max_tokens=32))
    return NARROW


def _env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        **os.environ,
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAGSTORE_DEVICE": "cpu",
    }


SWITCHING = (  # a backend waits for a lock in spaces.activate's 2nd write: inside the
    # switch's transaction, after its checks and after it retired the old space
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    " AND datname = current_database() AND wait_event_type = 'Lock'"
    " AND query LIKE 'UPDATE embedding_spaces SET status = ''active''%'"
)


@contextmanager
def _space_held(url: str, space_id: int) -> Iterator[Callable[[], None]]:
    """The space's row held FOR UPDATE: a switch to it waits as it activates it. Yields
    what lets go of it."""
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1 FROM embedding_spaces WHERE id = %s FOR UPDATE", (space_id,))
        yield conn.rollback
        conn.rollback()


WRITE_WAITING = (  # a backend waits for a document write lock (documents.lock_sources)
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    " AND datname = current_database() AND wait_event_type = 'Lock'"
    " AND wait_event = 'advisory' AND query LIKE 'SELECT count(pg_advisory_xact_lock(k))%'"
)


@contextmanager
def _second_batch_stopped(
    url: str, shadow_id: int, order: list[str]
) -> Iterator[Callable[[], None]]:
    """The write lock of one document of the re-cut's second batch (``order``: the live
    documents in the order the backfill takes them) held in the shadow, one that no
    document of the first batch shares (sources hash into ``LOCK_BUCKETS`` locks): the
    first batch commits, the second waits as it writes. Yields what lets go of it."""
    first = rechunk.BATCH_DOCUMENTS
    taken = {_bucket(s) for s in order[:first]}
    free = [s for s in order[first : 2 * first] if _bucket(s) not in taken]
    assert free, "every document of the second batch shares a lock with the first"
    with psycopg.connect(url) as conn:
        documents.lock_sources(conn, shadow_id, free[:1])
        yield conn.rollback
        conn.rollback()


def _bucket(source: str) -> int:
    """The write lock of ``source`` among its collection's (as documents.lock_sources)."""
    return zlib.crc32(source.encode()) % documents.LOCK_BUCKETS


def _check_clean(capsys: pytest.CaptureFixture[str], collection: str) -> str:
    capsys.readouterr()
    assert run_cli("db", "check", "-c", collection) == 0
    out = capsys.readouterr().out
    assert "ok: nothing to repair" in out, out
    return out


def _hits(rt: Runtime, collection: str) -> int:
    return len(search(rt, "topic3 of part 3", collection=collection, k=5, mode="vector"))


def test_a_recut_migration_killed_after_some_batches_resumes_and_switches(
    rt: Runtime,
    settings: Settings,
    cli_env: dict[str, str],
    narrow: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    coll_name = "killed-recut"
    # two batches: the first commits, the second is stopped as it writes
    docs = rechunk.BATCH_DOCUMENTS + 16
    ingest_paths(rt, [_write(tmp_path / "c", docs)], coll_name)
    coll = rt.collection(coll_name)
    old_key = coll.model.key
    with rt.db.connection() as conn:
        chunks_before = spaces.count_vectors(conn, coll.table)
        # the shadow made as the command makes it (what a run killed before its first
        # batch leaves; the command resumes it), so that its write locks can be held
        shadow, _ = rechunk.prepare(conn, coll, find_model(rt, narrow))
        order = [rec.source for _, rec in documents.without_twin(conn, coll.id, shadow.id, 0, docs)]
    assert len(order) == docs
    with _second_batch_stopped(cli_env["RAGSTORE_DATABASE_URL"], shadow.id, order) as release:
        # killed while the second batch waits to write: the first has committed, the
        # rest cannot, however fast the machine (no margin of documents to outrun)
        killed_when(
            ["models", "migrate", "-c", coll_name, "--to", narrow],
            _env(settings),
            cli_env["RAGSTORE_DATABASE_URL"],
            WRITE_WAITING,
            tmp_path / "m.log",
            release=release,
        )
    coll = rt.collection(coll_name)
    assert coll.model.key == old_key
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, coll.table) == chunks_before
        sh = rechunk.building_shadow(conn, coll)
        assert sh is not None
        stored = documents.count_documents(conn, sh.id)
    assert stored == rechunk.BATCH_DOCUMENTS, "killed midway: the first batch committed, alone"
    assert _hits(rt, coll_name) == 5
    out = _check_clean(capsys, coll_name)
    assert "the same `ragstore models migrate` again finishes it" in out, out
    capsys.readouterr()
    assert run_cli("models", "migrate", "-c", coll_name, "--to", narrow) == 0
    err = capsys.readouterr().err
    assert f"({stored} documents already done, {docs} in all)" in err, err
    coll = rt.collection(coll_name)
    assert coll.model.name == narrow
    with rt.db.connection() as conn:
        assert documents.count_documents(conn, coll.id) == docs
        assert spaces.count_vectors(conn, coll.table) > chunks_before
        assert not repository.shadows(conn, coll.id) or all(
            spaces.get_space(conn, s.space_id).status == "retired"  # type: ignore[union-attr]
            for s in repository.shadows(conn, coll.id)
        )
    assert _hits(rt, coll_name) == 5
    _check_clean(capsys, coll_name)


def test_a_migration_killed_as_it_switches_keeps_the_old_model_and_switches_when_run_again(
    rt: Runtime,
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    coll_name = "killed-switch"
    ingest_paths(rt, [_write(tmp_path / "c", 16)], coll_name)
    old = rt.collection(coll_name)
    new = migrate(rt, coll_name, TRUNCATED_MODEL, switch=False)  # filled: only the switch left
    assert not new.remaining
    with _space_held(url, new.space_id) as release:
        killed_when(
            ["models", "migrate", "-c", coll_name, "--to", TRUNCATED_MODEL],
            _env(settings),
            url,
            SWITCHING,
            tmp_path / "m.log",
            release=release,
        )
    assert rt.collection(coll_name).model.key == old.model.key
    with rt.db.connection() as conn:  # the old space's retirement was rolled back with it
        assert [(s.id, s.status) for s in spaces.list_spaces(conn, old.id)] == [
            (old.space_id, "active"),
            (new.space_id, "building"),
        ]
    assert _hits(rt, coll_name) == 5
    _check_clean(capsys, coll_name)
    capsys.readouterr()
    assert run_cli("models", "migrate", "-c", coll_name, "--to", TRUNCATED_MODEL) == 0
    assert rt.collection(coll_name).model.key == resolve_spec(TRUNCATED_MODEL).key
    assert _hits(rt, coll_name) == 5
    _check_clean(capsys, coll_name)

    # and a rollback killed as it switches back changes nothing; run again, it rolls back
    with _space_held(url, old.space_id) as release:
        killed_when(
            ["models", "rollback", "-c", coll_name],
            _env(settings),
            url,
            SWITCHING,
            tmp_path / "r.log",
            release=release,
        )
    assert rt.collection(coll_name).model.key == resolve_spec(TRUNCATED_MODEL).key
    _check_clean(capsys, coll_name)
    assert run_cli("models", "rollback", "-c", coll_name) == 0
    assert rt.collection(coll_name).model.key == old.model.key
    assert _hits(rt, coll_name) == 5
    _check_clean(capsys, coll_name)
