"""Profile prod refuses unsafe settings; dev and test start with the defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragstore.errors import ConfigError
from ragstore.profiles import get_settings, misspelled_variables
from tests.conftest import run_cli

CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]
STRONG_URL = "postgresql://ragstore:Xq7-very-long-unique@db.internal:5432/ragstore"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    for name in (
        "RAGSTORE_PROFILE",
        "RAGSTORE_AUTH",
        "RAGSTORE_DATABASE_URL",
        "RAGSTORE_ALLOW_EMBEDDED_IN_PROD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_prod_refuses_auth_off() -> None:
    with pytest.raises(ConfigError) as exc:
        get_settings(profile="prod", auth="off", database_url=STRONG_URL)
    assert str(exc.value) == (
        "profile prod refuses to start: RAGSTORE_AUTH=off leaves the API without keys: set "
        "RAGSTORE_AUTH=on and create keys with `ragstore keys create`"
    )


@pytest.mark.parametrize("password", ["postgres", "ragstore", "ChangeMe", "password"])
def test_prod_refuses_a_default_database_password(password: str) -> None:
    url = f"postgresql://ragstore:{password}@db.internal:5432/ragstore"
    with pytest.raises(ConfigError) as exc:
        get_settings(profile="prod", auth="on", database_url=url)
    message = str(exc.value)
    assert "RAGSTORE_DATABASE_URL uses a well-known default password" in message
    assert f":{password}@" not in message  # the refusal never prints the secret


def test_prod_refuses_a_default_password_in_a_replicas_url() -> None:
    """Only RAGSTORE_DATABASE_URL was looked at: a replica reached as
    ``postgresql://u:postgres@r/db`` passed profile prod. Each item of the list is read
    (a URL or a key=value string), the refusal naming the items and no password."""
    strong = "postgresql://reader:Xq7-very-long-unique@r1.internal:5432/ragstore"
    replicas = (
        f"{strong},postgresql://u:postgres@r2.internal/ragstore,"
        "host=r3.internal dbname=ragstore user=u password=ChangeMe"
    )
    with pytest.raises(ConfigError) as exc:
        get_settings(
            profile="prod", auth="on", database_url=STRONG_URL, read_database_urls=replicas
        )
    message = str(exc.value)
    assert message == (
        "profile prod refuses to start: RAGSTORE_READ_DATABASE_URLS uses a well-known "
        "default password (items 2, 3 of the list): set a strong, unique password on the "
        "replica's role and in its URL"
    )
    settings = get_settings(
        profile="prod", auth="on", database_url=STRONG_URL, read_database_urls=strong
    )
    assert settings.replica_urls == [strong]


def test_prod_refuses_the_embedded_database_unless_allowed() -> None:
    with pytest.raises(ConfigError) as exc:
        get_settings(profile="prod", auth="on")
    assert "RAGSTORE_ALLOW_EMBEDDED_IN_PROD=true" in str(exc.value)
    allowed = get_settings(profile="prod", auth="on", allow_embedded_in_prod=True)
    assert allowed.uses_embedded_database


def test_prod_lists_every_refusal_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        get_settings(profile="prod", auth="auto")
    message = str(exc.value)
    assert "RAGSTORE_AUTH=auto" in message and "RAGSTORE_ALLOW_EMBEDDED_IN_PROD" in message


def test_prod_starts_with_auth_on_and_a_strong_password() -> None:
    settings = get_settings(profile="prod", auth="on", database_url=STRONG_URL)
    assert settings.profile == "prod"


def test_a_store_given_prod_settings_refuses_what_the_environment_would() -> None:
    """``Store(url, settings=)`` validated the URL but skipped profile prod's check: a
    default password in ``url`` (or settings built without get_settings) was opened."""
    from ragstore.config import Settings
    from ragstore.store import Store

    url = "postgresql://ragstore:postgres@db.internal:5432/ragstore"
    prod = get_settings(profile="prod", auth="on", database_url=STRONG_URL)
    with pytest.raises(ConfigError) as exc:
        Store(url, settings=prod)
    with pytest.raises(ConfigError) as from_env:
        get_settings(profile="prod", auth="on", database_url=url)
    assert str(exc.value) == str(from_env.value)
    assert ":postgres@" not in str(exc.value)
    with pytest.raises(ConfigError, match="RAGSTORE_AUTH=off leaves the API without keys"):
        Store(settings=Settings(profile="prod", auth="off", database_url=STRONG_URL))


@pytest.mark.parametrize("profile", ["dev", "test"])
def test_dev_and_test_accept_the_defaults(profile: str) -> None:
    settings = get_settings(profile=profile, auth="off")
    assert settings.uses_embedded_database and settings.auth == "off"


def test_cli_in_prod_with_unsafe_settings_exits_78_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_PROFILE", "prod")
    monkeypatch.setenv(
        "RAGSTORE_DATABASE_URL", "postgresql://ragstore:postgres@db.internal:5432/ragstore"
    )
    assert run_cli("config", "show") == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error[config_invalid]: profile prod refuses to start:")
    assert ":postgres@" not in err[0]


def test_near_misses_of_settings_are_named_and_other_variables_left_alone() -> None:
    lines = misspelled_variables(
        {
            "RAGSTORE_AUHT": "on",  # a typo: the setting would stay on its default unsaid
            "RAGSTORE_API_HOTS": "127.0.0.1",
            "RAGSTORE_AUTH": "on",  # a setting
            "RAGSTORE_EMBEDDING_API_KEY": "k",  # read by the HTTP model, not a setting
            "RAGSTORE_MY_OPENAI_KEY": "k",  # a key variable a model pin may name
            "OTHER_AUHT": "on",
        }
    )
    assert lines == [
        "RAGSTORE_API_HOTS is not a ragstore setting and is ignored; did you mean "
        "RAGSTORE_API_HOST? (`ragstore config show` lists them)",
        "RAGSTORE_AUHT is not a ragstore setting and is ignored; did you mean "
        "RAGSTORE_AUTH? (`ragstore config show` lists them)",
    ]


def test_the_cli_warns_of_a_misspelled_variable_in_the_environment_or_dotenv(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("RAGSTORE_COLECTION=notes\n", encoding="utf-8")
    env = {**os.environ, "RAGSTORE_AUHT": "on", "RAGSTORE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [*CLI, "config", "show", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "did you mean" in line]
    assert len(warned) == 2, done.stderr
    assert "RAGSTORE_AUHT" in warned[0] and "RAGSTORE_AUTH?" in warned[0]
    assert "RAGSTORE_COLECTION" in warned[1] and "RAGSTORE_COLLECTION?" in warned[1]


@pytest.mark.parametrize("url", ["not a url", "ftp://x", "http://", "127.0.0.1:8080"])
def test_a_server_url_that_is_no_http_url_is_a_setting_to_fix(url: str) -> None:
    # it was tried as an address and reported as the server being unavailable (exit 69)
    with pytest.raises(ConfigError) as exc:
        get_settings(url=url)
    assert str(exc.value).startswith("RAGSTORE_URL=(secret) is invalid: ")
    assert "not an http(s) URL of a ragstore server" in str(exc.value)


def test_a_server_url_is_kept_and_an_empty_one_is_unset() -> None:
    assert get_settings(url=" https://rag.internal:8443/ ").url == "https://rag.internal:8443/"
    assert get_settings(url="").url is None


@pytest.mark.parametrize(
    "proxies",
    # ::ffff:0:0/96: every IPv4 client of a dual-stack listener (0.0.0.0/0 mapped)
    ["0.0.0.0/0", "::/0", "10.0.0.5, 0.0.0.0/0", "*", "::ffff:0:0/96"],
)
def test_trusted_proxies_of_every_address_are_refused(proxies: str) -> None:
    # 0.0.0.0/0 was taken: any client could then name its own address in X-Forwarded-For
    # (past the failed-key throttle, and with keys off past the loopback guard)
    with pytest.raises(ConfigError) as exc:
        get_settings(trusted_proxies=proxies)
    assert "RAGSTORE_TRUSTED_PROXIES" in str(exc.value)
    assert "10.0.0.0/24" in str(exc.value)  # how to fix it


def test_trusted_proxies_of_real_networks_are_kept() -> None:
    got = get_settings(trusted_proxies=" 10.0.0.5 , 10.0.0.0/24,::1 ").trusted_proxies
    assert got == "10.0.0.5,10.0.0.0/24,::1"
