"""/healthz (the process answers) and /readyz (database, schema and models are usable)."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from ragstore.api.deps import ApiState, Principal, Rt, State
from ragstore.api.errors import public_detail
from ragstore.api.errors_doc import responses
from ragstore.db import migrations, repository
from ragstore.db.database import CheckConnection, is_full
from ragstore.db.errors import translated
from ragstore.errors import (
    DatabaseUnavailableError,
    ModelError,
    NotFoundError,
    NotReadyError,
    RagstoreError,
)
from ragstore.http.bearer import bearer_token
from ragstore.http.coalesce import Coalesced
from ragstore.http.probes import on_key_check_thread, on_probe_thread
from ragstore.observability import metrics
from ragstore.runtime import Runtime
from ragstore.schemas import Health, Limits, Readiness, ReplicaPublic
from ragstore.wire import MAX_UPLOAD_FILES

log = logging.getLogger("ragstore.api")

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz(state: State) -> Health:
    """``ok``, with the request size limits (``limits``): without them a client learned
    the upload limit only by having an upload refused 413, sent whole for nothing."""
    settings = state.runtime.settings
    return Health(
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_upload_files=MAX_UPLOAD_FILES,
            max_request_bytes=settings.max_request_bytes,
        )
    )


def _viewer(state: ApiState, request: Request) -> Principal | None:
    """Who may read /readyz's per-collection and replica details: anyone with auth off,
    else the holder of a valid key (``None``: an anonymous caller, or a bad key).

    /readyz answers without a key (a load balancer probes it), and its details name every
    collection and each replica's host and user: with keys on they were open to anyone who
    could reach the port (the Docker image serves 0.0.0.0 under profile prod), though the
    same names are kept from anonymous callers everywhere else. A bad key is answered as
    anonymous rather than 401, so the probe never fails for a stale header.

    The key is read as every other route reads it (:func:`~ragstore.api.deps.
    bearer_token`): only the first of two ``Authorization`` headers was read here, so a
    valid key beside junk was shown every collection where every other route refuses
    the request; two headers now get the anonymous answer.

    The key is checked as a scraper's is (:meth:`~ragstore.auth.keys.KeyStore.
    authenticate_probe`), never on a pooled connection: read on one, a probe carrying a
    key waited out the pool timeout while requests held every connection, and a load
    balancer's probe timed out and took a busy but healthy server out of rotation (and
    its load onto the others), which :func:`_check` was made to prevent. A key never
    verified by this process that the database cannot check now (down, or full with every
    pooled connection in use) gets the anonymous answer."""
    if state.keys is None:
        return Principal(None)
    client = request.client.host if request.client else ""
    try:
        token = bearer_token(request.scope.get("headers", ()))
        if token is None:
            return None
        return Principal(state.keys.authenticate_probe(token, client))
    except RagstoreError:
        return None


FULL = "full: it refuses new connections (connection limit reached); checked on a pooled one"
"""``checks.database`` of a server whose database is at its connection limit (:func:`_check`)."""
FULL_AND_BUSY = (
    "full: it refuses new connections (connection limit reached) and every pooled "
    "connection is in use (load, not a fault: the server stays ready)"
)

READY_FRESH_S = 1.0
"""How old a readiness answer may be: the checks run at most about once a second (and one
run at a time) however many probes come, and a database that went down shows within it."""


@dataclass(frozen=True)
class _Checked:
    """One run of the readiness checks, shared by the probes it answers (who may see which
    collection is decided per request)."""

    checks: dict[str, str]
    collections: dict[str, str]
    replicas: list[dict[str, Any]]


def _check(rt: Runtime) -> _Checked:
    """The checks themselves, on one fresh connection (the ping, the schema revision and
    the collections), which is why they are shared (:func:`readiness`).

    None of them takes a pooled connection: a pool that every request holds is load, not
    a fault, and readiness is not the place to shed it. Listing the collections on a
    pooled connection waited out the pool timeout (``RAGSTORE_CONNECT_TIMEOUT_S``, past a
    balancer's probe timeout) and then answered 503, so each busy server was taken out of
    rotation and its load moved onto the others, which became busy and were taken out in
    turn; the requests of a busy server are answered ``database_unavailable`` with
    ``Retry-After: 1`` instead, which sheds the excess. ``checks.pool`` says how busy the
    pool is (:func:`_pool_check`), so the answer still shows it.

    A server at its connection limit refuses the fresh connection (SQLSTATE 53300) yet
    answers every pooled one: it was read as unreachable, and every API server on it was
    drained at once. The checks then run on a pooled connection (``checks.database``
    says ``full``), and with none free in time the server stays ready as a busy one does,
    the schema and models not checked this time; only a server holding no connection to
    a full database is not ready (:meth:`~ragstore.db.database.Database.checking`)."""
    checks: dict[str, str] = {}
    collections: dict[str, str] = {}
    with ExitStack() as stack:
        try:
            db = rt.raw_db()
            lent = stack.enter_context(db.checking())
            lent.ping(db.where)
            got: CheckConnection | None = lent
        except RagstoreError as exc:
            if not (isinstance(exc, DatabaseUnavailableError) and exc.busy and is_full(exc)):
                log.warning("not ready: %s", exc)
                what = "database full" if is_full(exc) else "database unreachable"
                raise NotReadyError(f"{what}: {public_detail(exc)}") from None
            log.warning("database full, every pooled connection in use (still ready): %s", exc)
            got = None
        if got is None:
            checks["database"] = FULL_AND_BUSY
            checks["schema"] = checks["models"] = "not checked: no connection free"
        else:
            checks["database"] = FULL if got.full else "ok"
            with translated("reading the schema and collections"):
                st = migrations.status_of(migrations.current_revision(got.conn))
                if not st.is_current:
                    raise NotReadyError(
                        f"schema is at {st.current or 'none'}, the code needs {st.head}: "
                        "run `ragstore db upgrade`"
                    )
                found = repository.live_collections(got.conn)
            checks["schema"] = st.head
    checks["pool"] = _pool_check(rt)
    if got is not None:
        for coll in found:
            try:
                rt.embedder_for(coll)
                collections[coll.name] = "ok"
            except (ModelError, NotFoundError) as exc:
                collections[coll.name] = f"cannot embed queries: {exc.code}: {exc}"
        bad = sum(1 for v in collections.values() if v != "ok")
        checks["models"] = f"{len(found)} collection(s) validated" + (
            f", {bad} cannot embed queries" if bad else ""
        )
    checks["role"] = "replica (read-only)" if rt.read_only else "primary"
    replicas = [r.public() for r in rt.router.statuses()]
    if replicas:
        up = sum(1 for r in replicas if r["up"])
        checks["replicas"] = f"{up} of {len(replicas)} serving reads"
    return _Checked(checks, collections, replicas)


def _pool_check(rt: Runtime) -> str:
    """How busy this process's connection pool is, read from its figures (it waits for no
    connection): ``busy`` while requests queue for one. A busy server stays ready
    (:func:`_check`); this is for the operator reading the answer."""
    db = rt.opened_primary
    pool = db.opened_pool if db is not None else None
    if pool is None:
        return "not opened yet"
    stats = metrics.pool_stats(pool)
    size, free = stats.get("pool_size", 0), stats.get("pool_available", 0)
    waiting = stats.get("requests_waiting", 0)
    used = f"{max(0, size - free)} of {stats.get('pool_max', size)} connections in use"
    if waiting:
        return (
            f"busy: {used}, {waiting} request(s) waiting for one (load, not a fault: "
            "the server stays ready)"
        )
    return used


def readiness(request: Request, rt: Runtime) -> Coalesced[_Checked]:
    """The app's shared readiness checks (made on first use).

    /readyz answers without a key and no per-key rate limit bounds it: each probe ran the
    checks itself, so a flood of them (many load balancers, a probe every 10 ms) held as
    many fresh connections as the thread pool had threads and starved searches and
    writes of connections. Probes now share one run of the checks at a time, and one
    started at most :data:`READY_FRESH_S` before they came."""
    state = request.app.state
    shared: Coalesced[_Checked] | None = getattr(state, "ragstore_readiness", None)
    if shared is None:
        # on threads of its own: a probe answers at once while searches hold every other
        shared = Coalesced(lambda: _check(rt), fresh_s=READY_FRESH_S, run=on_probe_thread)
        state.ragstore_readiness = shared
    return shared


@router.get("/readyz", response_model=Readiness, summary="Ready to serve", responses=responses(503))
async def readyz(rt: Rt, state: State, request: Request) -> Readiness:
    """Database reachable and schema at the code's revision, else 503 ``not_ready`` naming
    the failing check. Each collection's model is checked too, but a collection that cannot
    embed queries (an imported vector-only collection, a model without a provider) is
    reported in ``collections`` and does not make the whole server unready: a load
    balancer must not drop every server for one collection.

    The checks are shared by the probes that come together, and the answer may be up to
    about a second old (:func:`readiness`).

    With API keys on, ``collections`` and ``replicas`` are filled in only for a caller
    presenting a valid key (the collections it may see; replicas for a key not limited to
    one collection); anonymous probes get the checks and their counts."""
    checked = await readiness(request, rt).get()
    viewer: Principal | None
    if state.keys is None:
        viewer = Principal(None)
    elif "authorization" not in request.headers:
        viewer = None  # a load balancer's probe: no key to check, no thread to wait for
    else:  # never on the threads of the checks (ragstore.http.probes)
        viewer = await on_key_check_thread(lambda: _viewer(state, request))
    shown = {n: v for n, v in checked.collections.items() if viewer is not None and viewer.sees(n)}
    whole = viewer is not None and (viewer.key is None or viewer.key.collection is None)
    replicas = checked.replicas
    return Readiness(
        checks=dict(checked.checks),
        collections=shown,
        replicas=[ReplicaPublic(**r) for r in replicas] if replicas and whole else None,
    )
