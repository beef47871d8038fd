"""The fault suite's fixtures: one real server (auth off) per module on the module's
database, shared by every test of the module to keep the suite fast."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db.database import Database
from tests.api.conftest import running_server, with_


@pytest.fixture(scope="module")
def open_url(settings: Settings) -> Iterator[str]:
    """A server with auth off on this module's database."""
    with running_server(with_(settings, auth="off")) as url:
        yield url


@pytest.fixture(scope="module")
def keys(settings: Settings) -> Iterator[KeyStore]:
    """The key store of this module's database."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    yield KeyStore(db)
    db.close()
