"""Settings profiles: ``dev`` and ``test`` take the defaults; ``prod`` refuses unsafe ones.

A production process must not start with API keys turned off, with a database password
that is a well-known default, or on the embedded single-machine database unless the
operator says so with ``RAGSTORE_ALLOW_EMBEDDED_IN_PROD=true``. Each refusal names the
variable to change; all of them are reported at once, so one restart fixes everything.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from ragstore.config import Settings, describe_error
from ragstore.errors import ConfigError

# Passwords found in tutorials, images' examples and our own compose file's sample .env.
DEFAULT_PASSWORDS = frozenset(
    {
        "postgres",
        "password",
        "ragstore",
        "changeme",
        "change-me",
        "secret",
        "admin",
        "root",
        "example",
        "pass",
        "test",
        "1234",
        "12345678",
    }
)


def database_password(settings: Settings) -> str | None:
    """The password inside ``RAGSTORE_DATABASE_URL`` (None: no URL or no password in it)."""
    if settings.database_url is None:
        return None
    try:
        password = conninfo_to_dict(settings.database_url.get_secret_value()).get("password")
    except psycopg.ProgrammingError:
        return None
    return None if password is None else str(password)


def is_loopback(host: str) -> bool:
    """Whether the API would listen on this machine only (loopback or a Unix socket).

    ``""`` is *not* loopback: uvicorn (and the socket API) read it as every interface.
    """
    if host == "localhost" or host.startswith("unix:"):
        return True
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_on_loopback(settings: Settings) -> bool:
    """Whether every address the API listens on is loopback: the ones ``ragstore serve``
    bound (``RAGSTORE_API_BOUND``, set by it) when known, else ``RAGSTORE_API_HOST``."""
    hosts = [h for h in settings.api_bound.split(",") if h] or [settings.api_host]
    return all(is_loopback(h) for h in hosts)


def auth_is_off(settings: Settings) -> bool:
    """Whether requests would be served without API keys.

    The API's rule: ``auto`` means off only for the embedded database served on loopback.
    """
    if settings.auth == "auto":
        return settings.uses_embedded_database and served_on_loopback(settings)
    return settings.auth == "off"


def prod_problems(settings: Settings) -> list[str]:
    """What makes these settings unfit for ``RAGSTORE_PROFILE=prod`` (empty: fit)."""
    problems: list[str] = []
    if auth_is_off(settings):
        problems.append(
            f"RAGSTORE_AUTH={settings.auth} leaves the API without keys: set RAGSTORE_AUTH=on "
            "and create keys with `ragstore keys create`"
        )
    password = database_password(settings)
    if password is not None and password.lower() in DEFAULT_PASSWORDS:
        problems.append(
            "RAGSTORE_DATABASE_URL uses a well-known default password: set a strong, unique "
            "password on the database role and in the URL"
        )
    if settings.uses_embedded_database and not settings.allow_embedded_in_prod:
        problems.append(
            "RAGSTORE_DATABASE_URL is unset, so the embedded single-machine database would be "
            "used: point RAGSTORE_DATABASE_URL at a managed PostgreSQL with pgvector, or set "
            "RAGSTORE_ALLOW_EMBEDDED_IN_PROD=true to accept it"
        )
    return problems


def check_profile(settings: Settings) -> None:
    """Raise one ConfigError listing every refusal of the active profile."""
    if settings.profile != "prod":
        return
    problems = prod_problems(settings)
    if problems:
        raise ConfigError("profile prod refuses to start: " + "; ".join(problems))


def get_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise one ConfigError naming each bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = [describe_error(dict(e)) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
    check_profile(settings)
    return settings
