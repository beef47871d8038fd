"""The objects one ragstore process works with: settings, database, embedders.

Built by the CLI per command and by the API in its lifespan; nothing here happens at
import time. The database is opened, checked and schema-verified on first use.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ragstore import forks
from ragstore.config import Settings
from ragstore.db import changes, lsn, migrations, native, repository, routing
from ragstore.db.database import Database
from ragstore.db.errors import translated
from ragstore.embedding.base import Embedder
from ragstore.embedding.local import set_threads
from ragstore.embedding.registry import LOCAL_PROVIDER, load_embedder
from ragstore.errors import CollectionNotFoundError, ConflictError
from ragstore.models import ModelSpec
from ragstore.profiles import get_settings

COLLECTION_CACHE_S = 1.0  # how stale a cached collection may be after another process changes it


class Runtime:
    """Lazily opened resources shared by the services; close it when done."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._db: Database | None = None
        self._router: routing.ReadRouter | None = None
        # the first requests of a server arrive together: one of them opens the database
        # and the router, the others wait (a second one built and dropped would leave its
        # pool unclosed, for the garbage collector to stop on one of the pool's own threads)
        self._open_lock = threading.RLock()
        self._read_only = False
        self._embedders: dict[ModelSpec, Embedder] = {}
        # keyed by the server the lookup ran on too (see cached_collection)
        self._collections: dict[tuple[str, str], tuple[float, int, repository.Collection]] = {}
        self._collections_lock = threading.Lock()
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: new locks, as a parent thread may have held one at the fork
        (the databases forget their connections themselves, :mod:`ragstore.forks`)."""
        self._open_lock = threading.RLock()
        self._collections_lock = threading.Lock()

    @property
    def db(self) -> Database:
        """The checked database with a current schema.

        A brand-new embedded database is initialised on first use (there is nothing to
        lose); any other schema that differs from the code is refused with the command
        that fixes it. Inside a routed read (:func:`ragstore.db.routing.routed`) this is
        the server the router picked for the request, a replica or the primary.
        """
        route = routing.current_route()
        if route is not None and route.router is self._router:
            return route.database()
        return self.primary

    @property
    def primary(self) -> Database:
        """The primary (the server RAGSTORE_DATABASE_URL names), even inside a routed read."""
        if self._db is None:
            with self._open_lock:
                if self._db is None:
                    self._db = self._open_primary()
        return self._db

    @property
    def opened_primary(self) -> Database | None:
        """The primary if this runtime has opened it, else None (never opens it): for
        figures read about the process (its pool), which a probe must not create."""
        return self._db

    @property
    def opened_read_only(self) -> bool | None:
        """:attr:`read_only` if this runtime has opened the primary, else None (never opens
        it): an attribute read the event loop may make, where opening would block it."""
        return self._read_only if self._db is not None else None

    @property
    def opened_router(self) -> routing.ReadRouter | None:
        """The read router if this runtime has made it, else None (never makes it): for
        its replicas' pool figures, which a scrape must not create."""
        return self._router

    def _open_primary(self) -> Database:
        db = Database.from_settings(self.settings)
        db.check_server()
        with db.connect(autocommit=True) as conn, translated(f"inspecting {db.where}"):
            read_only = lsn.in_recovery(conn)
        if db.embedded and not read_only and migrations.status(db).current is None:
            migrations.upgrade(db)
        migrations.ensure_current(db)
        db.guard_schema(migrations.still_current(db.where))
        if db.embedded and not read_only:
            native.sync(
                db,
                native.library_dir(self.settings.data_dir),
                enabled=self.settings.native_bm25,
                cc=self.settings.native_bm25_cc,
                prebuilt=(
                    Path(self.settings.native_bm25_prebuilt)
                    if self.settings.native_bm25_prebuilt
                    else None
                ),
            )
        self._read_only = read_only
        return db

    @property
    def read_only(self) -> bool:
        """True when RAGSTORE_DATABASE_URL names a hot standby: this process only reads."""
        self.primary  # noqa: B018
        return self._read_only

    @property
    def router(self) -> routing.ReadRouter:
        """Where reads go: the replicas of RAGSTORE_READ_DATABASE_URLS, else the primary."""
        if self._router is None:
            with self._open_lock:
                if self._router is None:
                    s = self.settings
                    self._router = routing.ReadRouter(
                        self.primary,
                        s.replica_urls,
                        max_lag_s=s.max_replica_lag_s,
                        wait_s=s.replica_wait_s,
                        pool_min_size=s.pool_min_size,
                        pool_max_size=s.pool_max_size,
                        connect_timeout_s=s.connect_timeout_s,
                        read_timeout_s=routing.replica_read_timeout_s(s.search_timeout_s),
                    )
        return self._router

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
            if self.settings.embed_threads and spec.provider == LOCAL_PROVIDER:
                set_threads(self.settings.embed_threads)
            self._embedders[spec] = load_embedder(
                spec,
                device=self.settings.device,
                batch_size=self.settings.embed_batch_size,
                concurrency=self.settings.embed_concurrency,
            )
        return self._embedders[spec]

    def collection(self, name: str, *, create: bool = False) -> repository.Collection:
        """The named collection; with ``create`` a missing one is made with the default model
        (``RAGSTORE_MODEL``: a built-in or any model pinned with ``ragstore models add``)."""
        if create:
            return self.open_or_create(name)[0]
        with self.db.connection() as conn, translated(f"opening collection {name!r}"):
            return repository.get_collection(conn, name)

    def open_or_create(self, name: str) -> tuple[repository.Collection, bool]:
        """The named collection, made with the default model when missing, and whether
        this call made it: a write that made it and then stored nothing removes it again
        (``ingest.service.created_for_this_write``)."""
        with self.db.connection() as conn, translated(f"opening collection {name!r}"):
            try:
                return repository.get_collection(conn, name), False
            except CollectionNotFoundError:
                pass
        from ragstore.modelops.specs import find_model  # it builds on this module

        spec = find_model(self, self.settings.model).spec
        with self.db.connection() as conn, translated(f"creating collection {name!r}"):
            try:
                return repository.create_collection(conn, name, spec), True
            except ConflictError:
                conn.rollback()
                return repository.get_collection(conn, name), False  # created meanwhile

    def cached_collection(self, name: str) -> repository.Collection:
        """The named collection, looked up at most once a second (the search path's).

        Saves searches a round trip. A change made in this process (a model switch, a
        collection created or deleted) is seen at once; one made by another process
        within :data:`COLLECTION_CACHE_S`: until then searches keep reading the space
        they read before, as a search started a moment earlier would. A read that
        carries its caller's last write (``RAGStore-LSN``, :func:`routing.reads_own_writes`)
        looks the row up afresh: that write may be another process's switch.

        Each server has its own entries: a replica that has not replayed a collection's
        deletion and re-creation (a new id) or its switch to another space shows the old
        one. Keyed by name alone, the old row a replica's read had cached was searched on
        the primary by the writer's own read right after (its read-your-writes), which
        found nothing of what it had just stored, and a row the primary's read cached sent
        a replica's search to a space it did not have yet.
        """
        now = time.monotonic()
        gen = changes.changes()  # before the lookup: a change made meanwhile outdates it
        key = (self.db.conninfo, name)
        with self._collections_lock:
            hit = self._collections.get(key)
        if (
            hit is not None
            and hit[1] == gen
            and now - hit[0] < COLLECTION_CACHE_S
            and not routing.reads_own_writes()
        ):
            return hit[2]
        coll = self.collection(name)
        with self._collections_lock:
            self._collections[key] = (now, gen, coll)
        return coll

    def recheck_collection(self, coll: repository.Collection) -> repository.Collection | None:
        """The named collection looked up afresh, when it is no longer ``coll`` (deleted and
        made again under its name, or switched to another space, by another process within
        :data:`COLLECTION_CACHE_S`); None when ``coll`` is still current. Raises
        CollectionNotFoundError when it was deleted. The cache then holds the fresh row.

        A search that read a cached row which another process had since deleted found no
        chunks under its id, and answered no hits (the new collection of that name held
        matches), or read a dropped vector table and answered "retry", which failed the
        same way for the rest of the second: such a search answers from the fresh row."""
        key = (self.db.conninfo, coll.name)
        now, gen = time.monotonic(), changes.changes()  # before the lookup, as above
        try:
            fresh = self.collection(coll.name)
        except CollectionNotFoundError:
            with self._collections_lock:
                self._collections.pop(key, None)
            raise
        with self._collections_lock:
            self._collections[key] = (now, gen, fresh)
        if fresh.id == coll.id and fresh.space_id == coll.space_id:
            return None
        return fresh

    def embedder_for(self, coll: repository.Collection) -> Embedder:
        """The embedder of the collection's active model (its weights checked against the pin)."""
        return self.embedder(coll.model)

    def close(self) -> None:
        if self._router is not None:
            self._router.close()
            self._router = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
