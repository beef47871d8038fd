"""A failed import rolls back: the collection is exactly as it was (or never existed).

Two failures are injected: a verification that falls short (ef_search 1 returns one row,
so recall@10 cannot reach 0.95) and the importing process killed with SIGKILL while its
COPY is running on the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests.conftest import run_cli
from tests.imports.helpers import collection_state, vectors, write_jsonl, write_npy_csv
from tests.sigterm import backends_where, sigterm_when

DIM = 16


def _import(source: str, collection: str, *extra: str) -> list[str]:
    """``ragstore import`` arguments of the legacy test model into ``collection``."""
    return [
        "import",
        source,
        "-c",
        collection,
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
        *extra,
    ]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, settings: object) -> str:
    """A collection 'keep' that already holds 100 imported records."""
    src = write_jsonl(
        tmp_path_factory.mktemp("seed") / "seed.jsonl",
        [f"old{i}" for i in range(100)],
        vectors(100, DIM, seed=9),
    )
    return str(src)


def test_failed_verification_leaves_an_existing_collection_as_it_was(
    cli_env: dict[str, str], seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    assert run_cli(*_import(seeded, "keep", "--no-backup")) == 0
    before = collection_state(url, "keep")
    assert len(before["docs"]) == 100
    src = write_jsonl(
        tmp_path / "new.jsonl", [f"new{i}" for i in range(300)], vectors(300, DIM, seed=10)
    )
    capsys.readouterr()
    assert run_cli(*_import(str(src), "keep", "--no-backup", "--ef-search", "1")) == 70
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress lines
    assert err.startswith(
        "error[import_verification_failed]: verification of the import "
        "into 'keep' failed: recall@10 0."
    )
    assert "the import was rolled back and the collection is as it was" in err
    assert collection_state(url, "keep") == before


def test_failed_verification_of_a_new_collection_leaves_no_collection(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    before = collection_state(url, "never")
    src = write_jsonl(tmp_path / "a.jsonl", [f"a{i}" for i in range(200)], vectors(200, DIM))
    assert run_cli(*_import(str(src), "never", "--no-backup", "--ef-search", "1")) == 70
    after = collection_state(url, "never")
    assert after == before and after["exists"] is False
    with psycopg.connect(url) as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename ~ '^emb_[0-9]+$'"
            " AND tablename NOT IN (SELECT table_name FROM"
            " embedding_spaces)"
        ).fetchone()
    assert leftovers == (0,)


def test_import_killed_mid_copy_leaves_the_collection_as_it_was(
    cli_env: dict[str, str], seeded: str, tmp_path: Path
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    if collection_state(url, "keep")["exists"] is False:
        assert run_cli(*_import(seeded, "keep", "--no-backup")) == 0
    before = collection_state(url, "keep")
    n = 60_000
    src = write_npy_csv(
        tmp_path / "big.npy", [f"big{i}" for i in range(n)], vectors(n, DIM, seed=11)
    )
    app = f"ragstore-crash-{os.getpid()}"
    env = {**os.environ, **cli_env, "RAGSTORE_DATABASE_URL": f"{url}&application_name={app}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            *_import(str(src), "keep", "--no-backup"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = None
    with psycopg.connect(url, autocommit=True) as watch:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            row = watch.execute(
                "SELECT query FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'active' AND query LIKE 'COPY %%'",
                (app,),
            ).fetchone()
            if row:
                seen = str(row[0])
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=30)
        assert seen is not None, "the import never reached its COPY"
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 60  # the server notices the dead client, rolls back
        while watch.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert collection_state(url, "keep") == before
    # and nothing is stuck: the same import, run again to the end, succeeds
    small = write_jsonl(tmp_path / "after.jsonl", ["after1", "after2"], vectors(2, DIM, seed=12))
    assert run_cli(*_import(str(small), "keep", "--no-backup")) == 0
    assert len(collection_state(url, "keep")["docs"]) == len(before["docs"]) + 2


def test_import_takes_a_backup_first(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", ["b1", "b2", "b3"], vectors(3, DIM))
    capsys.readouterr()
    assert run_cli(*_import(str(src), "backed", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    archive = Path(report["backup"]["path"])
    assert archive.parent == Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    assert archive.stat().st_size == report["backup"]["bytes"] > 0
    side = json.loads(Path(f"{archive}.json").read_text())
    assert side["reason"] == "import" and side["sha256"] == report["backup"]["sha256"]
    assert "backed" not in json.dumps(side["counts"])  # taken before the collection existed
    assert np.isclose(report["verification"]["recall_at_10"], 1.0)


def test_sigterm_mid_copy_rolls_the_import_back_and_says_so(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM while the COPY runs: the one transaction rolls back, the command says that
    nothing was written and exits 143 (it died silently, killed by the signal)."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    n = 20_000
    src = write_npy_csv(tmp_path / "t.npy", [f"t{i}" for i in range(n)], vectors(n, DIM, seed=5))

    def copying() -> bool:
        return (
            backends_where(
                url, "datname = current_database() AND state = 'active' AND query LIKE 'COPY %%'"
            )
            > 0
        )

    capsys.readouterr()
    with sigterm_when(copying) as sent:
        status = run_cli(*_import(str(src), "term", "--no-backup"))
    err = capsys.readouterr().err
    assert sent == [True] and status == 143, err
    assert "interrupted by SIGTERM: the import was rolled back, nothing was written" in err
    assert collection_state(url, "term")["exists"] is False


def test_sigterm_after_the_commit_says_the_import_is_stored(
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM once the import committed (here: as its connections close): the command
    said "the import was rolled back, nothing was written; run the same command again"
    of records that were stored, and the run again was refused for existing ids."""
    from ragstore.runtime import Runtime

    close = Runtime.close

    def close_then_sigterm(self: Runtime) -> None:
        close(self)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the import's handler raises here

    monkeypatch.setattr(Runtime, "close", close_then_sigterm)
    src = write_jsonl(tmp_path / "a.jsonl", ["s1", "s2", "s3"], vectors(3, DIM, seed=13))
    capsys.readouterr()
    harmless = signal.signal(signal.SIGTERM, lambda *_: None)  # should the import not catch it
    try:
        status = run_cli(*_import(str(src), "after-commit", "--no-backup"))
    finally:
        signal.signal(signal.SIGTERM, harmless)
    err = capsys.readouterr().err
    assert status == 143, err
    assert (
        "interrupted by SIGTERM: the import had committed: 3 records are in 'after-commit', "
        "verified" in err
    )
    assert "rolled back" not in err
    state = collection_state(cli_env["RAGSTORE_DATABASE_URL"], "after-commit")
    assert [d[0] for d in state["docs"]] == ["s1", "s2", "s3"]


def test_the_database_lost_mid_copy_says_the_import_was_rolled_back(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The import's connection lost while its COPY runs (a restart, a terminated
    backend): the command said only that the database could not be reached, not whether
    half of the import was stored. Nothing was, and the command now says so."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    n = 20_000
    src = write_npy_csv(tmp_path / "l.npy", [f"l{i}" for i in range(n)], vectors(n, DIM, seed=6))
    terminated: list[bool] = []

    def terminate_the_copy() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not terminated:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    " AND state = 'active' AND query LIKE 'COPY %%'"
                ).fetchall()
                terminated.extend(bool(r[0]) for r in rows)
                time.sleep(0.01)

    killer = threading.Thread(target=terminate_the_copy, daemon=True)
    killer.start()
    capsys.readouterr()
    status = run_cli(*_import(str(src), "lost", "--no-backup"))
    killer.join(timeout=130)
    err = capsys.readouterr().err
    assert terminated == [True] and status == 69, err
    assert "error[database_unavailable]: importing into collection 'lost'" in err
    assert "the import was rolled back, nothing was written" in err
    assert collection_state(url, "lost")["exists"] is False
    small = write_jsonl(tmp_path / "again.jsonl", ["g1", "g2"], vectors(2, DIM, seed=7))
    assert run_cli(*_import(str(small), "lost", "--no-backup")) == 0
