"""Profile prod refuses unsafe settings; dev and test start with the defaults."""

from __future__ import annotations

import pytest

from ragstore.errors import ConfigError
from ragstore.profiles import get_settings
from tests.conftest import run_cli

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
