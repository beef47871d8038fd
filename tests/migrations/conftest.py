"""A database brought to the head revision, with the settings a Store opens it with: what
the revision tests fill with data before going down and up again."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database


@pytest.fixture()
def upgraded(
    empty_database_url: str, settings: Settings, tmp_path: Path
) -> tuple[Database, Settings]:
    db = Database(empty_database_url)
    migrations.upgrade(db)
    own = settings.model_copy(
        update={"data_dir": tmp_path, "database_url": SecretStr(empty_database_url)}
    )
    return db, own
