"""``ragstore.Store``: the in-process API, no server needed.

``Store()`` opens the embedded database under ``RAGSTORE_DATA_DIR`` (started on first
use); ``Store("postgresql://...")`` any PostgreSQL with pgvector. Its verbs, their
options and the shape of what they return are those of the HTTP :class:`ragstore.Client`
and :class:`ragstore.AsyncClient` (the same pydantic schemas serialise both), so code
moves between in-process and server by changing the line that builds the object. Errors
are the same :class:`~ragstore.errors.RagstoreError` subclasses everywhere.

The model is loaded on the first call that needs it (an add or a vector/hybrid search),
once per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import operator
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from ragstore import forks
from ragstore.config import Settings
from ragstore.db import catalog, documents, field_indexes, repository, texts
from ragstore.db.errors import translated
from ragstore.errors import (
    DatabaseUnavailableError,
    DocumentNotFoundError,
    InputError,
    InvalidFilterError,
    ModelMismatchError,
    ModelNotFoundError,
    RagstoreError,
    all_error_classes,
)
from ragstore.ingest import texts as text_service
from ragstore.profiles import check_profile, get_settings, settings_with
from ragstore.runtime import Runtime
from ragstore.schemas import (
    CollectionPublic,
    DocumentPublic,
    FieldIndexPublic,
    FieldsPublic,
    HitPublic,
    IndexedFieldPublic,
    SearchResponse,
    TextPublic,
    TextsAdded,
)
from ragstore.validation import (
    a_type,
    check_context,
    check_value,
    document_filters,
    flag,
    id_list,
    integral,
    page_limit,
    row_id,
    storable_text,
)

__all__ = ["Store"]

_F = TypeVar("_F", bound=Callable[..., Any])
_CLOSED = "this Store is closed; open a new Store() (or keep using it inside its with block)"


def _call(method: _F) -> _F:
    """A verb counted as in flight while it runs, so that :meth:`Store.close` waits for it:
    closed under a call that another thread had started, the pool failed that call's next
    statement with "the database cannot be reached (the pool 'ragstore' is already
    closed)", after its earlier statements had run."""

    @functools.wraps(method)
    def tracked(self: Store, *args: Any, **kwargs: Any) -> Any:
        with self.in_call():
            return method(self, *args, **kwargs)

    return cast(_F, tracked)


class Store:
    """A ragstore database opened in this process; close it (or use ``with``) when done.

    ``url``: a PostgreSQL URL; ``None`` uses ``RAGSTORE_DATABASE_URL`` or, when that is
    unset, the embedded server under ``data_dir`` (default ``RAGSTORE_DATA_DIR``).
    ``settings`` replaces the environment entirely (tests, embedding apps); its profile
    refuses what it refuses from the environment (profile prod: ConfigError).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | Path | None = None,
        model: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        overrides: dict[str, Any] = {}
        if url is not None:
            overrides["database_url"] = url
        if data_dir is not None:
            overrides["data_dir"] = Path(data_dir)
        if model is not None:
            overrides["model"] = model
        if settings is None:
            settings = get_settings(**overrides)
        elif overrides:
            settings = settings_with(settings, **overrides)
        else:  # built by the caller, maybe without get_settings: refused as it would be
            check_profile(settings)
        self._runtime = Runtime(settings)
        self._owns = True
        self._start_tracking()

    @classmethod
    def from_runtime(cls, rt: Runtime) -> Store:
        """A Store over a runtime someone else owns (the API server's); close leaves it open."""
        store = cls.__new__(cls)
        store._runtime = rt
        store._owns = False
        store._start_tracking()
        return store

    def _start_tracking(self) -> None:
        """Open, with no call in flight; and known to :mod:`ragstore.forks`."""
        self._closed = False
        self._closing = False
        self._calls = threading.Condition()
        self._in_flight: Counter[int] = Counter()  # calls in flight, by thread
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child only the forking thread lives: the calls other threads had in
        flight at the fork never end here, so they are forgotten (close waited for them
        forever, or raised TimeoutError, and every call after it was refused), and the
        lock may have been held by one of them at the fork: a new one. The runtime forgets
        the parent's connections itself."""
        me = threading.get_ident()
        mine = self._in_flight.get(me, 0)
        self._calls = threading.Condition()
        self._in_flight = Counter({me: mine}) if mine else Counter()

    @property
    def _rt(self) -> Runtime:
        """The runtime, or RuntimeError once this Store is closed: the runtime reopens its
        pool on the next call, so a closed Store went on working with a new pool (and its
        connections) that nothing would close. The Client raises RuntimeError too."""
        if self._closed:
            raise RuntimeError(_CLOSED)
        return self._runtime

    @property
    def runtime(self) -> Runtime:
        """The underlying runtime (settings, pool, loaded models) for the services."""
        return self._rt

    def close(self, timeout: float | None = None) -> None:
        """Close the database pool (a Store from :meth:`from_runtime` leaves it open);
        closing twice does nothing, any other use afterwards raises RuntimeError.

        Calls other threads have in flight finish first (close waits for them); calls
        made once close has begun raise RuntimeError. A call of the closing thread's own
        (close from a signal handler that interrupted it) is not waited for: it could
        never finish first.

        ``timeout``: at most this many seconds to wait for those calls (``None``: as long
        as they take; a call stuck on a lock held forever kept close waiting forever).
        When it expires, TimeoutError says how many are still running; the pool is left
        open under them, so that none of them fails half-way, and new calls are still
        refused: call ``close()`` again to wait for them once more."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise InputError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        if not self._owns:
            return
        me = threading.get_ident()
        with self._calls:
            self._closing = True
            if not self._calls.wait_for(lambda: not set(self._in_flight) - {me}, timeout):
                busy = sum(n for thread, n in self._in_flight.items() if thread != me)
                raise TimeoutError(
                    f"this Store is not closed: {busy} call(s) of other threads were still "
                    f"running after {timeout:g} s; the database pool is left open so they "
                    "can finish (new calls are refused): call close() again to wait for "
                    "them"
                )
            if not self._closed:
                self._runtime.close()
                self._closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def in_call(self) -> Iterator[Runtime]:
        """The runtime, for work done beside the verbs (an integration's own read: the MCP
        server's ``get_document``, the LlamaIndex embedding), counted as a call in flight
        while the block runs, as each verb is: :meth:`close` waits for it, and a block
        begun once close has begun raises RuntimeError. Through :attr:`runtime` such work
        was not counted: a close from another thread closed the pool under it, and its
        next statement failed with "the pool 'ragstore' is already closed"."""
        me = threading.get_ident()
        with self._calls:
            if self._closing:
                raise RuntimeError(_CLOSED)
            self._in_flight[me] += 1
        try:
            yield self._runtime
        except DatabaseUnavailableError as exc:
            if getattr(exc, "pool_closed", False):  # closed by this thread's signal handler
                raise RuntimeError(_CLOSED) from exc
            raise
        finally:
            with self._calls:
                self._in_flight[me] -= 1
                if not self._in_flight[me]:
                    del self._in_flight[me]
                self._calls.notify_all()

    # --- collections ---------------------------------------------------------------------

    @_call
    def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        settings: Mapping[str, Any] | None = None,
        dimension: int | None = None,
        distance: str | None = None,
    ) -> dict[str, Any]:
        """A new collection bound to ``model``: a built-in, any key pinned with ``ragstore
        models add`` (``NAME`` or ``NAME@REVISION``), or, with ``dimension``, a name for
        vectors made outside ragstore (searched and added by vector only)."""
        from ragstore.modelops.specs import find_model

        if model is not None and not model.strip():
            # "" fell through ``model or default`` to the default model: a caller whose
            # variable came out empty got a collection bound to a model it did not name
            raise InputError(
                "model is empty; name an embedding model (see `ragstore models list`), or "
                "leave it out for the default"
            )
        if dimension is not None:
            if not integral(dimension):
                # True passed the range check as 1 and failed in the database ("column
                # dimension is of type integer but expression is of type boolean"), "4"
                # with a bare TypeError
                raise InputError(f"dimension must be an integer, got {dimension!r}")
            dimension = operator.index(dimension)  # a NumPy one, as the Client sends it
        if settings is not None and not isinstance(settings, Mapping):
            # a list failed in dict() with a bare TypeError
            raise InputError(
                f"settings is {a_type(settings)}, not a mapping of collection "
                'settings; pass e.g. {"bm25_k1": 1.2}'
            )
        ref = model or self._rt.settings.model
        if dimension is None:
            spec = find_model(self._rt, ref).spec
        else:
            from ragstore.imports.service import declared_spec

            try:
                spec = find_model(self._rt, ref).spec
                if spec.dimension != dimension:
                    raise InputError(
                        f"model {spec.key} has {spec.dimension} dimensions, "
                        f"not {dimension}; leave out dimension or name another"
                    )
            except ModelNotFoundError:
                spec = declared_spec(self._rt, ref, dimension, distance, flags=False)
        if distance is not None and distance != spec.distance:
            # a collection's distance is its model's: ignored, distance="ip" on a model
            # pinned with cosine made a cosine collection without a word
            raise ModelMismatchError(
                f"model {spec.key} is pinned with distance {spec.distance}, not {distance}; "
                "leave out distance, or name another model"
            )
        with self._rt.db.connection() as conn, translated(f"creating collection {name!r}"):
            coll = repository.create_collection(conn, name, spec, dict(settings or {}))
            return _dump(CollectionPublic(**catalog.collection_detail(conn, coll)))

    @_call
    def list_collections(self) -> list[dict[str, Any]]:
        with self._rt.db.connection() as conn, translated("listing collections"):
            return [
                _dump(
                    CollectionPublic(
                        **catalog.collection_detail(conn, repository.get_collection(conn, n))
                    )
                )
                for n in catalog.collection_names(conn)
            ]

    @_call
    def get_collection(self, name: str) -> dict[str, Any]:
        coll = self._rt.collection(name)
        with self._rt.db.connection() as conn, translated(f"reading collection {name!r}"):
            return _dump(CollectionPublic(**catalog.collection_detail(conn, coll)))

    @_call
    def fields(self, collection: str) -> dict[str, Any]:
        """The fields a search filter (``where``) can name in ``collection``: the
        built-ins, and the metadata paths of a sample of its documents and chunks with
        their JSON types and a few values (search/fields.py)."""
        from ragstore.search.fields import describe_fields

        return _dump(FieldsPublic(**describe_fields(self._rt, self._rt.collection(collection))))

    @_call
    def field_indexes(self) -> list[dict[str, Any]]:
        """The metadata fields indexed for range filters, in every collection."""
        found = field_indexes.listed(self._rt.db)
        return [_dump(IndexedFieldPublic(field=i.field, type=i.kind)) for i in found]

    @_call
    def index_field(self, field: str, type: str) -> dict[str, Any]:
        """Index a metadata field (a path as a filter names it) for range filters on
        ``type`` ("number" or "string") values, in every collection: a selective range is
        then ranked exactly among the chunks that pass (``ragstore db index-field``). The
        build is concurrent (writers go on) and waits for older transactions."""
        changed = field_indexes.declare(
            self._rt.db, field, type, wait_s=field_indexes.REQUEST_WAIT_S
        )
        return _dump(FieldIndexPublic(field=field, type=type, indexed=True, changed=changed))

    @_call
    def drop_field_index(self, field: str, type: str) -> dict[str, Any]:
        """Drop a field's range-filter indexes; ``changed`` is False when there were none."""
        changed = field_indexes.declare(
            self._rt.db, field, type, drop=True, wait_s=field_indexes.REQUEST_WAIT_S
        )
        return _dump(FieldIndexPublic(field=field, type=type, indexed=False, changed=changed))

    @_call
    def delete_collection(self, name: str) -> None:
        coll = self._rt.collection(name)
        with self._rt.db.connection() as conn, translated(f"deleting collection {name!r}"):
            catalog.delete_collection(conn, coll)

    # --- texts (documents by caller-given id) --------------------------------------------

    @_call
    def add_texts(
        self,
        collection: str,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        *,
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> dict[str, Any]:
        """Add or update texts under ``ids`` (random when omitted), creating the collection
        with the default model when it is missing. Unchanged texts embed nothing; with
        ``vectors`` (one per text) each text is stored whole with its vector."""
        report = text_service.add_texts(
            self._rt, collection, texts, metadatas, ids, vectors=vectors
        )
        return _dump(TextsAdded(**report.as_dict()))

    @_call
    def get_texts(self, collection: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The texts stored under ``ids``, in that order; unknown ids are left out."""
        wanted = id_list(ids, "ids")
        coll = self._rt.collection(collection)
        with self._rt.db.connection() as conn, translated(f"reading texts of {collection!r}"):
            found = texts.texts_by_ids(conn, coll.id, wanted)
        return [
            _dump(TextPublic(id=t.id, document_id=t.document_id, text=t.text, metadata=t.metadata))
            for t in found
        ]

    @_call
    def delete_texts(self, collection: str, ids: Sequence[str]) -> int:
        """Delete the documents stored under ``ids``; unknown ids are ignored. The count
        deleted is returned."""
        doomed = id_list(ids, "ids")
        coll = self._rt.collection(collection)
        with self._rt.db.connection() as conn, translated(f"deleting texts of {collection!r}"):
            documents.hold_live(conn, coll)  # not the chunk set a model switch just retired
            return documents.delete_documents(conn, coll.id, doomed)

    @_call
    def text_ids(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """The ids of the texts (documents' sources) that ``where`` (search's filter
        language) keeps, among ``ids`` when given, in id order: a document is kept when
        one of its chunks is, as search finds it. No filter: every text."""
        return text_ids_page(self._rt, collection, where=where, ids=ids)[0]

    @_call
    def delete_texts_where(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Delete, in one transaction, the texts :meth:`text_ids` lists for ``where`` and
        ``ids`` (neither: every document of the collection, which stays with its model
        and settings); the ids deleted are returned. A failure deletes none: deleted in
        batches, one failing halfway left the collection part emptied. A text changed
        by another writer while this call waited for it is deleted only if it still
        matches (:func:`ragstore.db.texts.delete_matching`)."""
        coll, selection = _text_selection(self._rt, collection, where, ids, deleting=True)
        with self._rt.db.connection() as conn, translated(f"deleting texts of {collection!r}"):
            documents.hold_live(conn, coll)  # not the chunk set a model switch just retired
            return texts.delete_matching(conn, coll.id, selection)

    # --- documents -----------------------------------------------------------------------

    @_call
    def add_document(
        self,
        collection: str,
        name: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        """Ingest text as document ``name`` (its suffix picks the parser: ``notes.md``),
        creating the collection when missing; re-adding unchanged text is ``unchanged``.
        ``background`` exists for parity with the clients; in-process it runs now."""
        from ragstore.ingest.documents import NewDocument, add_documents
        from ragstore.ingest.service import created_for_this_write
        from ragstore.uploads import names, staging

        names.new_name(name)
        storable_text(text, f"{name}: the text")
        meta = _metadata(metadata)  # before the collection is made
        coll, created = self._rt.open_or_create(collection)
        # made here and the text not stored: the collection is not left behind
        with (
            staging.staging_area(self._rt.settings) as area,
            created_for_this_write(self._rt, coll, created),
        ):
            doc = NewDocument(name, area.write(text.encode("utf-8")), meta)
            outcome = add_documents(self._rt, collection, [doc])[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.document is not None
        return self._document(collection, outcome.document, outcome.status)

    @_call
    def ingest(
        self,
        collection: str,
        paths: str | Path | Sequence[str | Path],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Ingest files and folders (as ``ragstore ingest``; one may be given bare):
        ``{"data": [documents]}`` with each one's ``status`` (added/updated/unchanged), and
        ``skipped``: links inside a folder that point outside it, not followed, and pipes,
        devices and links to nothing in it, each with why. A failure
        is raised; the files that did not fail are stored all the same, and the error's
        ``problem_members`` lists both (``stored``, ``failed``), as the HTTP API's problem
        body does."""
        from ragstore.ingest import ingest_paths

        _named(collection)
        # one path given bare is that path, not its characters (Path("/") among them,
        # which would walk the whole disk)
        given = [paths] if isinstance(paths, (str, Path)) else paths
        meta = _metadata(metadata)
        report = ingest_paths(
            self._rt, [Path(p) for p in given], collection=collection, metadata=meta
        )
        kept = [o for o in report.outcomes if o.status in ("added", "updated", "unchanged")]
        # each document as the ingest's own transaction left it: read afresh, a concurrent
        # writer's row could stand beside this call's status. A file skipped as unchanged
        # before parsing has no such row; its stored one is read.
        rows = {o.source: o.document for o in kept if o.document is not None}
        unread = [o.source for o in kept if o.document is None]
        if unread:
            coll = self._rt.collection(collection)
            with (
                self._rt.db.connection() as conn,
                translated(f"reading documents of {collection!r}"),
            ):
                for source in unread:
                    rows[source] = catalog.document_by_source(conn, coll, source)
        docs = [self._document(collection, rows[o.source], o.status) for o in kept]
        unattempted = [o for o in report.outcomes if o.status == "not_attempted"]
        if report.failed or unattempted:  # the others are stored (each document whole)
            # a stopped ingest raises the error that stopped it (not another file's)
            stop = report.stopped_by
            first = next(
                (o for o in report.failed if stop is not None and o.exc is stop),
                ((unattempted or report.failed) if stop else (report.failed or unattempted))[0],
            )
            cls = next((c for c in all_error_classes() if c.code == first.code), RagstoreError)
            err = cls(first.error or "ingest failed")
            # the files a stopped ingest did not attempt fail too (with the stopping error's
            # code), and are named besides in 'not_attempted': running it again resumes
            err.problem_members = {
                "stored": docs,
                "failed": [
                    {"name": o.source, "code": o.code, "detail": o.error}
                    for o in [*report.failed, *unattempted]
                ],
            }
            if docs:
                err.message += (
                    f" ({len(docs)} other file(s) were stored: see the error's "
                    "problem_members['stored'])"
                )
            if report.stopped_by is not None:
                err.problem_members["not_attempted"] = [o.source for o in unattempted]
                err.message += (
                    f" (the ingest stopped there: {len(unattempted)} file(s) not attempted, "
                    "see problem_members['not_attempted']; calling it again resumes, what is "
                    "stored is skipped as unchanged)"
                )
            raise err
        skipped = [
            {"source": o.source, "code": o.code, "detail": o.error}
            for o in report.outcomes
            if o.status == "skipped"
        ]
        return {"data": docs, "count": len(docs), "next_cursor": None, "skipped": skipped}

    @_call
    def list_documents(
        self,
        collection: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        format: str | None = None,
        source_prefix: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``{"data": [...], "count": n, "next_cursor": str | None}``.

        ``source`` keeps the one document of that exact source: an absolute path as
        stored, a relative one an upload's name (as the HTTP route reads it)."""
        from ragstore.paging import decode_cursor, encode_cursor, split_page
        from ragstore.uploads import names

        limit = page_limit(limit)  # a NumPy integer as the int it is
        # checked by the HTTP route's own check: a NaN or a NUL reached PostgreSQL and came
        # back as "invalid input syntax for type json", naming neither the value nor where,
        # and a source_prefix longer than the route takes answered an empty page
        document_filters(format, source_prefix, source, InvalidFilterError)
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise InvalidFilterError(
                    'metadata filter must be a JSON object, e.g. {"team": "ops"}'
                )
            check_value(metadata, "the metadata filter", InvalidFilterError, json_only=True)
        coll = self._rt.collection(collection)
        exact = (
            None if source is None else names.exact_source(self._rt.settings, collection, source)
        )
        rows: list[dict[str, Any]] = []
        more = False
        if source is None or exact is not None:  # else a name no upload can have: none
            with (
                self._rt.db.connection() as conn,
                translated(f"listing documents of {collection!r}"),
            ):
                rows, more = split_page(
                    catalog.documents_page(
                        conn,
                        coll.id,
                        after=decode_cursor(cursor, coll.id),
                        limit=limit + 1,
                        fmt=format,
                        source_prefix=names.source_prefix(
                            self._rt.settings, collection, source_prefix
                        ),
                        metadata=dict(metadata) if metadata is not None else None,
                        source=exact,
                    ),
                    limit,
                )
        data = [self._document(collection, r) for r in rows]
        nxt = encode_cursor(rows[-1]["id"], coll.id) if more else None
        return {"data": data, "count": len(data), "next_cursor": nxt}

    def iter_documents(
        self, collection: str, *, page_size: int = 100, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every document, following the cursor from page to page."""
        cursor: str | None = None
        while True:
            page = self.list_documents(collection, cursor=cursor, limit=page_size, **filters)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    @_call
    def get_document(self, collection: str, document_id: int) -> dict[str, Any]:
        document_id = row_id(document_id, "document")
        coll = self._rt.collection(collection)
        with self._rt.db.connection() as conn, translated(f"reading document {document_id}"):
            return self._document(collection, catalog.document(conn, coll, document_id))

    def find_document(self, collection: str, source: str) -> dict[str, Any]:
        """The document of this source, as :meth:`get_document` answers it: an absolute
        path is a source as stored, a relative one the name it was uploaded under
        (``notes/tea.md``). A ``DocumentNotFoundError`` names ``source`` when none is; the
        ``Client`` has the same method, so a script finds a document by name either way."""
        found = self.list_documents(collection, source=source, limit=1)["data"]
        if not found:
            raise DocumentNotFoundError.missing(source, collection)
        return dict(found[0])

    @_call
    def delete_document(self, collection: str, document_id: int) -> None:
        document_id = row_id(document_id, "document")
        coll = self._rt.collection(collection)
        with self._rt.db.connection() as conn, translated(f"deleting document {document_id}"):
            catalog.delete_document(conn, coll, document_id)

    def _document(
        self, collection: str, doc: dict[str, Any], status: str | None = None
    ) -> dict[str, Any]:
        from ragstore.uploads import names

        # as the HTTP API answers it (api.routes.documents._public): an upload's source
        # and metadata path are its name, so the CLI prints the same JSON either way
        name = names.source_name(self._rt.settings, collection, doc["source"])
        source, meta = names.answered(doc["source"], name, doc["metadata"])
        return _dump(
            DocumentPublic(
                collection=collection,
                name=name,
                status=status,  # type: ignore[arg-type]
                **{**doc, "source": source, "metadata": meta},
            )
        )

    # --- search --------------------------------------------------------------------------

    @_call
    def search(
        self,
        collection: str,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 10,
        mode: str | None = None,
        where: Mapping[str, Any] | None = None,
        context: int | str | None = None,
        explain: bool = False,
        ef_search: int | None = None,
        rrf_k: float | None = None,
        vector_weight: float | None = None,
        fulltext_weight: float | None = None,
        sections: bool = True,
        mmr: bool = False,
        fetch_k: int | None = None,
        lambda_mult: float | None = None,
    ) -> dict[str, Any]:
        """The best ``k`` chunks for ``query`` (text) or ``vector`` (an embedding of the
        collection's model), or both; ``mode`` defaults to hybrid (vector with a vector
        alone). ``context``: neighbouring chunks (0-50) or ``"section"``. Each section is
        returned once (``section_score``, ``section_hits``); ``sections=False`` ranks
        chunks alone. ``mmr``: maximal marginal relevance, ``k`` hits picked among the
        ranking's best ``fetch_k`` (default 20, at least ``k``) for relevance and diversity
        (``lambda_mult``, default 0.5: 1 most relevant, 0 most diverse), in the order
        picked, each with the ranking's score."""
        _named(collection)
        return _dump(
            search_response(
                self._rt,
                collection,
                query,
                vector=vector,
                k=k,
                mode=mode,
                where=where,
                context=context,
                explain=explain,
                ef_search=ef_search,
                rrf_k=rrf_k,
                vector_weight=vector_weight,
                fulltext_weight=fulltext_weight,
                sections=sections,
                mmr=mmr,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
            )
        )


def _named(collection: Any) -> None:
    """InputError unless ``collection`` is a string (a collection's name). ``None`` was
    taken by :meth:`Store.search` and :meth:`Store.ingest` as the default collection
    (``RAGSTORE_COLLECTION``), which neither their signatures nor docs/python.md offer
    and every other method refuses as an invalid collection name: a variable left
    ``None`` searched another collection than the caller's, or ingested into it."""
    if not isinstance(collection, str):
        repository.check_name(collection)


def text_ids_page(
    rt: Runtime,
    collection: str,
    *,
    where: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> tuple[list[str], str | None]:
    """:meth:`Store.text_ids` as the Store and the HTTP route (``POST .../texts/query``)
    run it, the route a page at a time: the ids after ``cursor``'s, at most ``limit``
    (None: all), and the cursor of the next page (None on the last).

    The cursor carries the collection's id: one from another collection of the name (it
    was deleted and made again since that page) raises CursorStaleError, where the walk
    went on into the new collection's texts as if they followed the old one's."""
    from ragstore.paging import decode_text_cursor, encode_text_cursor, split_page

    coll, selection = _text_selection(rt, collection, where, ids)
    after = decode_text_cursor(cursor, coll.id)
    asked = None if limit is None else limit + 1  # the row past the page says if one follows
    with rt.db.connection() as conn, translated(f"listing texts of {collection!r}"):
        rows = texts.sources_matching(conn, coll.id, selection, after=after, limit=asked)
    if limit is None:
        return rows, None
    page, more = split_page(rows, limit)
    return page, (encode_text_cursor(page[-1], coll.id) if more else None)


def _text_selection(
    rt: Runtime,
    collection: str,
    where: Mapping[str, Any] | None,
    ids: Sequence[str] | None,
    *,
    deleting: bool = False,
) -> tuple[repository.Collection, texts.TextSelection]:
    """The collection and the texts of it that ``where`` and ``ids`` select, as listing
    and deleting texts check them: the filter, then the ids, then the collection (which
    must exist), each refused with its own error before any statement runs.

    ``deleting``: a ``where`` that restricts nothing (``{}``: a filter built from
    conditions that all dropped out) with no ``ids`` is refused, not read as "every
    text": it emptied the collection. Leaving ``where`` out says that, on purpose."""
    from ragstore.search.filters import compile_filter

    compiled = None if where is None else compile_filter(where)
    among = None if ids is None else id_list(ids, "ids")
    if deleting and compiled is not None and compiled.restricts_nothing and among is None:
        raise InvalidFilterError(
            f"the where filter restricts nothing (it keeps every text), and a delete by it "
            f"would empty collection {collection!r}: give a filter that selects the "
            "texts to delete, or leave out where (and ids) to delete every text"
        )
    coll = rt.collection(collection)
    if compiled is None:
        return coll, texts.TextSelection(ids=among)
    return coll, texts.TextSelection(compiled.condition, compiled.params, among)


def search_response(
    rt: Runtime,
    collection: str,
    query: str | None,
    *,
    vector: Sequence[float] | None = None,
    k: int = 10,
    mode: str | None = None,
    where: Mapping[str, Any] | None = None,
    context: int | str | None = None,
    explain: bool = False,
    ef_search: int | None = None,
    rrf_k: float | None = None,
    vector_weight: float | None = None,
    fulltext_weight: float | None = None,
    sections: bool = True,
    mmr: bool = False,
    fetch_k: int | None = None,
    lambda_mult: float | None = None,
) -> SearchResponse:
    """One search as the Store and the HTTP route run it: hits (with context if asked),
    timing, and with ``explain`` the plan of the lists and their fusion."""
    from ragstore.search import service
    from ragstore.search.context import check_answer_size, with_context
    from ragstore.search.hybrid import FusionParams
    from ragstore.search.plan import search_plan

    t0 = time.perf_counter()
    flag(explain, "explain")  # as the HTTP schema checks them (see validation.flag)
    flag(sections, "sections")
    flag(mmr, "mmr")
    if where is not None and not isinstance(where, Mapping):
        # in the HTTP schema's words (schemas._filter_object), naming the field: the
        # Store's and the MCP tool's said only "the filter must be a JSON object"
        from ragstore.search.filters import not_an_object

        raise not_an_object(where, "where")
    resolved = service.resolve_mode(mode, query, vector)
    context_mode = check_context(context)  # as the HTTP schema takes it, for every surface
    # before any statement: an answer of k hits each with its context can take hundreds
    # of megabytes to build (RAGSTORE_MAX_ANSWER_CHUNKS bounds it)
    check_answer_size(k, context_mode, rt.settings.max_answer_chunks)

    defaults = FusionParams()
    fusion = FusionParams(
        defaults.k if rrf_k is None else rrf_k,
        defaults.vector_weight if vector_weight is None else vector_weight,
        defaults.fulltext_weight if fulltext_weight is None else fulltext_weight,
    )

    def run_search() -> list[Any]:
        return service.search(
            rt,
            query,
            collection=collection,
            k=k,
            mode=resolved,
            where=where,
            ef_search=ef_search,
            explain=explain,
            fusion=fusion,
            vector=vector,
            sections=sections,
            mmr=mmr,
            fetch_k=fetch_k,
            lambda_mult=lambda_mult,
        )

    hits = run_search()
    if context_mode is not None:
        # a document written since the search: the search runs again (with_context)
        hits = with_context(rt, hits, context_mode, search_again=run_search)
    took = round((time.perf_counter() - t0) * 1000, 3)
    plan = None
    if explain:
        plan = search_plan(
            rt,
            query or "",
            collection,
            k=k,
            mode=resolved,
            where=where,
            ef_search=ef_search,
            fusion=fusion,
            sections=sections,
            mmr=(fetch_k, lambda_mult) if mmr else None,
        )
    data = [hit_public(h) for h in hits]
    return SearchResponse(
        collection=collection, query=query, data=data, count=len(data), took_ms=took, plan=plan
    )


def hit_public(hit: Any) -> HitPublic:
    """A hit (with or without context) as the API's schema: an upload's ``source`` and
    metadata ``path`` are its name (:func:`ragstore.uploads.names.answered`), as in the
    documents answers; the hit keeps the stored source (eval, sections read it)."""
    from ragstore.uploads import names

    data = dataclasses.asdict(hit)
    data["source"], data["metadata"] = names.answered(hit.source, hit.name, data["metadata"])
    known = set(HitPublic.model_fields)
    return HitPublic(**{k: v for k, v in data.items() if k in known})


def _metadata(metadata: Any) -> dict[str, Any]:
    """A document's ``metadata`` as a dict once checked, as the Client checks it: a list or
    a string passed the value check and failed in ``dict()`` with a bare ValueError or
    TypeError (``add_document`` having made the collection already)."""
    meta = metadata or {}
    if not isinstance(meta, Mapping):
        raise InputError(f"metadata is {a_type(meta)}, not a JSON object")
    check_value(meta, "metadata", paths=True)
    return dict(meta)


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(mode="json")
    return out
