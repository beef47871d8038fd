"""The test session never touches the developer's own store, and a test leaves no log
handler on its closed capture for the tests after it (whatever file ran before)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.observability.logging import configure_logging


def test_the_default_data_dir_is_the_sessions_own() -> None:
    # a test that forgets to name its database or data dir (a CLI call without cli_env)
    # wrote into ~/.local/share/ragstore and left its embedded server running there
    default = Settings().data_dir
    assert "ragstore-tests-home-" in str(default), default
    assert not default.is_relative_to(Path.home() / ".local")


def test_a_log_handler_on_a_captured_stream_is_configured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What ``create_app``, ``ragstore worker`` and ``ragstore serve`` do in a test that
    captures stderr: the root handler now writes to this test's stream, closed after it."""
    level = logging.getLogger().level
    configure_logging("info", log_format="json")
    try:
        logging.getLogger("ragstore.test").info("written to this test's stream")
    finally:
        logging.getLogger().setLevel(level)  # the handler stays: the next test's case
    assert "written to this test's stream" in capsys.readouterr().err


def test_a_later_test_logs_without_the_closed_stream(capsys: pytest.CaptureFixture[str]) -> None:
    # the handler the test above left wrote to its closed stream: every line logged here
    # printed "--- Logging error --- ValueError: I/O operation on closed file"
    logging.getLogger("ragstore.test").warning("logged after the other test")
    assert "Logging error" not in capsys.readouterr().err
