"""The test session never touches the developer's own store."""

from __future__ import annotations

from pathlib import Path

from ragstore.config import Settings


def test_the_default_data_dir_is_the_sessions_own() -> None:
    # a test that forgets to name its database or data dir (a CLI call without cli_env)
    # wrote into ~/.local/share/ragstore and left its embedded server running there
    default = Settings().data_dir
    assert "ragstore-tests-home-" in str(default), default
    assert not default.is_relative_to(Path.home() / ".local")
