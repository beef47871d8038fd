"""Fixtures of the console tests: the key store of the module's database."""

from __future__ import annotations

from collections.abc import Iterator

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
