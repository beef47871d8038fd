"""The CLI's manners: every usage error is one line and exit 64, ``--version``, readable
help, confirmations before destructive commands, and no torch where no model is needed."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.runtime import Runtime
from tests.conftest import run_cli

USAGE = 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serach", "x"],
            "error[usage]: No such command 'serach'. Did you mean 'search'? "
            "(see 'ragstore --help')",
        ),
        (["search"], "error[usage]: Missing argument 'QUERY'. (see 'ragstore search --help')"),
        (
            ["search", "x", "-k", "0"],
            "error[usage]: Invalid value for '-k': Input should be "
            "greater than or equal to 1 (see 'ragstore search --help')",
        ),
        (
            ["search", "x", "-k", "abc"],
            "error[usage]: Invalid value for '-k': Input should be a "
            "valid integer, unable to parse string as an integer "
            "(see 'ragstore search --help')",
        ),
        (
            ["search", "x", "--zzzz"],
            "error[usage]: No such option: --zzzz (see 'ragstore search --help')",
        ),
        (
            ["search", "-tape backups"],
            "error[usage]: No such option: -t; a value that starts with '-' goes after "
            "'--' (a query's -word, say), e.g. ragstore search -- '-tape backups' "
            "(see 'ragstore search --help')",
        ),
        (
            ["ingest", "-x", "-c", "notes"],
            "error[usage]: No such option: -x; a value that starts with '-' goes after "
            "'--' (see 'ragstore ingest --help')",
        ),
        (
            ["models", "migrate", "-c", "x", "--to", "m", "--batch-size", "0"],
            "error[usage]: Invalid value for '--batch-size': Input should be greater than or equal "
            "to 1 (see 'ragstore models migrate --help')",
        ),
        (
            ["ingest", "notes.md", "-c", ""],
            "error[usage]: Invalid value for '--collection' / '-c': the collection name is "
            "empty; name one, or leave the option out to use RAGSTORE_COLLECTION "
            "(see 'ragstore ingest --help')",
        ),
        (
            ["db", "downgrade"],
            "error[usage]: Missing option '--to'. (see 'ragstore db downgrade --help')",
        ),
    ],
)
def test_usage_error_is_one_line_and_exit_64(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(*args) == USAGE
    captured = capsys.readouterr()
    assert captured.err.strip() == message
    assert captured.out == ""


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert run_cli("--version") == 0
    assert capsys.readouterr().out == f"ragstore {version('ragstore')}\n"


def test_bare_group_shows_its_help_with_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("db") == USAGE
    assert "Usage: ragstore db [OPTIONS] COMMAND [ARGS]..." in capsys.readouterr().out


def test_command_lists_show_each_summary_unbroken(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A docstring's first paragraph wraps in the source; its row in the command table
    is one sentence, not cut where the source line ended."""
    monkeypatch.setenv("COLUMNS", "240")
    for group, summary in (
        (
            (),
            "Ingest Markdown, text, HTML, PDF, DOCX, PPTX, EPUB, notebook and source files; "
            "unchanged files are skipped without embedding, changed ones replaced in one "
            "transaction.",
        ),
        (
            ("models",),
            "Drop the vectors of models the collection no longer uses (no rollback "
            "past this); lists what goes and asks first.",
        ),
    ):
        assert run_cli(*group, "--help") == 0
        out = capsys.readouterr().out
        assert summary in out, out


def test_help_shows_readable_placeholders_not_python_types(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    python_types = re.compile(
        r"<(?:str|int|float|bool|path|list|tuple|dict|choice)\b[^>]*>", re.IGNORECASE
    )
    for command in (
        ["search"],
        ["ingest"],
        ["import"],
        ["eval"],
        ["eval-sections"],
        ["mcp"],
        ["models", "migrate"],
        ["collections", "create"],
        ["documents", "list"],
        ["jobs", "list"],
        ["jobs", "show"],
    ):
        assert run_cli(*command, "--help") == 0
        out = capsys.readouterr().out
        assert python_types.findall(out) == [], (command, out)
    assert run_cli("search", "--help") == 0
    out = capsys.readouterr().out
    assert "QUERY" in out and "-k" in out and " N " in out


def test_search_defaults_agree_with_the_search_module() -> None:
    from ragstore.cli import search_cmd
    from ragstore.search import hybrid

    assert (search_cmd.RRF_K, search_cmd.VECTOR_WEIGHT, search_cmd.FULLTEXT_WEIGHT) == (
        hybrid.DEFAULT_RRF_K,
        hybrid.DEFAULT_VECTOR_WEIGHT,
        hybrid.DEFAULT_FULLTEXT_WEIGHT,
    )


def test_models_constants_agree_with_the_registry() -> None:
    from ragstore.cli import models_cmd
    from ragstore.embedding import http, registry

    assert models_cmd.LOCAL_PROVIDER == registry.LOCAL_PROVIDER
    assert models_cmd.HTTP_PROVIDER == registry.HTTP_PROVIDER
    assert models_cmd.API_KEY_ENV == http.DEFAULT_API_KEY_ENV
    assert models_cmd.DEFAULT_CONCURRENCY == http.DEFAULT_CONCURRENCY
    assert models_cmd.MAX_CONCURRENCY == http.MAX_CONCURRENCY


def test_fulltext_config_db_and_keys_never_import_torch(
    cli_env: dict[str, str], rt: Runtime
) -> None:
    rt.collection("lazy", create=True)
    code = (
        "import sys\n"
        "from ragstore.cli import main\n"
        "for args in (['config', 'show'], ['db', 'status'], ['keys', 'list'],\n"
        "             ['search', 'anything', '-c', 'lazy', '--mode', 'fulltext']):\n"
        "    main(args)\n"
        "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers')\n"
        "               if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no results" in proc.stdout
    assert "HEAVY []" in proc.stderr


def test_import_short_m_still_works_with_a_deprecation_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # refused on the missing file, after the flag was read
    assert run_cli("import", "/nonexistent.jsonl", "-m", "x@v1", "--dimension", "4") != 0
    err = capsys.readouterr().err
    assert (
        "deprecated: `ragstore import -m` still works but will be removed; use --model "
        "(-m means --mode everywhere else)"
    ) in err


def test_import_without_a_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("import", "/nonexistent.jsonl") == USAGE
    assert capsys.readouterr().err.strip() == (
        "error[usage]: Missing option '--model'. (see 'ragstore import --help')"
    )


def _answer(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def test_db_downgrade_asks_and_no_changes_nothing(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(cli_env["RAGSTORE_DATABASE_URL"])
    head = migrations.status(db).current
    _answer(monkeypatch, "n\n")
    assert run_cli("db", "downgrade", "--to", "base") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("Downgrade ")
    assert "(pass --yes to skip this question) [y/N]: " in captured.err
    assert captured.err.endswith("[y/N]: \naborted: nothing was changed\n")
    assert migrations.status(db).current == head


def test_db_downgrade_with_yes_backs_up_first(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(cli_env["RAGSTORE_DATABASE_URL"])
    revisions = migrations.known_revisions()
    try:
        assert run_cli("db", "downgrade", "--to", revisions[-2], "--yes") == 0
        out = capsys.readouterr().out
        backup = Path(out.split("backup: ", 1)[1].split(" ", 1)[0])
        assert backup.is_file() and "-downgrade.dump" in backup.name
        assert f"downgraded {revisions[-1]} -> {revisions[-2]}" in out
        assert migrations.status(db).current == revisions[-2]
    finally:
        assert run_cli("db", "upgrade", "--json") == 0
    done = json.loads(capsys.readouterr().out)
    assert done["from"] == revisions[-2] and done["to"] == revisions[-1]
    assert Path(done["backup"]).name.endswith("-upgrade.dump")


def test_restore_asks_and_no_changes_nothing(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(archive) and len(info["sha256"]) == 64
    _answer(monkeypatch, "n\n")
    assert run_cli("restore", str(archive)) == 1
    assert capsys.readouterr().err.strip().endswith("aborted: nothing was changed")


def test_revisions_read_from_the_files_agree_with_alembic() -> None:
    assert migrations._chain_from_files() == migrations._chain_from_alembic()


def test_db_downgrade_refuses_a_target_it_cannot_reach_before_asking_or_backing_up(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown revision, or one above the database's, was found out by Alembic only
    after the question and the backup (minutes at a million chunks); it is one clear
    error before either. Downgrading to where the database is does nothing."""
    db = Database(cli_env["RAGSTORE_DATABASE_URL"])
    head = migrations.status(db).current
    backups = Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    made = sorted(backups.glob("*.dump")) if backups.exists() else []
    capsys.readouterr()
    assert run_cli("db", "downgrade", "--to", "nope", "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith("error[invalid_input]: --to 'nope' is not a schema revision")
    assert run_cli("db", "downgrade", "--to", head or "", "--yes") == 0
    assert capsys.readouterr().out == f"schema already at {head}; nothing to do\n"
    after = sorted(backups.glob("*.dump")) if backups.exists() else []
    assert after == made, "no backup taken for a downgrade that does nothing"
    assert migrations.status(db).current == head


def test_non_ascii_names_on_an_ascii_terminal_print_escaped_not_a_traceback(
    tmp_path: Path,
) -> None:
    """On a stream that is not UTF-8 (``PYTHONIOENCODING=ascii``, a Latin-1 locale) a
    non-ASCII path or file name in a table or an error ended the command with a
    UnicodeEncodeError traceback; the characters are now written as ``\\xNN``."""
    code = "import sys\nfrom ragstore.cli import main\nmain(sys.argv[1:])\n"
    env = {
        **os.environ,
        "PYTHONIOENCODING": "ascii",
        "RAGSTORE_DATA_DIR": str(tmp_path / "café"),
    }
    env.pop("RAGSTORE_URL", None)
    shown = subprocess.run(
        [sys.executable, "-c", code, "config", "show"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr.decode()
    assert b"caf\\xe9" in shown.stdout and b"Traceback" not in shown.stderr
    failed = subprocess.run(
        [sys.executable, "-c", code, "eval", str(tmp_path / "données")],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert failed.returncode == 66
    assert failed.stderr.decode("ascii").startswith("error[path_not_found]: ")
    assert "donn\\xe9es: no such dataset directory" in failed.stderr.decode("ascii")
