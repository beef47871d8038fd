"""``ragstore jobs list`` and ``jobs show``: the background ingest jobs, read from the
database and through a real server on loopback (``RAGSTORE_URL``), printing the same.

No worker runs here: a job stays ``queued``, and one whose collection is deleted fails
(``collection_not_found``), which gives a listing both statuses and an error code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ragstore import Client
from ragstore.config import Settings
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="off")) as url:
        yield url


@pytest.fixture(scope="module")
def jobs(server: str) -> dict[str, int]:
    """Two jobs queued for ``jobs-kept`` and one failed with its collection ``jobs-gone``;
    their ids by name."""
    with Client(server) as api:
        api.create_collection("jobs-kept")
        api.create_collection("jobs-gone")
        ids = {
            "kept1": api.add_document("jobs-kept", "a.md", "# A\n\nfirst", background=True)["id"],
            "gone": api.add_document("jobs-gone", "g.md", "# G\n\ngone", background=True)["id"],
            "kept2": api.add_document("jobs-kept", "b.md", "# B\n\nsecond", background=True)["id"],
        }
        api.delete_collection("jobs-gone")  # fails its queued job
    return {k: int(v) for k, v in ids.items()}


@pytest.fixture()
def local(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGSTORE_URL", raising=False)
    monkeypatch.delenv("RAGSTORE_API_KEY", raising=False)


def _listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert run_cli("jobs", "list", "--json", *args) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def _table_ids(out: str) -> list[int]:
    """The ids of a printed jobs table, its first column under the header."""
    return [int(line.split()[0]) for line in out.splitlines()[1:]]


def test_jobs_list_filters_and_shows_status_progress_and_error_code(
    jobs: dict[str, int], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = _listed(capsys)
    assert [r["id"] for r in everything] == [jobs["kept2"], jobs["gone"], jobs["kept1"]]
    failed = _listed(capsys, "--status", "failed")
    assert [r["id"] for r in failed] == [jobs["gone"]]
    assert failed[0]["errors"][0]["code"] == "collection_not_found"  # type: ignore[index]
    assert [r["id"] for r in _listed(capsys, "-c", "jobs-kept")] == [jobs["kept2"], jobs["kept1"]]
    assert [r["id"] for r in _listed(capsys, "-s", "queued", "-c", "jobs-kept")] == [
        jobs["kept2"],
        jobs["kept1"],
    ]

    assert run_cli("jobs", "list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "collection",
        "status",
        "attempts",
        "progress",
        "age",
        "error",
    ]
    gone = next(line.split() for line in lines if line.split()[0] == str(jobs["gone"]))
    assert gone[:5] == [str(jobs["gone"]), "jobs-gone", "failed", "0", "0/1"]
    assert gone[-1] == "collection_not_found"
    kept = next(line.split() for line in lines if line.split()[0] == str(jobs["kept1"]))
    assert kept[:5] == [str(jobs["kept1"]), "jobs-kept", "queued", "0", "0/1"]
    assert len(kept) == 6  # no error cell

    assert run_cli("jobs", "list", "--status", "succeeded", "-c", "jobs-kept") == 0
    assert capsys.readouterr().out == "no jobs succeeded of collection 'jobs-kept'\n"


def test_jobs_list_pages_with_a_hint_that_keeps_the_filters(
    jobs: dict[str, int], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("jobs", "list", "-c", "jobs-kept", "--limit", "1") == 0
    out, err = capsys.readouterr()
    assert _table_ids(out) == [jobs["kept2"]]
    hint = f"ragstore jobs list -c jobs-kept --limit 1 --after {jobs['kept2']}"
    assert err == f"more: {hint}\n"
    assert [r["id"] for r in _listed(capsys, *hint.split()[3:])] == [jobs["kept1"]]
    assert run_cli(*hint.split()[1:]) == 0
    out, err = capsys.readouterr()
    assert _table_ids(out) == [jobs["kept1"]] and err == ""  # the last page: no hint


def test_jobs_print_the_same_here_and_through_the_server(
    jobs: dict[str, int],
    server: str,
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Read from the database (the service the route answers from) or asked of the
    server, a job is the API's answer, printed alike."""
    gone = str(jobs["gone"])
    commands = [
        ["jobs", "list", "--json"],
        ["jobs", "list", "--json", "--status", "failed", "-c", "jobs-gone"],
        ["jobs", "list", "--json", "--limit", "1", "--after", str(jobs["kept2"])],
        ["jobs", "show", gone, "--json"],
        ["jobs", "show", gone],
    ]
    here = []
    for args in commands:
        assert run_cli(*args) == 0, args
        here.append(capsys.readouterr())
    monkeypatch.setenv("RAGSTORE_URL", server)
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    for args, printed in zip(commands, here, strict=True):
        assert run_cli(*args) == 0, args
        assert capsys.readouterr() == printed, args

    shown = json.loads(here[3].out)
    assert shown["id"] == jobs["gone"] and shown["status"] == "failed"
    assert shown["errors"][0]["code"] == "collection_not_found"
    assert shown["collection"] == "jobs-gone" and shown["total_documents"] == 1
    text = here[4].out
    assert "status  failed" in text and "errors  1" in text
    assert "  (job): collection_not_found: collection 'jobs-gone' was deleted" in text
    assert "finished_at  None" not in text  # a failed job has finished


@pytest.mark.parametrize("through_server", [False, True])
def test_an_unknown_job_or_a_bad_filter_is_one_line(
    through_server: bool,
    jobs: dict[str, int],
    server: str,
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if through_server:
        monkeypatch.setenv("RAGSTORE_URL", server)
    missing = str(max(jobs.values()) + 1000)
    assert run_cli("jobs", "show", missing) == 66  # as an unknown document or collection
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error[job_not_found]: job {missing} does not exist; `ragstore jobs list` lists the jobs\n"
    )
    for args, where, why in (
        (["jobs", "list", "--status", "done"], "'--status'", "'done' is no job status"),
        (["jobs", "list", "-c", "no/such"], "'--collection'", "invalid collection name"),
        (["jobs", "list", "--limit", "501"], "'--limit'", ""),
        (["jobs", "show", "0"], "'ID'", ""),
        (["jobs", "show", "x1"], "'ID'", ""),
    ):
        assert run_cli(*args) == 64, args
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1, (args, err)
        assert err.startswith(f"error[usage]: Invalid value for {where}"), (args, err)
        assert why in err, (args, err)


def test_a_database_without_the_schema_says_to_upgrade_it(
    empty_database_url: str,
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No jobs table (a database ``ragstore db upgrade`` never ran on): the schema check
    every command makes refuses it, naming the way out, rather than a missing table's
    database error."""
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    for args in (["jobs", "list"], ["jobs", "show", "1"]):
        code = run_cli(*args)
        out, err = capsys.readouterr()
        assert code == 69 and out == "", (args, code, out, err)
        assert "ragstore db upgrade" in err and "ingest_jobs" not in err, (args, err)


def test_jobs_show_prints_a_missing_time_as_a_dash(
    jobs: dict[str, int], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queued job has not started: ``started_at None`` printed Python's name for it."""
    assert run_cli("jobs", "show", str(jobs["kept1"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "None" not in " ".join(lines)
    assert [line.split() for line in lines if line.split()[0] == "started_at"] == [
        ["started_at", "-"]
    ]
