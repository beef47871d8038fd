"""The objects one ragstore process works with: settings, database, embedders.

Built by the CLI per command and by the API in its lifespan; nothing here happens at
import time. The database is opened, checked and schema-verified on first use.
"""

from __future__ import annotations

from typing import Any

from ragstore.config import Settings
from ragstore.db import migrations, repository
from ragstore.db.database import Database
from ragstore.db.errors import translated
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder
from ragstore.errors import CollectionNotFoundError, ConflictError
from ragstore.models import ModelSpec
from ragstore.profiles import get_settings


class Runtime:
    """Lazily opened resources shared by the services; close it when done."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._db: Database | None = None
        self._embedders: dict[ModelSpec, Embedder] = {}

    @property
    def db(self) -> Database:
        """The checked database with a current schema.

        A brand-new embedded database is initialised on first use (there is nothing to
        lose); any other schema that differs from the code is refused with the command
        that fixes it.
        """
        if self._db is None:
            db = Database.from_settings(self.settings)
            db.check_server()
            if db.embedded and migrations.status(db).current is None:
                migrations.upgrade(db)
            migrations.ensure_current(db)
            self._db = db
        return self._db

    def raw_db(self) -> Database:
        """The database without the schema check, for the ``db`` commands themselves."""
        if self._db is not None:
            return self._db
        db = Database.from_settings(self.settings)
        db.check_server()
        return db

    def embedder(self, spec: ModelSpec) -> Embedder:
        """The loaded model for a pinned spec (loaded once per process)."""
        if spec not in self._embedders:
            self._embedders[spec] = load_embedder(
                spec, device=self.settings.device, batch_size=self.settings.embed_batch_size)
        return self._embedders[spec]

    def collection(self, name: str, *, create: bool = False) -> repository.Collection:
        """The named collection; with ``create`` a missing one is made with the default model
        (``RAGSTORE_MODEL``: a built-in or any model pinned with ``ragstore models add``)."""
        with self.db.connection() as conn, translated(f"opening collection {name!r}"):
            try:
                return repository.get_collection(conn, name)
            except CollectionNotFoundError:
                if not create:
                    raise
        from ragstore.modelops.specs import find_model  # it builds on this module

        spec = find_model(self, self.settings.model).spec
        with self.db.connection() as conn, translated(f"creating collection {name!r}"):
            try:
                return repository.create_collection(conn, name, spec)
            except ConflictError:
                conn.rollback()
                return repository.get_collection(conn, name)  # created meanwhile

    def embedder_for(self, coll: repository.Collection) -> Embedder:
        """The embedder of the collection's active model (its weights checked against the pin)."""
        return self.embedder(coll.model)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

