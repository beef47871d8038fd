"""The CLI end to end (in-process): ingest, search, and one clear line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_ingest_then_search_json(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.md").write_text("# Cats\n\nCats sleep for most of the day.\n")
    assert run_cli("ingest", str(tmp_path), "-c", "cli") == 0
    capsys.readouterr()
    assert run_cli("search", "how long do cats sleep", "-c", "cli", "--json") == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["text"] == "Cats sleep for most of the day."
    assert hits[0]["section_path"] == ["Cats"]


def test_the_ingest_summary_counts_the_headings_it_did_not_embed(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "3 chunks stored, 1 embedded, 0 reused" left two chunks unexplained: the headings,
    which have no vector. The line says so, as ``db check`` does."""
    (tmp_path / "a.md").write_text("# Cats\n\n## Sleep\n\nCats sleep for most of the day.\n")
    assert run_cli("ingest", str(tmp_path), "-c", "cli-headings") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "3 chunks stored (2 headings, not embedded), 1 embedded, 0 reused" in err, err


def test_missing_path_is_one_line_and_nonzero(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # path_not_found's own status, every path given missing (TROUBLESHOOTING.md)
    assert run_cli("ingest", str(tmp_path / "nope.md")) == 66
    err = capsys.readouterr().err
    assert "[path_not_found]" in err and "nope.md: no such file or directory" in err


def test_unknown_collection(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("search", "anything", "-c", "does-not-exist") == 66
    err = capsys.readouterr().err.strip()
    assert err.startswith("error[collection_not_found]: collection 'does-not-exist' does not exist")
    assert len(err.splitlines()) == 1


def test_unreachable_external_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://u:secret@127.0.0.1:9/nodb")
    monkeypatch.setenv("RAGSTORE_CONNECT_TIMEOUT_S", "2")
    assert run_cli("search", "anything") == 69
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error[database_unavailable]: connecting to postgresql://u@127.0.0.1:9/nodb"
    )
    assert "secret" not in err
    assert len(err.splitlines()) == 1


def test_bad_setting_names_variable_value_and_accepted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_EMBED_BATCH_SIZE", "lots")
    assert run_cli("config", "show") == 78
    err = capsys.readouterr().err
    assert "RAGSTORE_EMBED_BATCH_SIZE='lots' is invalid" in err
    assert "valid integer" in err


def test_config_show_redacts_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://u:hunter2@db/x")
    assert run_cli("config", "show", "--json") == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert json.loads(out)["database_url"] == "**********"


def test_config_show_masks_the_password_of_ragstore_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RAGSTORE_URL is no secret setting, but its ``user:password@`` is basic auth for a
    proxy before the server: the CLI's errors masked it and `config show` (table and
    JSON) printed it whole. Every other value is printed as it was."""
    monkeypatch.setenv("RAGSTORE_URL", "http://127.0.0.1:9/rag")
    assert run_cli("config", "show", "--json") == 0
    plain = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("RAGSTORE_URL", "http://alice:s3cretpw@127.0.0.1:9/rag")
    assert run_cli("config", "show", "--json") == 0
    out = capsys.readouterr().out
    assert "s3cretpw" not in out
    shown = json.loads(out)
    assert shown == {**plain, "url": "http://alice:***@127.0.0.1:9/rag"}
    assert run_cli("config", "show") == 0
    out = capsys.readouterr().out
    assert "s3cretpw" not in out
    assert "alice:***@127.0.0.1:9/rag" in out


def test_demo_upgrades_an_older_embedded_schema_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path / "data"))
    assert run_cli("db", "upgrade", "--to", "0001", "--no-backup") == 0
    assert run_cli("demo") == 0
    out = capsys.readouterr().out
    assert "upgraded 0001 -> " in out
    assert "backup: " in out
    assert "4 added" not in out  # the summary goes to stderr; stdout holds the hits
    assert "migrations.md" in out


def test_ragstore_url_naming_another_web_server_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RAGSTORE_URL naming a web server that is not ragstore (its 404/501 HTML pages) ended
    each command with ``error[internal_error]`` and the whole HTML page as the message,
    exit 1: now one line naming the request and status, pointing at RAGSTORE_URL (78)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Keep stderr to the command's own lines."""

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("RAGSTORE_URL", url)
        for args in (("collections", "list", "--json"), ("search", "cheese", "--json")):
            assert run_cli(*args) == 78, args
            out, err = capsys.readouterr()
            assert out == ""
            assert err.startswith("error[config_invalid]: ") and len(err.splitlines()) == 1
            assert f"{url}/v1/" in err and "which is not ragstore's API" in err
            assert "check the server URL (RAGSTORE_URL)" in err and "<html" not in err
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
