"""An ingest stops at the first error that fails every later write too.

The database gone part way (its connections ended and no new one let in) or a database
that only reads (``default_transaction_read_only``, as a hot standby): each remaining file
used to be parsed, embedded and failed in turn, one line each, or, where a read met the
error first, the ingest ended with that error alone and no word of what it had stored.
It now returns its report: the files stored, one failure, the rest ``not_attempted`` and
the error in ``stopped_by``; running it again resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ragstore.config import Settings
from ragstore.errors import DatabaseUnavailableError
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime

# The Client sends a request the read-only database refused (503 database_unavailable)
# again, waiting a growing pause up to its max_retry_wait (30 s): each test here waited
# that out for an error that does not pass. What is checked is what one request answers
# and whether the Client sends the next one, not its retries: none.
NO_RETRY = 0

PAGES = [f"# Page {i}\n\n" + " ".join(f"term{i}z{j}" for j in range(300)) for i in range(10)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    where = tmp_path / "corpus"
    where.mkdir()
    for i, text in enumerate(PAGES):
        (where / f"p{i:02}.md").write_text(text)
    return where


@pytest.fixture()
def one_file_rounds(settings: Settings) -> Settings:
    return settings.model_copy(update={"ingest_batch_chunks": 1, "bulk_load_bytes": 0})


def _dbname(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url.get_secret_value().split("?")[0].rsplit("/", 1)[1]


def _end_sessions(admin: psycopg.Connection[tuple[object, ...]], db: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (db,),
    )


@contextmanager
def _read_only(
    admin: psycopg.Connection[tuple[object, ...]], db: str, *, end_sessions: bool = True
) -> Iterator[None]:
    """The database ``db`` only reads inside the block (``default_transaction_read_only``,
    as a hot standby); with ``end_sessions`` the pooled sessions are ended on the way in and
    out, so that they take the setting anew."""
    name = sql.Identifier(db)
    admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
    if end_sessions:
        _end_sessions(admin, db)
    try:
        yield
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))
        if end_sessions:
            _end_sessions(admin, db)


@pytest.fixture()
def admin(pg_admin_uri: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        yield conn


def _stored(settings: Settings, name: str) -> set[str]:
    with Runtime(settings) as rt, rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source FROM documents d JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = %s",
            (name,),
        ).fetchall()
    return {Path(str(r[0])).name for r in rows}


def _check_stopped(report: object, name: str, settings: Settings) -> set[str]:
    from ragstore.ingest import IngestReport

    assert isinstance(report, IngestReport)
    assert report.stopped_by is not None
    statuses = [o.status for o in report.outcomes]
    assert statuses.count("failed") <= 1, report.failed
    assert statuses.count("not_attempted") >= len(PAGES) // 2, statuses
    assert len(statuses) == len(PAGES), statuses
    added = {Path(o.source).name for o in report.outcomes if o.status == "added"}
    assert _stored(settings, name) == added  # nothing acknowledged that was not stored
    return added


def test_a_database_gone_part_way_stops_the_ingest_with_its_report(
    one_file_rounds: Settings, folder: Path, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    db = _dbname(one_file_rounds)
    with Runtime(one_file_rounds) as rt:
        rt.collection("gone", create=True)
        done = []

        def progress(_event: str, files: int, _chunks: int) -> None:
            if files == 2 and not done:  # the database goes away after the second file
                done.append(True)
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(db))
                )
                _end_sessions(admin, db)

        try:
            report = ingest_paths(rt, [folder], "gone", progress=progress)
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(db))
            )
    assert isinstance(report.stopped_by, DatabaseUnavailableError), report.stopped_by
    added = _check_stopped(report, "gone", one_file_rounds)
    assert len(added) >= 2
    with Runtime(one_file_rounds) as rt:  # the same ingest again resumes
        again = ingest_paths(rt, [folder], "gone")
    assert again.stopped_by is None and not again.failed
    assert again.count("unchanged") == len(added)
    assert again.count("added") == len(PAGES) - len(added)


def test_a_read_only_database_stops_the_ingest_at_its_first_write(
    one_file_rounds: Settings, folder: Path, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    db = _dbname(one_file_rounds)
    with Runtime(one_file_rounds) as rt:
        rt.collection("ro", create=True)
    with _read_only(admin, db, end_sessions=False), Runtime(one_file_rounds) as rt:
        report = ingest_paths(rt, [folder], "ro")
    assert report.count("failed") == 1, report.outcomes
    assert "read-only" in (report.failed[0].error or ""), report.failed
    assert _check_stopped(report, "ro", one_file_rounds) == set()
    assert report.embedded <= 3 * 8, report.embedded  # not every file's chunks


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_client_upload_in_several_requests_stops_at_a_read_only_database(
    settings: Settings,
    folder: Path,
    admin: psycopg.Connection[tuple[object, ...]],
    kind: str,
) -> None:
    """An upload the Client splits in several requests (the server's upload limit fits
    two files) into a database that only reads: the first request's ingest stops at its
    first write; the Client used to send every remaining request, each failing in turn,
    and now stops there, the rest ``not_sent``."""
    import asyncio

    from ragstore import AsyncClient, Client
    from ragstore.errors import RagstoreError
    from tests.api.conftest import running_server, with_

    files = sorted(folder.iterdir())[:6]
    names = [f.name for f in files]
    limit = 2 * max(f.stat().st_size for f in files) + 1500  # two files a request
    coll = f"ro-client-{kind}"
    db = _dbname(settings)
    with Runtime(settings) as rt:
        rt.collection(coll, create=True)
    server = with_(settings, auth="off", max_upload_bytes=limit)
    with (
        running_server(server) as url,
        _read_only(admin, db),  # the pooled sessions take the setting anew
        pytest.raises(RagstoreError) as info,
    ):
        if kind == "sync":
            with Client(url, retries=NO_RETRY) as c:
                c.upload(coll, files)
        else:

            async def go() -> None:
                async with AsyncClient(url, retries=NO_RETRY) as c:
                    await c.upload(coll, files)

            asyncio.run(go())
    got = info.value.problem_members
    assert got["not_sent"] == names[2:], got
    assert sorted(f["name"] for f in got["failed"]) == names[:2], got
    assert got["stored"] == [], got
    assert "read-only" in info.value.message and "not sent" in info.value.message
    assert _stored(settings, coll) == set()


def test_a_read_only_database_met_by_a_requests_last_file_stops_the_upload(
    settings: Settings, folder: Path, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The first request's first file fails alone (a binary file, never written) and its
    last file meets the read-only database: nothing is left ``not_attempted`` after it, and
    the server answered the binary file's 415 (or, alone, a 500 ``database_error``), which
    the Client did not take for an error that fails every later write, so it sent the next
    request too. It is now the stopping error the earlier files get (503
    ``database_unavailable``, saying the database only reads and what to do), and the
    breaker stays closed: the database still answers reads."""
    from ragstore import Client
    from ragstore.errors import RagstoreError
    from tests.api.conftest import running_server, with_

    size = (folder / "p00.md").stat().st_size  # as large as a page: two files a request
    (folder / "a-binary.md").write_bytes((b"\x00\x01binary" * size)[:size])  # fails alone
    files = sorted(folder.iterdir())[:6]
    names = [f.name for f in files]
    limit = 2 * max(f.stat().st_size for f in files) + 1500  # two files a request
    coll = "ro-client-last"
    db = _dbname(settings)
    with Runtime(settings) as rt:
        rt.collection(coll, create=True)
    server = with_(settings, auth="off", max_upload_bytes=limit)
    with (
        running_server(server) as url,
        Client(url, retries=NO_RETRY) as c,
        _read_only(admin, db),  # the pooled sessions take the setting anew
    ):
        with pytest.raises(RagstoreError) as info:
            c.upload(coll, files)
        assert c.list_documents(coll)["data"] == []  # a read, not failing fast
    err = info.value
    got = err.problem_members
    assert (err.code, getattr(err, "status", None)) == ("database_unavailable", 503), err
    assert got["not_sent"] == names[2:], got
    assert [f["name"] for f in got["failed"]] == names[:2], got
    assert got["stored"] == [], got
    assert "read-only" in err.message and "default_transaction_read_only" in err.message, err
    assert _stored(settings, coll) == set()


def test_a_key_first_used_on_a_read_only_database_reads(
    settings: Settings, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A key's first verified use in a process records ``last_used_at``: on a primary that
    only reads (the server checks for a standby at its start only), that update failed the
    request, a search or a listing included (503), for each key's first use in each
    process. The read is now answered, and the write still refused."""
    from ragstore import Client
    from ragstore.auth.keys import KeyStore
    from ragstore.errors import RagstoreError
    from tests.api.conftest import running_server, with_

    db = _dbname(settings)
    with Runtime(settings) as rt:
        rt.collection("ro-keys", create=True)
        secret = KeyStore(rt.db).create("write").secret
    with (
        running_server(with_(settings, auth="on")) as url,
        _read_only(admin, db),  # the pooled sessions take the setting anew
        Client(url, api_key=secret, retries=NO_RETRY) as c,
    ):
        names = [col["name"] for col in c.list_collections()]
        with pytest.raises(RagstoreError) as refused:
            c.add_texts("ro-keys", ["a text the read-only database refuses"])
    assert "ro-keys" in names
    assert refused.value.code == "database_unavailable", refused.value
    assert "read-only" in refused.value.message


def test_a_write_a_read_only_database_refuses_outside_translated_is_database_unavailable(
    pg_admin_uri: str,
    template_url: str,
    tmp_path: Path,
    folder: Path,
    admin: psycopg.Connection[tuple[object, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write a read-only database refuses (SQLSTATE 25006: ``ReadOnlySqlTransaction``,
    psycopg's ``InternalError``, not an ``OperationalError``) in a block without
    ``translated()`` left the pool's connection as it was: a raw psycopg error, a 500 and
    a traceback from the API. It is the ``database_unavailable`` that ``translated()``
    makes of it, the breaker left closed (reads still work), as a Store ingest and the
    API's own writes answer: one clear error, problem+json 503. On a database of the
    test's own (from the migrated template); the route stands for any handler that
    writes without ``translated()``."""
    import httpx
    from fastapi import Depends

    from ragstore.api.app import create_app
    from ragstore.api.deps import get_runtime
    from ragstore.store import Store
    from tests.api.conftest import running_server
    from tests.conftest import TEMPLATE, create_database, drop_database

    url = create_database(pg_admin_uri, TEMPLATE)
    try:
        settings = Settings(database_url=url, data_dir=tmp_path / "data", profile="test")
        with Runtime(settings) as rt:
            rt.collection("ro-raw", create=True)
        app = create_app(settings.model_copy(update={"auth": "off"}))

        @app.post("/raw-write")
        def raw_write(rt: Runtime = Depends(get_runtime)) -> dict[str, str]:
            with rt.db.connection() as conn:  # no translated() around it
                conn.execute("CREATE TABLE written_raw (x int)")
            return {"written": "yes"}

        refused = "the database refuses writes: it is read-only"
        with running_server(settings, app) as base, _read_only(admin, _dbname(settings)):
            with Runtime(settings) as rt:
                with pytest.raises(DatabaseUnavailableError) as raw, rt.db.connection() as conn:
                    conn.execute("CREATE TABLE written_raw (x int)")
                assert isinstance(raw.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
                assert str(raw.value).startswith(f"using the database: {refused}"), raw.value
                assert "default_transaction_read_only" in str(raw.value), raw.value
                with rt.db.connection() as conn:  # the breaker stayed closed: reads work
                    assert conn.execute("SELECT count(*) FROM collections").fetchone()
                with pytest.raises(DatabaseUnavailableError, match=refused):
                    Store.from_runtime(rt).ingest("ro-raw", [folder / "p00.md"])
            with httpx.Client(base_url=base, timeout=60) as http:
                answers = [
                    http.post("/raw-write"),
                    http.post("/v1/collections/ro-raw/texts", json={"ids": ["a"], "texts": ["x"]}),
                ]
        for answer in answers:
            assert answer.status_code == 503, (answer.request.url, answer.text)
            assert answer.headers["content-type"] == "application/problem+json", answer.headers
            body = answer.json()
            assert body["code"] == "database_unavailable", body
            assert refused in body["detail"], body
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert _stored(settings, "ro-raw") == set()
    finally:
        drop_database(pg_admin_uri, url)
