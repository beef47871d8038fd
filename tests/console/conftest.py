"""Fixtures of the console tests: the key store of the module's database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db.database import Database


@pytest.fixture(scope="module")
def keys(settings: Settings) -> Iterator[KeyStore]:
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    yield KeyStore(db)
    db.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch options, on Debian's chromium, headless (no download)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 860}}
