"""The app factory: ``create_app(settings)`` builds the FastAPI app; its lifespan opens the
Runtime (database pool, models), the key store and the job queue, and closes them.

Nothing happens at import time. Middleware goes in :func:`install_middleware`, the one
place to add more (metrics, request logging).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from ragstore import __version__
from ragstore.api import forms
from ragstore.api.deps import ApiState, refuse_unknown_query
from ragstore.api.errors import install_error_handlers
from ragstore.api.middleware import (
    AuthBeforeBodyMiddleware,
    CrashMiddleware,
    DuplicateKeyMiddleware,
    HeadAsGetMiddleware,
    RequestIdMiddleware,
)
from ragstore.api.routes import (
    collections,
    documents,
    field_indexes,
    health,
    inspect,
    jobs,
    models,
    search,
    texts,
)
from ragstore.api.routing import ReadRoutingMiddleware
from ragstore.api.shed import QueueWaitMiddleware
from ragstore.api.slashes import install_relative_slash_redirects
from ragstore.auth import KeyStore, RateLimiter
from ragstore.config import Settings
from ragstore.console import install_console
from ragstore.console.apidocs import install_api_docs
from ragstore.console.security import SecurityHeadersMiddleware
from ragstore.db import embedded
from ragstore.db.database import Database
from ragstore.errors import ConfigError, RagstoreError
from ragstore.http.guard import LoopbackGuardMiddleware
from ragstore.http.limits import BodyLimitMiddleware
from ragstore.http.listen import (
    UNIX_PREFIX,
    open_to_local_users,
    stop_with_parent,
    tcp_endpoint,
)
from ragstore.jobs import build_queue
from ragstore.observability.http import install_observability
from ragstore.observability.metrics import JobQueuePoolMetrics
from ragstore.profiles import get_settings, served_on_loopback
from ragstore.runtime import Runtime
from ragstore.uploads import staging

log = logging.getLogger("ragstore.api")


def auth_enabled(settings: Settings, *, host_from: str = "RAGSTORE_API_HOST") -> bool:
    """``auto`` turns keys off only for the embedded database served on loopback; ``off``
    is refused on any other address, the refusal naming where the host came from
    (``host_from``: ``ragstore serve --host`` gives ``"--host"``; it named
    ``RAGSTORE_API_HOST``, unset, for a host typed on the command line).

    "Served on loopback" is judged from the addresses ``ragstore serve`` actually bound
    (``api_bound``, which it passes to the app) when it did, else from ``RAGSTORE_API_HOST``.
    """
    local = served_on_loopback(settings)
    if settings.auth == "auto":
        return not (settings.uses_embedded_database and local)
    if settings.auth == "off" and not local:
        # in every profile: two settings made for different occasions (keys off for local
        # work, every interface to try a phone or a container) must not add up to a store
        # that anyone on the network can read and delete with admin rights
        host = (
            f"{host_from} {settings.api_host!r}"
            if host_from.startswith("-")
            else f"{host_from}={settings.api_host!r}"
        )
        bound = [h for h in settings.api_bound.split(",") if h]
        if bound and bound != [settings.api_host]:
            host += f" (listening on {', '.join(bound)})"
        raise ConfigError(
            f"RAGSTORE_AUTH=off with {host} would serve every "
            "collection to anyone who can reach this machine, with admin rights; turn keys on "
            "(RAGSTORE_AUTH=on and `ragstore keys create`) or bind to 127.0.0.1 (a reverse "
            "proxy in front of it must then authenticate its users itself: every request "
            "it forwards has admin rights)"
        )
    return settings.auth == "on"


def guards_loopback(settings: Settings, secure: bool) -> bool:
    """Whether to refuse other sites' and other machines' requests: whenever auth is off,
    where being on this machine is the only credential.

    Not skipped for ``RAGSTORE_API_HOST=unix:...``: that setting only claims a Unix
    socket, and the app served on TCP (``uvicorn --host 0.0.0.0``) with it gave every
    client of the network admin rights. The guard tells a Unix socket's requests by the
    connection itself (they have no client address) and leaves their ``Host`` alone."""
    return not secure and served_on_loopback(settings)


def keys_off_warning(settings: Settings) -> str:
    """The start-up line of a server with keys off: who has admin rights.

    Over TCP that is every user of this machine, not its owner alone: a loopback port has
    no permissions and the server cannot tell one local user from another (peer
    credentials exist for Unix sockets only), so on a machine shared with other users
    keys are the only guard. The owner-only socket ``ragstore serve`` binds for
    ``RAGSTORE_API_HOST=unix:PATH`` admits its user alone."""
    bound = [h for h in settings.api_bound.split(",") if h]
    if bound and all(h.startswith(UNIX_PREFIX) for h in bound):
        return (
            f"authentication is OFF (RAGSTORE_AUTH={settings.auth}): every request over "
            f"{', '.join(bound)} (owner-only) has admin rights; set RAGSTORE_AUTH=on and "
            "create keys with `ragstore keys create` to serve other users"
        )
    endpoints = [tcp_endpoint(h, settings.api_port) for h in bound or [settings.api_host]]
    return f"authentication is OFF (RAGSTORE_AUTH={settings.auth}): " + open_to_local_users(
        endpoints,
        "has admin rights",
        "set RAGSTORE_AUTH=on and create keys with `ragstore keys create`",
    )


def _queue_pool_metrics(app: FastAPI) -> JobQueuePoolMetrics:
    """The collector of the API's own job-queue pool (``ragstore_job_queue_pool_*``: the
    synchronous connector it defers jobs on, four connections), read at each scrape while
    the queue is open. It was served by a worker's metrics port alone: requests that
    queued for one of the API's four queue connections to defer their jobs showed
    nowhere. Each server process has its own: a scrape reports the process it reached."""
    from ragstore.jobs.queue import queue_pool

    def pool() -> Any:
        state = getattr(app.state, "ragstore", None)
        return queue_pool(getattr(state, "queue", None))

    return JobQueuePoolMetrics(pool)


def install_middleware(app: FastAPI, settings: Settings, *, secure: bool = True) -> None:
    """Every middleware of the app, outermost last. Add metrics/logging middleware here."""
    # innermost: an upload's parts as sent, whose text the form parser garbles (forms.py)
    app.add_middleware(forms.FormBytesMiddleware)
    app.add_middleware(HeadAsGetMiddleware)  # HEAD runs the GET route
    app.add_middleware(ReadRoutingMiddleware)  # it may run a read twice
    app.add_middleware(DuplicateKeyMiddleware)  # a JSON key named twice: one value lost
    app.add_middleware(
        BodyLimitMiddleware,
        json_bytes=settings.max_request_bytes,
        upload_bytes=settings.max_upload_bytes,
    )
    if secure:
        app.add_middleware(  # no body parsed for an unknown caller
            AuthBeforeBodyMiddleware,
            json_bytes=settings.max_request_bytes,
            upload_bytes=settings.max_upload_bytes,
        )
    if guards_loopback(settings, secure):
        app.add_middleware(  # DNS rebinding, cross-site posts, other users' sockets
            LoopbackGuardMiddleware,
            own_socket=any(h.startswith(UNIX_PREFIX) for h in settings.api_bound.split(",")),
        )
    # outside every middleware that waits for a worker thread: their waits are bounded too
    app.add_middleware(QueueWaitMiddleware, wait_s=settings.queue_wait_s)
    app.add_middleware(CrashMiddleware)  # a crash's 500, under the headers and the log
    app.add_middleware(SecurityHeadersMiddleware)  # CSP, no framing, no sniffing
    # metrics, access log, GET /metrics (with the figures of this app's job queue pool)
    install_observability(app, settings, extra=(_queue_pool_metrics(app),))
    app.add_middleware(RequestIdMiddleware)


def _warm_up(rt: Runtime) -> None:
    """Open the database and load the default model now rather than on the first request."""
    from ragstore.modelops.specs import model_spec

    rt.db  # noqa: B018 (checks server and schema)
    rt.embedder(model_spec(rt, rt.settings.model))  # a built-in, or a model pinned by name


def _read_only(rt: Runtime) -> bool:
    """Whether the database is a standby; False while it cannot be reached (then it is the
    primary's to answer, and writes fail as they would anyway)."""
    try:
        return rt.read_only
    except RagstoreError:
        return False


def create_app(settings: Settings | None = None, *, bound: str | None = None) -> FastAPI:
    """The API over ``settings``; without them, over the environment's, as the factory of
    ``uvicorn ragstore.api.app:create_app --factory`` (and of ``ragstore serve``'s
    workers). There a bad setting ends the process as ``ragstore serve`` does: one
    ``error[config_invalid]`` line and exit 78 (EX_CONFIG). uvicorn stops on an exception
    of its factory with a traceback and exit 1 (it lets ``SystemExit`` through).

    ``bound``: the addresses ``ragstore serve`` bound (comma-separated), which only it
    passes (the environment's settings are read with them as ``api_bound``, no setting a
    user can make: ``config.SERVE_ONLY``)."""
    if settings is None:
        try:
            settings = get_settings() if bound is None else get_settings(api_bound=bound)
            secure = auth_enabled(settings)
        except ConfigError as exc:
            log.error("error[%s]: %s", exc.code, " ".join(exc.message.split()))
            raise SystemExit(exc.exit_code) from None
    else:
        if bound is not None:
            settings = settings.model_copy(update={"api_bound": bound})
        secure = auth_enabled(settings)
    stop_with_parent()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings)
        try:
            await run_in_threadpool(_warm_up, rt)
        except RagstoreError as exc:
            log.warning("not ready at start (see /readyz): %s", exc)
        db = Database.from_settings(settings)  # connects lazily: start even if it is down
        queue = build_queue(db.tcp_conninfo, sync=True)
        queue.open()
        if secure:
            log.info("authentication is on: requests need an API key")
        else:
            log.warning("%s", keys_off_warning(settings))
        read_only = _read_only(rt)
        if read_only:
            log.warning(
                "the database is a hot standby: this server answers reads only and "
                "refuses writes with read_only"
            )
        app.state.ragstore = ApiState(
            runtime=rt,
            keys=KeyStore(db, read_only=read_only) if secure else None,
            limiter=RateLimiter(settings.rate_limit_per_minute, None if read_only else db),
            queue=queue,
        )
        sweeper = staging.Sweeper(settings)  # upload files a killed server or worker left
        try:
            sweeper.start()
            yield
        finally:
            sweeper.stop()
            queue.close()
            db.close()
            rt.close()
            if settings.uses_embedded_database:
                embedded.release(settings.data_dir)  # stops it if we were its last user

    app = FastAPI(
        title="ragstore",
        version=__version__,
        lifespan=lifespan,
        summary="Document retrieval on PostgreSQL + pgvector.",
        description=(
            "Every error is RFC 9457 `application/problem+json` with a stable `code` "
            "and the `request_id`. Authenticate with `Authorization: Bearer rsk_...`."
        ),
        # FastAPI's Swagger UI and ReDoc pages load script, styles and fonts from public
        # CDNs: blank behind a firewall, and that script runs on this origin. /docs is
        # our own page instead (install_api_docs); /openapi.json stays.
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,  # its Location named the request's Host: ours is a path
    )
    install_middleware(app, settings, secure=secure)
    install_error_handlers(app)
    app.state.api_routes = []
    for module in (
        health,
        collections,
        documents,
        texts,
        search,
        models,
        field_indexes,
        jobs,
        inspect,
    ):
        # an unknown query parameter refused on every /v1 route; the probes take any
        extra = [] if module is health else [Depends(refuse_unknown_query)]
        app.include_router(module.router, dependencies=extra)
        # the routes as declared (their paths carry the router's prefix), matched by the
        # scope check before a body is read (api/deps.py route_scope): the app's own route
        # table holds FastAPI's wrappers of included routers, not the routes
        app.state.api_routes.extend(module.router.routes)
    install_console(app, auth=secure)
    install_api_docs(app)
    install_relative_slash_redirects(app)
    return app
