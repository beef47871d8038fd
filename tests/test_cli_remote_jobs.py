"""``ragstore ingest`` through a real server on loopback (``RAGSTORE_URL``) when a file
goes to a background job (over RAGSTORE_BACKGROUND_INGEST_BYTES) that does not finish
while the command waits: no worker runs here, so the job stays ``queued``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore import Client
from ragstore.cli import remote
from ragstore.config import Settings
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="off")) as url:
        yield url


def _folder(tmp_path: Path, settings: Settings) -> Path:
    """A folder of one small file (stored during its request) and one over the server's
    background limit (queued as a job)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Tea\n\nA small note about green tea.\n")
    words = " ".join(f"word{i % 997}" for i in range(settings.background_ingest_bytes // 4))
    (folder / "z.md").write_text(f"# Big\n\n{words}\n")
    assert (folder / "z.md").stat().st_size > settings.background_ingest_bytes
    return folder


@pytest.mark.parametrize("as_json", [False, True])
def test_a_job_not_finished_in_time_is_said_queued_with_what_was_stored(
    as_json: bool,
    server: str,
    settings: Settings,
    tmp_path: Path,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # it ended in a TimeoutError traceback, the stored file and the queued one unsaid
    monkeypatch.setenv("RAGSTORE_URL", server)
    monkeypatch.setattr(remote, "JOB_TIMEOUT_S", 0.2)
    collection = f"queued-{int(as_json)}"
    folder = _folder(tmp_path, settings)
    args = ["ingest", str(folder), "--collection", collection] + (["--json"] if as_json else [])

    assert run_cli(*args) == 1  # not known stored: not the 0 of a finished ingest

    out, err = capsys.readouterr()
    assert "Traceback" not in err and "TimeoutError" not in err
    with Client(server) as api:
        (job,) = api.list_jobs(collection=collection)["data"]
        stored = api.list_documents(collection)["data"]
    assert job["status"] == "queued" and job["total_documents"] == 1
    assert [d["name"] for d in stored] == ["notes/a.md"]
    summary = " ".join(err.split())
    assert "1 added," in summary and "0 failed" in summary
    assert f"1 queued in job {job['id']} not seen to finish" in summary
    assert f"ragstore jobs show {job['id']}" in summary
    if as_json:
        printed = json.loads(out)
        assert printed["counts"] == {"added": 1, "queued": 1}
        assert printed["unfinished_jobs"] == [job["id"]]
