"""Settings profiles: ``dev`` and ``test`` take the defaults; ``prod`` refuses unsafe ones.

A production process must not start with API keys turned off, with a database password
that is a well-known default, or on the embedded single-machine database unless the
operator says so with ``RAGSTORE_ALLOW_EMBEDDED_IN_PROD=true``. Each refusal names the
variable to change; all of them are reported at once, so one restart fixes everything.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any

import psycopg
from dotenv import dotenv_values
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from ragstore.config import (
    ENV_PREFIX,
    Settings,
    describe_error,
    env_file_path,
    failover_replica_warnings,
    unreadable_env_file,
)
from ragstore.errors import ConfigError

log = logging.getLogger(__name__)

# Variables ragstore reads that are not settings: the default name of an embedding API's
# key, the one `ragstore serve` hands its workers, the compose file's database password.
OTHER_VARIABLES = frozenset(
    {"RAGSTORE_EMBEDDING_API_KEY", "RAGSTORE_SERVE_PARENT", "RAGSTORE_DB_PASSWORD"}
)

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
    return _password(settings.database_url.get_secret_value())


def _password(conninfo: str) -> str | None:
    """The password inside one conninfo (None: none in it)."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return None
    return None if password is None else str(password)


def _well_known(password: str | None) -> bool:
    return password is not None and password.lower() in DEFAULT_PASSWORDS


def default_password_replicas(settings: Settings) -> list[int]:
    """The items (from 1) of ``RAGSTORE_READ_DATABASE_URLS`` whose password is a
    well-known default: profile prod looked at the primary's URL alone, and a replica's
    ``postgres`` passed."""
    return [n for n, url in enumerate(settings.replica_urls, 1) if _well_known(_password(url))]


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
    bound (``api_bound``, passed by it: no setting) when known, else ``RAGSTORE_API_HOST``."""
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
    if _well_known(database_password(settings)):
        problems.append(
            "RAGSTORE_DATABASE_URL uses a well-known default password: set a strong, unique "
            "password on the database role and in the URL"
        )
    replicas = default_password_replicas(settings)
    if replicas:
        items = ", ".join(str(n) for n in replicas)
        problems.append(
            "RAGSTORE_READ_DATABASE_URLS uses a well-known default password (item"
            f"{'s' if len(replicas) > 1 else ''} {items} of the list): set a strong, unique "
            "password on the replica's role and in its URL"
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
    settings = _validated(overrides)
    check_profile(settings)
    _warn_misspelled()
    _warn_once(failover_replica_warnings(settings))
    return settings


def settings_with(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with ``overrides`` applied and checked as the environment's are: each
    value validated, then the profile's refusals (:func:`check_profile`).

    ``model_copy(update=...)`` validates nothing: ``Store(url, settings=...)`` kept a bad
    URL as a plain ``str`` (shown by the settings' repr, password and all) and failed at
    the first connection with an AttributeError. The profile was not checked either:
    ``Store(url, settings=<profile prod>)`` opened with a well-known default password in
    ``url`` that ``RAGSTORE_PROFILE=prod`` refuses from the environment."""
    checked = _validated({**dict(settings), **overrides})
    check_profile(checked)
    return checked


def _validated(values: dict[str, Any]) -> Settings:
    """Settings from ``values`` (the environment for the rest), or one ConfigError naming
    each bad variable. pydantic's own text repeats each bad input, a password too, so
    neither it nor the ValidationError (``from None``) reaches a traceback or a log."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = [describe_error(dict(e)) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
    except (OSError, UnicodeDecodeError) as exc:
        # .env is the one file Settings reads: not UTF-8, or not this user's to read
        if not os.path.exists(env_file_path()):
            raise
        raise unreadable_env_file(exc) from None


_warned: set[str] = set()


def _warn_misspelled() -> None:
    """Each near-miss variable of the environment or ``.env`` named once a process."""
    seen: Mapping[str, str | None] = os.environ
    if os.path.isfile(".env"):
        try:
            seen = {**dotenv_values(".env", encoding="utf-8"), **os.environ}
        except (OSError, UnicodeDecodeError) as exc:
            # read by the settings just before: changed since, or made unreadable
            raise unreadable_env_file(exc) from None
    _warn_once(misspelled_variables(seen))


def _warn_once(lines: list[str]) -> None:
    """Each line logged as a warning once a process (settings are read more than once)."""
    for line in lines:
        if line not in _warned:
            _warned.add(line)
            log.warning("%s", line)


def misspelled_variables(environ: Mapping[str, str | None]) -> list[str]:
    """A line for each ``RAGSTORE_*`` variable that is no setting but close to one.

    Settings ignore variables they do not know, so ``RAGSTORE_READONLY=true`` on a replica
    or ``RAGSTORE_AUHT=on`` would leave the process running on the default without a word.
    Only near misses are named: ``ragstore`` reads a few variables that are not settings
    (an embedding API key's, named by the model pin), and those must not be warned about.
    Names are compared in upper case, as settings are read (``ragstore_auth`` is
    RAGSTORE_AUTH, so ``ragstore_auht`` is a near miss too).
    """
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        close = _closest_setting(upper, known)
        if close:
            lines.append(
                f"{name} is not a ragstore setting and is ignored; did you mean {close}? "
                "(`ragstore config show` lists them)"
            )
    return lines


def _closest_setting(name: str, known: set[str]) -> str | None:
    """The setting ``name`` (upper case) is most likely a misspelling of, or None.

    A setting is a candidate when the whole names are close (difflib's ratio of 0.85 or
    more) or when each word of ``name`` is its word's abbreviation or near miss
    (``DB_URL``: DATABASE_URL). The candidate whose words match wins, then the closest by
    the part after ``RAGSTORE_``: on the whole names the shared prefix made
    ``RAGSTORE_DB_URL`` closest to ``RAGSTORE_URL``."""
    rest = name[len(ENV_PREFIX) :]
    ranked = []
    for setting in known:
        suffix = setting[len(ENV_PREFIX) :]
        words = _words_match(rest, suffix)
        if words or difflib.SequenceMatcher(None, name, setting).ratio() >= 0.85:
            closeness = difflib.SequenceMatcher(None, rest, suffix).ratio()
            ranked.append((words, closeness, setting))
    return max(ranked)[2] if ranked else None


def _words_match(typed: str, setting: str) -> bool:
    """Whether each ``_``-separated word of ``typed`` stands for the word of ``setting``
    in its place: the same, an abbreviation (its first letter, then letters of the word in
    order: ``DB`` for DATABASE) or a near miss (``AUHT`` for AUTH)."""
    ours, theirs = typed.split("_"), setting.split("_")
    if len(ours) != len(theirs):
        return False
    return all(
        a == b
        or (len(a) >= 2 and a[0] == b[0] and _in_order(a, b))
        or difflib.SequenceMatcher(None, a, b).ratio() >= 0.75
        for a, b in zip(ours, theirs, strict=True)
    )


def _in_order(letters: str, word: str) -> bool:
    """Whether ``letters`` appear in ``word`` in this order (not necessarily together)."""
    remaining = iter(word)
    return all(letter in remaining for letter in letters)
