"""``ragstore import`` behind a stuck write of its collection: it waits for the
collection's locks at most ``RAGSTORE_BULK_LOAD_WAIT_S``, then fails retryable with the
import rolled back; it used to wait for good, saying nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ragstore.db import documents
from tests.behind import run_behind
from tests.conftest import run_cli
from tests.imports.helpers import collection_state, vectors, write_jsonl

DIM = 16


def _import(source: Path, collection: str) -> list[str]:
    return [
        "import",
        str(source),
        "-c",
        collection,
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
        "--no-backup",
    ]


@pytest.mark.parametrize("rows", [False, True], ids=["write-locks", "and-rows-written"])
def test_an_import_behind_a_stuck_bulk_load_fails_by_the_deadline(
    rows: bool,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stuck load holds the collection's write locks (``begin_bulk``), where the
    import waits for them; with ``rows``, also the collection's row as the rows it wrote
    hold it (FOR KEY SHARE), where the import waits first, for the row itself."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    name = f"lockedout_{int(rows)}"
    seed = write_jsonl(tmp_path / "seed.jsonl", [f"s{i}" for i in range(20)], vectors(20, DIM))
    assert run_cli(*_import(seed, name)) == 0
    before = collection_state(url, name)
    more = write_jsonl(tmp_path / "more.jsonl", ["m1", "m2"], vectors(2, DIM, seed=3))
    monkeypatch.setenv("RAGSTORE_BULK_LOAD_WAIT_S", "0.5")
    with psycopg.connect(url) as stuck:  # a bulk load of the collection that took its locks
        (cid,) = stuck.execute(
            "SELECT id FROM collections WHERE name = %s" + (" FOR KEY SHARE" if rows else ""),
            (name,),
        ).fetchone() or (None,)
        assert isinstance(cid, int)
        documents.begin_bulk(stuck, cid)
        capsys.readouterr()
        # the stuck load ends on release: the import, if still waiting, goes on
        stuck_for_good, statuses, _ = run_behind(
            lambda: run_cli(*_import(more, name)), stuck.rollback
        )
    assert not stuck_for_good, "the import waited past its deadline"
    err = capsys.readouterr().err
    assert statuses == [69], err
    assert (
        f"error[database_unavailable]: an import into collection '{name}' waited 0.5s for "
        "its write locks: another write of that collection holds them; the import was rolled "
        "back, nothing was written: retry once it ends, or raise RAGSTORE_BULK_LOAD_WAIT_S"
    ) in err
    assert collection_state(url, name) == before
    assert run_cli(*_import(more, name)) == 0  # once the stuck load ended
    assert len(collection_state(url, name)["docs"]) == 22
