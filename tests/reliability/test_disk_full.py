"""A full disk under the embedded server's data directory, the upload staging folder or a
backup's target.

Each test mounts a small tmpfs (root only: skipped otherwise, with the reason), puts the
data directory on it and fills what is left with one file: a write then fails for want of
room. Every failure must be one clear error that says the disk is full and how to fix it
(not a traceback, not a dropped connection), nothing is acknowledged that was not stored,
and once the filler is removed the same call succeeds and ``ragstore db check`` is clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from ragstore.config import Settings
from ragstore.db import embedded, migrations
from ragstore.db.database import Database
from ragstore.errors import DatabaseUnavailableError, RagstoreError
from ragstore.integrity import check
from ragstore.store import Store
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs to fill its disk needs root"
)

TEXTS = [f"# Note {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(400)) for i in range(4)]


@contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (unmounted at the end, whatever happens)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        where.chmod(0o777)  # the embedded server runs as its own user under root
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def _full(disk: Path, leave: int = 0) -> Iterator[None]:
    """Every free byte of ``disk`` but ``leave`` taken by one file, removed at the end."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    with filler.open("wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - leave)
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 128 MB tmpfs holding a migrated embedded server's data directory (its WAL took
    most of 64 MB once every test here had written)."""
    with _tmpfs(tmp_path_factory.mktemp("diskfull") / "mnt", "128m") as mnt:
        data = mnt / "data"
        try:
            db = Database(embedded.start(data))
            migrations.upgrade(db)
            db.close()
            yield mnt
        finally:
            embedded.release(data)
            embedded.stop(data)


@pytest.fixture()
def cli_on(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI, run in this process, on the module's settings."""
    assert settings.database_url is not None
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")


@pytest.fixture(scope="module")
def settings(disk: Path) -> Settings:  # type: ignore[override]
    """The embedded server by its URL (its staging folder on the same disk): a CLI run or
    an app in this process that joined it by its data directory would release it, and this
    process's hold on it, at its end."""
    uri = embedded.start(disk / "data")  # this process holds it already: no second user
    return Settings(data_dir=disk / "data", database_url=uri, profile="test")


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


def _says_disk_full(message: str) -> None:
    assert "disk" in message and "full" in message, message
    assert "free" in message, message  # how to fix it


def test_add_texts_into_a_full_disk_fails_clearly_and_stores_nothing(
    store: Store, disk: Path
) -> None:
    store.create_collection("texts")
    ids = [f"t{i}" for i in range(len(TEXTS))]
    with _full(disk), pytest.raises(DatabaseUnavailableError) as err:
        store.add_texts("texts", TEXTS, ids=ids)
    _says_disk_full(str(err.value))
    assert store.get_texts("texts", ids) == []
    added = store.add_texts("texts", TEXTS, ids=ids)  # room again: the same call succeeds
    assert len(store.get_texts("texts", ids)) == len(TEXTS), added
    assert check(store.runtime, "texts").ok


def test_add_document_into_a_full_disk_fails_clearly(store: Store, disk: Path) -> None:
    """The staging file an added document waits in is on the full disk too."""
    store.create_collection("docs")
    with _full(disk), pytest.raises(RagstoreError) as err:
        store.add_document("docs", "a.md", TEXTS[0])
    _says_disk_full(str(err.value))
    assert store.list_documents("docs")["data"] == []
    assert not list((disk / "data" / "staging").glob("upload-*"))
    assert store.add_document("docs", "a.md", TEXTS[0])["status"] == "added"
    assert check(store.runtime, "docs").ok


@pytest.mark.parametrize("bulk", ["incremental", "bulk"])
def test_ingest_into_a_full_disk_fails_clearly_then_succeeds(
    bulk: str,
    store: Store,
    disk: Path,
    tmp_path: Path,
    cli_on: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, text in enumerate(TEXTS):
        (folder / f"n{i}.md").write_text(text)
    coll = f"ingest-{bulk}"
    store.create_collection(coll)
    monkeypatch.setenv("RAGSTORE_BULK_LOAD_BYTES", "1" if bulk == "bulk" else "0")
    capfd.readouterr()
    with _full(disk, leave=128 * 1024):  # room to connect, not to store the files
        assert run_cli("ingest", "-c", coll, str(folder)) != 0
    out = capfd.readouterr().err
    assert "Traceback" not in out, out
    _says_disk_full(out)
    if bulk == "incremental":  # the file that met the error is named; the rest not tried
        assert "n0.md" in out, out
        assert "not attempted" in out, out
    assert store.list_documents(coll)["data"] == []
    assert run_cli("ingest", "-c", coll, str(folder)) == 0
    assert len(store.list_documents(coll)["data"]) == len(TEXTS)
    assert check(store.runtime, coll).ok


def test_http_upload_into_a_full_disk_answers_a_clear_problem(
    store: Store, disk: Path, settings: Settings
) -> None:
    store.create_collection("http")
    with running_server(with_(settings, auth="off")) as url, httpx.Client(base_url=url) as h:
        files = [("files", ("a.md", TEXTS[0].encode()))]
        text = {"name": "b.md", "text": TEXTS[1]}
        texts = {"texts": TEXTS[:2], "ids": ["x1", "x2"]}
        with _full(disk):
            up = h.post("/v1/collections/http/documents/upload", files=files, timeout=60)
            js = h.post("/v1/collections/http/documents", json=text, timeout=60)
            tx = h.post("/v1/collections/http/texts", json=texts, timeout=60)
        for r in (up, js):  # their staging files are on that disk: it fails first
            assert (r.status_code, r.json()["code"]) == (507, "disk_full"), r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            _says_disk_full(r.json()["detail"])
        # the database's own disk full: not "the database closed this request's connection"
        assert (tx.status_code, tx.json()["code"]) == (503, "database_unavailable"), tx.text
        _says_disk_full(tx.json()["detail"])
        assert h.get("/v1/collections/http/documents").json()["count"] == 0
        assert h.post("/v1/collections/http/documents/upload", files=files).status_code == 201
        assert h.post("/v1/collections/http/documents", json=text).status_code == 201
        assert h.post("/v1/collections/http/texts", json=texts).status_code == 201
        assert h.get("/v1/collections/http/documents").json()["count"] == 4
    assert check(store.runtime, "http").ok


def test_a_full_staging_disk_with_room_for_the_database(
    store: Store, disk: Path, settings: Settings, tmp_path: Path
) -> None:
    """The staging folder full (its own small disk) while the database has room."""
    staging = settings.data_dir / "staging"
    staging.mkdir(exist_ok=True)
    with (
        _tmpfs(staging, "64k"),
        _full(staging),
        running_server(with_(settings, auth="off")) as url,
        httpx.Client(base_url=url) as h,
    ):
        files = [("files", ("s.md", TEXTS[2].encode()))]
        r = h.post("/v1/collections/staged/documents/upload", files=files, timeout=60)
        assert (r.status_code, r.json()["code"]) == (507, "disk_full"), r.text
        _says_disk_full(r.json()["detail"])
        assert "staging folder" in r.json()["detail"]
        assert not list(staging.glob("upload-*"))


def test_backup_into_a_full_disk_fails_and_leaves_no_backup(
    store: Store, tmp_path: Path, cli_on: None
) -> None:
    with _tmpfs(tmp_path / "target", "256k") as target, _full(target):
        assert run_cli("backup", str(target / "b.dump")) == 74
        assert sorted(p.name for p in target.iterdir()) == ["filler"]


def test_wal_that_cannot_be_written_panics_the_server_which_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new WAL segment with no room for it: PostgreSQL PANICs and will not start again
    while the disk is full. Calls fail at once (no hang) saying the disk is full; once
    space is freed the next call starts the embedded server again, which recovers every
    acknowledged write."""
    import psycopg

    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    with _tmpfs(tmp_path / "mnt", "64m") as mnt:
        data = mnt / "data"
        try:
            uri = embedded.start(data)
            migrations.upgrade(Database(uri))
            with Store(settings=Settings(data_dir=data, profile="test")) as s:
                s.add_texts("w", ["acknowledged before the disk filled"], ids=["a1"])
                with _full(mnt, leave=512 * 1024):
                    # switch WAL segments until one must be created: no room for it
                    with (
                        pytest.raises(psycopg.Error),
                        psycopg.connect(uri, autocommit=True) as admin,
                    ):
                        admin.execute("CREATE TABLE t (x int)")
                        for _ in range(8):
                            admin.execute("INSERT INTO t VALUES (1)")
                            admin.execute("SELECT pg_switch_wal()")
                    for i in range(3):  # the first: the connection lost; then the probe's
                        t0 = time.monotonic()
                        with pytest.raises(DatabaseUnavailableError) as down:
                            s.add_texts("w", [f"never stored {i}"], ids=[f"b{i}"])
                        assert time.monotonic() - t0 < 10  # failed, did not hang
                        time.sleep(1.5)
                    # the embedded server would not start again: its reason, not "down"
                    _says_disk_full(str(down.value))
                    _says_disk_full(down.value.public)
                deadline = 60.0
                while True:  # the breaker's back-off: at most 5 s between probes
                    try:
                        got = s.get_texts("w", ["a1", "b0", "b1", "b2"])
                        break
                    except DatabaseUnavailableError:
                        deadline -= 1
                        assert deadline > 0, "the server did not come back"
                        time.sleep(1)
                assert [t["id"] for t in got] == ["a1"]
                s.add_texts("w", ["stored after"], ids=["c1"])
                assert check(s.runtime, "w").ok
        finally:
            embedded.release(data)
            embedded.stop(data)


def test_a_full_temporary_folder_while_an_upload_is_read(
    store: Store, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette spools an upload's file over 1 MB to the temporary folder: full, FastAPI
    said "There was an error parsing the body", answered 422 invalid_input (the caller's
    body blamed, so not retried) for the server's own disk."""
    import tempfile

    with _tmpfs(tmp_path / "tmp", "64k") as tmp, _full(tmp):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        with running_server(with_(settings, auth="off")) as url:
            big = ("# Big\n\n" + "word " * 300_000).encode()  # 1.5 MB: spooled to disk
            r = httpx.post(
                f"{url}/v1/collections/spooled/documents/upload",
                files=[("files", ("big.md", big))],
                timeout=60,
            )
    assert (r.status_code, r.json()["code"]) == (507, "disk_full"), r.text
    _says_disk_full(r.json()["detail"])
    assert "TMPDIR" in r.json()["detail"]


MANY = [f"# Page {i}\n\n" + " ".join(f"term{i}y{j}" for j in range(300)) for i in range(12)]


def _corpus(where: Path) -> Path:
    where.mkdir()
    for i, text in enumerate(MANY):
        (where / f"p{i:02}.md").write_text(text)
    return where


def test_an_ingest_stops_at_a_full_disk_without_embedding_the_rest(
    store: Store,
    disk: Path,
    tmp_path: Path,
    cli_on: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Every file after the first that met the full disk used to be parsed, embedded and
    failed in turn, each on a line of its own; the ingest now stops there: one failure,
    the rest counted as not attempted, the error's own exit status, and the same command
    run again resumes."""
    folder = _corpus(tmp_path / "corpus")
    store.create_collection("stops")
    monkeypatch.setenv("RAGSTORE_BULK_LOAD_BYTES", "0")
    monkeypatch.setenv("RAGSTORE_INGEST_BATCH_CHUNKS", "1")  # a round per file
    capfd.readouterr()
    with _full(disk, leave=128 * 1024):
        status = run_cli("ingest", "--json", "-c", "stops", str(folder))
    out, err = capfd.readouterr()
    assert status == 69, err  # database_unavailable's, as through a server
    assert "Traceback" not in err, err
    _says_disk_full(err)
    report = json.loads(out)
    statuses = [o["status"] for o in report["outcomes"]]
    assert statuses.count("failed") <= 1, err
    unattempted = statuses.count("not_attempted")
    assert unattempted >= len(MANY) // 2, statuses
    assert statuses.count("added") + statuses.count("failed") + unattempted == len(MANY)
    assert f"{unattempted} not attempted" in err, err
    assert "run the same command again" in err, err
    assert err.count("failed [") <= 1, err  # not one line per file
    stored = {d["name"] for d in store.list_documents("stops")["data"]}
    added = {Path(o["source"]).name for o in report["outcomes"] if o["status"] == "added"}
    assert {Path(s).name for s in stored} == added  # nothing acknowledged that was not stored
    # the files after the stop were not embedded: at most the round under way besides
    assert report["embedded"] <= 8 * (len(added) + 3), report["embedded"]

    assert run_cli("ingest", "--json", "-c", "stops", str(folder)) == 0  # resumes
    again = json.loads(capfd.readouterr().out)
    counts = [o["status"] for o in again["outcomes"]]
    assert counts.count("unchanged") == len(added)
    assert counts.count("added") == len(MANY) - len(added)
    assert check(store.runtime, "stops").ok


def test_store_ingest_into_a_full_disk_names_the_files_not_attempted(
    store: Store, disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _corpus(tmp_path / "corpus")
    (folder / "000.md").write_bytes(b"\x00\x01binary" * 64)  # fails alone, first
    store.create_collection("stops-store")
    with _full(disk, leave=128 * 1024), pytest.raises(DatabaseUnavailableError) as err:
        store.ingest("stops-store", folder)  # the error that stopped it, not the binary's
    members = err.value.problem_members
    stored = members["stored"]
    assert members["not_attempted"], members
    assert len(stored) + len(members["failed"]) == len(MANY) + 1
    (folder / "000.md").unlink()
    assert "calling it again resumes" in str(err.value)
    assert len(store.list_documents("stops-store")["data"]) == len(stored)
    assert len(store.ingest("stops-store", folder)["data"]) == len(MANY)


def test_a_full_database_disk_does_not_fail_reads_fast(
    store: Store, disk: Path, tmp_path: Path
) -> None:
    """A write refused for the full disk lost no connection, yet it opened the connection
    breaker whenever a fresh connection could not be had just then (a new backend on a full
    disk cannot always start): every read, which the pooled connections still served,
    failed fast with "the database is down" for a second or more, and the ingest's own
    error was replaced by that one."""
    folder = _corpus(tmp_path / "corpus")
    store.create_collection("reads-on")
    # a backend starting without the relation cache's init files writes them first: on the
    # full disk it cannot, so no fresh connection can be had (a catalog change removes them)
    for init in (disk / "data" / "pg").glob("**/pg_internal.init"):
        init.unlink()
    with _full(disk, leave=1024 * 1024):
        with pytest.raises(DatabaseUnavailableError) as err:
            store.ingest("reads-on", folder)
        assert "failing fast" not in str(err.value), err.value
        _says_disk_full(str(err.value))
        assert store.runtime.db.breaker.failures == 0
        assert "reads-on" in [c["name"] for c in store.list_collections()]
    assert len(store.ingest("reads-on", folder)["data"]) == len(MANY)
    assert check(store.runtime, "reads-on").ok


@pytest.fixture()
def roomy_staging(settings: Settings) -> Iterator[None]:
    """The upload staging folder on a disk of its own with room: the database's disk fills
    while the uploads still stage."""
    staging = settings.data_dir / "staging"
    staging.mkdir(exist_ok=True)
    with _tmpfs(staging, "16m"):
        yield


def _answered(h: httpx.Client, path: str) -> dict[str, Any]:
    """GET ``path`` once the breaker the full disk may have opened lets it through."""
    deadline = time.monotonic() + 30
    while True:
        r = h.get(path)
        if r.status_code != 503 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return cast(dict[str, Any], r.json())
        time.sleep(0.5)


def test_an_upload_into_a_full_database_stops_and_says_what_was_not_attempted(
    store: Store, disk: Path, settings: Settings, roomy_staging: None
) -> None:
    store.create_collection("stops-http")
    files = [("files", (f"u{i:02}.md", text.encode())) for i, text in enumerate(MANY)]
    with running_server(with_(settings, auth="off")) as url, httpx.Client(base_url=url) as h:
        with _full(disk, leave=128 * 1024):
            r = h.post("/v1/collections/stops-http/documents/upload", files=files, timeout=120)
        assert (r.status_code, r.json()["code"]) == (503, "database_unavailable"), r.text
        body = r.json()
        stored = [d["name"] for d in body["stored"]]
        failed = [f["name"] for f in body["failed"]]
        assert body["not_attempted"] and set(body["not_attempted"]) <= set(failed), body
        assert len(failed) - len(body["not_attempted"]) <= 1, body
        assert sorted(stored + failed) == [f"u{i:02}.md" for i in range(len(MANY))]
        for f in body["failed"]:  # the database's address is the server log's only
            assert str(disk) not in f["detail"], f
        listed = _answered(h, "/v1/collections/stops-http/documents")["data"]
        assert sorted(d["name"] for d in listed) == sorted(stored)
        again = h.post("/v1/collections/stops-http/documents/upload", files=files, timeout=120)
        assert again.status_code == 201, again.text
    assert check(store.runtime, "stops-http").ok


def test_ingest_through_a_server_whose_database_is_full_stops(
    store: Store,
    disk: Path,
    settings: Settings,
    roomy_staging: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    folder = _corpus(tmp_path / "corpus")
    store.create_collection("stops-remote")
    # the CLI's client sends the refused upload once: by default it sends it three more
    # times, each after the 503's Retry-After (5 s), and then stops the same way; those
    # retries are tests/api/test_client_retries.py's to check. (A patched
    # ragstore.client.Client, as this test had, is not the CLI's client since it keeps
    # positions: run alone, the patch broke the subclass at its import.)
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "0")
    with running_server(with_(settings, auth="off")) as url:
        monkeypatch.setenv("RAGSTORE_URL", url)
        monkeypatch.setenv("RAGSTORE_PROFILE", "test")
        capfd.readouterr()
        with _full(disk, leave=128 * 1024):
            status = run_cli("ingest", "-c", "stops-remote", str(folder))
        err = capfd.readouterr().err
        assert status == 69, err
        assert "Traceback" not in err, err
        assert "not attempted" in err and "run the same command again" in err, err
        assert err.count("failed [") <= 1, err
        with httpx.Client(base_url=url) as h:
            _answered(h, "/v1/collections/stops-remote/documents")
        assert run_cli("ingest", "-c", "stops-remote", str(folder)) == 0
    assert len(store.list_documents("stops-remote")["data"]) == len(MANY)
