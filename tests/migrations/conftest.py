"""A database brought to the head revision, with the settings a Store opens it with: what
the revision tests fill with data before going down and up again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ragstore.config import Settings
from ragstore.db.database import Database
from tests.conftest import TEMPLATE, create_database, drop_database


@pytest.fixture()
def upgraded(
    pg_admin_uri: str, template_url: str, settings: Settings, tmp_path: Path
) -> Iterator[tuple[Database, Settings]]:
    """A copy of the session's template, which ``migrations.upgrade`` brought from nothing
    to the head (as each test here did again, every revision run per test), dropped after
    the test. The migrations add nothing a copy leaves out (no role, no database-level
    setting: ``ALTER DATABASE``)."""
    url = create_database(pg_admin_uri, TEMPLATE)
    db = Database(url)
    own = settings.model_copy(update={"data_dir": tmp_path, "database_url": SecretStr(url)})
    try:
        yield db, own
    finally:
        db.close()
        drop_database(pg_admin_uri, url)
