"""An import that rebuilds a collection's space, killed outright (SIGKILL) between its two
commits: its staged vectors committed on their own connection, its transaction not yet.

The collection is as it was, ``db check`` names the staged table left behind and
``--repair`` drops it, and the same import run again completes. (Killed mid-COPY, and
SIGTERM, are proven in ``test_rollback``.)
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_cli
from tests.imports.helpers import collection_state, vectors, write_jsonl
from tests.killing import killed_when

DIM = 16


def _import(source: str) -> list[str]:
    return [
        "import",
        source,
        "-c",
        "rebuilt",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
        "--no-backup",
    ]


STAGED = "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ragstore_load_%'"


def _staged(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(STAGED).fetchone()
    return bool(row and row[0])


def test_an_import_killed_between_its_commits_leaves_the_collection_and_runs_again(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    seed = write_jsonl(tmp_path / "s.jsonl", [f"s{i}" for i in range(100)], vectors(100, DIM))
    assert run_cli(*_import(str(seed))) == 0
    before = collection_state(url, "rebuilt")
    n = 3000
    src = write_jsonl(tmp_path / "big.jsonl", [f"b{i}" for i in range(n)], vectors(n, DIM, seed=21))
    killed_when(
        _import(str(src)),
        {**os.environ, **cli_env},
        url,
        STAGED,  # its staged vectors committed, its own transaction not yet
        tmp_path / "import.log",
    )
    after = collection_state(url, "rebuilt")
    assert after["staged"] == (True,), "killed between its two commits"
    assert {**after, "staged": before["staged"]} == before
    capsys.readouterr()
    status = run_cli("db", "check")
    out = capsys.readouterr().out
    # killed after the staged commit: the leftover is named, and --repair drops it
    assert status == 1 and "ragstore_load_" in out, out
    assert run_cli("db", "check", "--repair") == 0
    assert not _staged(url)
    assert run_cli(*_import(str(src))) == 0
    assert len(collection_state(url, "rebuilt")["docs"]) == 100 + n
    capsys.readouterr()
    assert run_cli("db", "check") == 0, capsys.readouterr().out
