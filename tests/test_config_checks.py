"""Settings that passed validation and failed later are refused when they are read: one
``config_invalid`` line (what, where, how to fix), exit 78, never a traceback, an outage
(database_unavailable, 69) or an input error at the end of a load (invalid_input, 65)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.errors import ConfigError
from ragstore.profiles import get_settings, misspelled_variables
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RAGSTORE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env


def _refusal(**values: object) -> str:
    with pytest.raises(ConfigError) as exc:
        get_settings(**values)
    return str(exc.value)


def _cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one line a command that must be refused as configuration prints."""
    assert run_cli(*args) == 78
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error[config_invalid]: ")
    return lines[0]


def test_a_dotenv_that_is_not_utf8_is_named_with_its_bad_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a traceback (UnicodeDecodeError, exit 1) from every command
    (tmp_path / ".env").write_bytes(b"# " + b"x" * 9000 + b"\nRAGSTORE_COLLECTION=caf\xe9\n")
    line = _cli_error(capsys, "config", "show")
    assert f"the settings file {tmp_path / '.env'} is not UTF-8 text" in line
    assert "byte 0xe9 at offset 9026, line 2)" in line
    assert "save it as UTF-8" in line


def test_a_dotenv_that_cannot_be_read_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a .env this user cannot read (mode 000, another user's) raised PermissionError with
    # a traceback; reading /proc/self/mem at offset 0 fails (EIO) for root as well
    (tmp_path / ".env").symlink_to("/proc/self/mem")
    line = _cli_error(capsys, "config", "show")
    assert f"the settings file {tmp_path / '.env'} cannot be read (" in line
    assert "make it readable by this user" in line


def test_a_pool_whose_least_size_is_above_its_most_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # psycopg_pool refused it at the first use of the database, with a traceback
    monkeypatch.setenv("RAGSTORE_POOL_MIN_SIZE", "20")
    line = _cli_error(capsys, "config", "show")
    assert line == (
        "error[config_invalid]: RAGSTORE_POOL_MIN_SIZE=20 is above RAGSTORE_POOL_MAX_SIZE=10; "
        "lower it or raise the maximum"
    )
    assert get_settings(pool_min_size=10, pool_max_size=10).pool_min_size == 10


@pytest.mark.parametrize(
    ("memory", "problem"),
    [("63kB", "below PostgreSQL's least, 64kB"), ("0MB", "below"), ("2TB", "above")],
)
def test_index_build_memory_outside_what_postgresql_takes_is_refused(
    memory: str, problem: str
) -> None:
    # below 64kB every bulk load failed at its very end, blamed on its input (exit 65)
    message = _refusal(index_build_memory=memory)
    assert message.startswith(f"RAGSTORE_INDEX_BUILD_MEMORY='{memory}' is invalid: it is ")
    assert problem in message


@pytest.mark.parametrize("memory", ["64kB", "256MB", "1TB", "2047GB"])
def test_index_build_memory_in_postgresqls_range_is_kept(memory: str) -> None:
    assert get_settings(index_build_memory=memory).index_build_memory == memory


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("sslmode=requre", "sets sslmode to a value libpq does not take"),
        ("sslmode=REQUIRE", "sets sslmode to a value libpq does not take"),
        ("target_session_attrs=readwrite", "sets target_session_attrs to a value"),
        ("channel_binding=yes", "sets channel_binding to a value"),
        ("gssencmode=", "sets gssencmode to a value"),
        ("ssl_min_protocol_version=TLSv2", "sets ssl_min_protocol_version to a value"),
        ("keepalives=maybe", "sets keepalives to something that is not a whole number"),
        ("keepalives_idle=1.5", "sets keepalives_idle to something"),
        ("tcp_user_timeout=99999999999", "sets tcp_user_timeout to something"),
        ("connect_timeout=soon", "sets connect_timeout to something"),
    ],
)
def test_a_libpq_option_libpq_would_refuse_is_a_setting_to_fix(option: str, named: str) -> None:
    # libpq refuses them only when it connects: reported as the database being down (69)
    secret = "S3cretPw"
    url = f"postgresql://u:{secret}@db.internal:5432/x?{option}&application_name={secret}"
    message = _refusal(database_url=url)
    assert message.startswith("RAGSTORE_DATABASE_URL=(secret) is invalid: it ")
    assert named in message
    value = option.split("=", 1)[1]
    assert secret not in message and (not value or value not in message)
    replicas = _refusal(read_database_urls=f"postgresql://u@r1/x, host=r2 {option}")
    assert f"item 2 of the comma-separated list {named.split(' to ')[0]}" in replicas


@pytest.mark.parametrize(
    "options",
    [
        "sslmode=verify-full&target_session_attrs=read-write&channel_binding=require",
        "ssl_min_protocol_version=tlsv1.2&load_balance_hosts=random",
        "keepalives=1&keepalives_idle=30&connect_timeout=10&tcp_user_timeout=-1",
    ],
)
def test_libpq_options_libpq_takes_are_kept(options: str) -> None:
    url = f"postgresql://u:pw@db.internal:5432/x?{options}"
    assert get_settings(database_url=url).database_url is not None
    keyword = "host=db.internal keepalives=' 1 ' sslmode=prefer gssencmode=disable"
    assert get_settings(database_url=keyword).database_url is not None


def test_an_unknown_sslmode_stops_a_command_as_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/x?sslmode=requre")
    line = _cli_error(capsys, "collections", "list")
    assert "sslmode" in line and "requre" not in line


def test_a_password_with_an_unencoded_at_is_refused_without_its_pieces() -> None:
    # the rest of the password became the host, printed in errors and logs
    message = _refusal(database_url="postgresql://bob:S3CR@ETpw@127.0.0.1:1/db")
    assert "names a host with an @ in it; percent-encode @ in the password as %40" in message
    assert "S3CR" not in message and "ETpw" not in message
    replicas = _refusal(read_database_urls="postgresql://bob:S3CR@ETpw@r1/db")
    assert "item 1 of the comma-separated list names a host with an @" in replicas
    assert "ETpw" not in replicas
    # a socket directory may hold one
    assert get_settings(database_url="postgresql://u@%2Ftmp%2Fa%40b/db").database_url


FLOATS = [name for name, field in Settings.model_fields.items() if field.annotation is float]


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused_as_no_number(name: str, value: str) -> None:
    # "Input should be less than or equal to 300" for nan; a setting unbounded above
    # took inf
    message = _refusal(**{name: value})
    assert message.startswith(
        f"RAGSTORE_{name.upper()}='{value}' is invalid: it is not a finite number "
        "(nan and inf are not accepted); give a number "
    )


@pytest.mark.parametrize(
    "name",
    [
        "rate_limit_per_minute",
        "max_answer_chunks",
        "bulk_load_bytes",
        "max_file_bytes",
        "max_request_bytes",
        "max_upload_bytes",
        "background_ingest_bytes",
    ],
)
def test_a_huge_integer_is_refused_and_not_echoed_whole(name: str) -> None:
    # a 401-digit RAGSTORE_RATE_LIMIT_PER_MINUTE passed; `serve` then died of an
    # OverflowError in the rate limiter
    message = _refusal(**{name: "9" * 401})
    assert "Input should be less than or equal to" in message
    assert "9" * 101 not in message


def test_a_near_miss_is_matched_by_its_words_and_in_any_case() -> None:
    lines = misspelled_variables({"RAGSTORE_DB_URL": "x", "ragstore_auht": "on"})
    assert lines == [
        "RAGSTORE_DB_URL is not a ragstore setting and is ignored; did you mean "
        "RAGSTORE_DATABASE_URL? (`ragstore config show` lists them)",
        "ragstore_auht is not a ragstore setting and is ignored; did you mean "
        "RAGSTORE_AUTH? (`ragstore config show` lists them)",
    ]
    # a setting in lower case is honoured, so not warned about
    assert misspelled_variables({"ragstore_auth": "on", "RAGSTORE_EMBEDDING_API_KEY": ""}) == []


def test_an_empty_model_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # "no pinned model ''", naming no variable
    monkeypatch.setenv("RAGSTORE_MODEL", " ")
    with pytest.raises(ConfigError) as exc:
        get_settings()
    assert str(exc.value).startswith("RAGSTORE_MODEL=' ' is invalid: it is empty; name an")
