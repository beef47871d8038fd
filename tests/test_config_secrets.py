"""A bad setting that holds a secret (a database password) is one config error, whatever
the entry point, and no part of it repeats the secret: pydantic's ValidationError quotes
every bad input, so it must not reach a traceback, a log line or an answer either."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from ragstore import Store
from ragstore.config import Settings
from ragstore.errors import ConfigError

SECRET = "hunter2-SECRET"
CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]
BAD_URL = f"postgresql://u:{SECRET}@db:notaport/x"


def _all_text(exc: BaseException) -> str:
    """Everything a user could be shown of ``exc``: its str, repr and the formatted
    traceback with every chained cause."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


@pytest.mark.parametrize("given_settings", [False, True], ids=["environment", "settings"])
def test_store_with_a_bad_url_is_a_config_error_without_the_password(
    given_settings: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Store(url, settings=...)`` copied the URL in unvalidated (``model_copy``): kept as
    a plain ``str``, the settings' repr showed the password and the first connection
    failed with an AttributeError. ``Store(url)`` took a port that is no number and failed
    at the first connection as the database being unavailable."""
    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path, profile="test") if given_settings else None
    with pytest.raises(ConfigError) as err:
        Store(BAD_URL, data_dir=tmp_path, settings=settings)
    assert SECRET not in _all_text(err.value)
    assert str(err.value).startswith("RAGSTORE_DATABASE_URL=(secret) is invalid: ")
    assert "names a port that is not a number from 1 to 65535" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


UVICORN = [sys.executable, "-m", "uvicorn", "ragstore.api.app:create_app", "--factory"]


@pytest.mark.parametrize(
    "command",
    [[*CLI, "serve", "--port", "0"], [*CLI, "worker"], [*UVICORN, "--port", "0"]],
    ids=["serve", "worker", "uvicorn"],
)
def test_a_server_or_worker_with_a_bad_url_exits_78_without_the_password(
    command: list[str], tmp_path: Path
) -> None:
    """The API server (the Docker image's command), the worker and uvicorn running the
    app factory itself started on a bad database URL: it is refused before anything
    starts, and their output never shows it. uvicorn ended with the factory's traceback
    and exit 1."""
    env = {
        **os.environ,
        "RAGSTORE_DATABASE_URL": BAD_URL,
        "RAGSTORE_DATA_DIR": str(tmp_path),
        "RAGSTORE_PROFILE": "test",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert SECRET not in done.stdout + done.stderr
    (line,) = done.stderr.splitlines()  # no traceback
    assert line.startswith("error[config_invalid]: RAGSTORE_DATABASE_URL=(secret) is invalid")
