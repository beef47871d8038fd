"""HTTP observability: request metrics, one access log line per request, and ``/metrics``.

:func:`install_observability` is the single hook the app factory calls. It configures
logging from the settings, adds :class:`ObservabilityMiddleware` (inside the request-id
middleware, outside everything else, so refused bodies are counted too) and mounts the
``/metrics`` route (unauthenticated in dev and test on loopback, like most Prometheus
targets; under profile prod, or with keys on beyond loopback, it needs an API key of any
scope, sent as a bearer token by the scraper).

Routes are labelled by their template (``/v1/collections/{name}/search``), never the raw
path, and paths that match no route share the label ``unmatched``, so label cardinality
stays bounded whatever clients send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.http.probes import on_key_check_thread, on_probe_thread
from ragstore.http.problems import PROBLEM_JSON
from ragstore.observability import metrics
from ragstore.observability.logging import bind_request, configure_logging, get_logger

_PROBLEM_TYPE = PROBLEM_JSON.encode()

SCRAPE_CONNECT_S = 2.0
"""The longest a scrape waits to connect to the database for its figures (a database
silent on the network, not refusing); with the key check's own bound
(:data:`ragstore.auth.keys.PROBE_CONNECT_S`) a scrape of a silent database answers
``ragstore_db_up 0`` in about four seconds, within Prometheus' default 10 s scrape
timeout, whatever ``RAGSTORE_CONNECT_TIMEOUT_S`` says."""
_MAX_PROBLEM_BYTES = 64 * 1024
log = get_logger("ragstore.http")


def _route_of(scope: Scope, root: Any) -> str:
    """The matched route's template; plain Starlette routes are found by their endpoint."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    endpoint = scope.get("endpoint")
    if endpoint is not None and root is not None:
        for route in getattr(root, "routes", ()):
            if getattr(route, "endpoint", None) is endpoint:
                return str(route.path)
    return "unmatched"


def _runtime_of(app: Any) -> Any:
    state = getattr(getattr(app, "state", None), "ragstore", None)
    return getattr(state, "runtime", None)


def sync_process_metrics(app: Any) -> None:
    """Copy this process's pool and query-cache figures into the metrics (never opens one)."""
    metrics.sync_runtime(_runtime_of(app))


class ObservabilityMiddleware:
    """Times and counts each request, logs one line for it, counts problem codes."""

    def __init__(self, app: ASGIApp, *, root: Any = None) -> None:
        self.app = app
        self.root = root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = str(state.get("request_id", ""))
        status = 500
        problem = bytearray()
        is_problem = False

        async def watching_send(message: Message) -> None:
            nonlocal status, is_problem
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                is_problem = ctype.startswith(_PROBLEM_TYPE)
            elif (
                message["type"] == "http.response.body"
                and is_problem
                and len(problem) < _MAX_PROBLEM_BYTES
            ):
                problem.extend(message.get("body", b""))
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            with bind_request(request_id):
                try:
                    await self.app(scope, receive, watching_send)
                finally:
                    self._finish(scope, status, start, bytes(problem) if is_problem else b"")
        finally:
            metrics.HTTP_IN_FLIGHT.dec()

    def _finish(self, scope: Scope, status: int, start: float, problem: bytes) -> None:
        seconds = time.perf_counter() - start
        route = _route_of(scope, self.root)
        method = str(scope.get("method", ""))
        metrics.observe_http(method, route, status, seconds)
        code = None
        if problem:
            try:
                code = json.loads(problem).get("code")
            except (ValueError, AttributeError):
                code = None
            if isinstance(code, str) and len(code) <= 64:
                metrics.record_error(code)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        collection = (scope.get("path_params") or {}).get("name")
        if collection:
            fields["collection"] = collection
        if code:
            fields["code"] = code
        level = "warning" if status >= 500 else "info"
        getattr(log, level)("request", **fields)
        if self.root is not None:
            sync_process_metrics(self.root)


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text exposition.

    Scrapes that come together share one rendering (:func:`_rendering`)."""
    await _require_key(request)
    body = await _rendering(request.app).get()
    return Response(body, media_type=metrics.CONTENT_TYPE)


def _rendering(app: Any) -> Any:
    """The app's shared rendering of the metrics (made on first use).

    A scrape reads the job queue on a pooled connection and, with several workers, every
    process's sample files under a lock on their folder; /metrics needs no key on
    loopback and no per-key rate limit bounds it, so a flood of scrapes held a thread and
    a connection each. One rendering runs at a time now, and a scrape takes one started
    after it came (never an older answer: a counter it reads counts every request it
    follows).

    On the probes' threads (:mod:`ragstore.http.probes`): on anyio's, a scrape of a server
    whose every thread a load held waited behind that load without limit (its rendering
    made in a context of its own, where no ``RAGSTORE_QUEUE_WAIT_S`` bounds it), and
    showed nothing of the load while it lasted."""
    from ragstore.http.coalesce import Coalesced

    shared = getattr(app.state, "ragstore_metrics", None)
    if shared is None:
        shared = Coalesced(lambda: _render(app), fresh_s=0.0, run=on_probe_thread)
        app.state.ragstore_metrics = shared
    return shared


def _render(app: Any) -> bytes:
    """One rendering: this process's pool and cache figures, the samples, the database's."""
    sync_process_metrics(app)
    collector = getattr(app.state, "ragstore_db_collector", None)
    if collector is None:
        rt = _runtime_of(app)
        if rt is None:
            return metrics.render()
        # a fresh connection, not a pooled one: a pool that every request holds is load,
        # which the pool's own figures show; waiting for one of its connections held the
        # scrape for the pool timeout and then reported ragstore_db_up 0, paging
        # RagstoreDatabaseDown for a busy server whose database answered; a database at
        # its connection limit, which refuses the fresh one, is read on a pooled one
        # (``ragstore_db_full``), never reported down. Its connect is bounded as the key
        # check's is (SCRAPE_CONNECT_S): a database silent on the network held the scrape
        # for all of RAGSTORE_CONNECT_TIMEOUT_S, past Prometheus' scrape timeout, so the
        # target read as down and ragstore_db_up 0 (the database's alert) was never seen
        from ragstore.db.database import is_full

        collector = metrics.DatabaseCollector(
            lambda: rt.db.checking(connect_s=SCRAPE_CONNECT_S),
            full=is_full,
            data_dir=rt.settings.data_dir,
        )
        app.state.ragstore_db_collector = collector
    return metrics.render(collector, *getattr(app.state, "ragstore_extra_metrics", ()))


async def _require_key(request: Request) -> None:
    """With keys on, only a key holder reads the metrics under profile prod, or wherever
    the server listens beyond loopback: they name collections (and each replica's host and
    user) and show load, which /readyz and the API keep from anonymous callers. A dev
    server on ``0.0.0.0`` with keys on showed them to anyone on the network; a dev scraper
    of a server on loopback still needs no key, when it asks from this machine
    (:func:`_asked_locally`) and presents none: a key presented is always checked, so a
    key of one collection is refused here wherever the server listens.

    The key must not be limited to a collection: the metrics name every collection (and
    count its chunks), so a key of one collection learnt the others' names here, which
    the API's listings, 404s and job reads keep from it (403 ``forbidden`` now). The key is
    checked on a thread of the probes' key checks (:func:`ragstore.http.probes.
    on_key_check_thread`): never behind the load, nor holding the threads /readyz's checks
    and the rendering (:func:`_rendering`) run on.

    Nor on a pooled connection (:meth:`~ragstore.auth.keys.KeyStore.authenticate_probe`):
    with the database down every keyed scrape was refused 503, so the scrape that reports
    ``ragstore_db_up 0`` never happened, and with the pool held it waited out the pool
    timeout."""
    from ragstore.profiles import served_on_loopback

    state = getattr(request.app.state, "ragstore", None)
    keys = getattr(state, "keys", None)
    rt = _runtime_of(request.app)
    if keys is None or rt is None:
        return
    from ragstore.http.bearer import bearer_token

    token = bearer_token(request.scope.get("headers", ()))
    if (
        token is None
        and rt.settings.profile != "prod"
        and served_on_loopback(rt.settings)
        and _asked_locally(request.scope)
    ):
        return
    client = request.client.host if request.client else ""
    key = await on_key_check_thread(lambda: keys.authenticate_probe(token, client))
    key.require("metrics")


def _asked_locally(scope: Scope) -> bool:
    """Whether a request comes from this machine and names no other, as the loopback
    guard judges (:mod:`ragstore.http.guard`): a client address on loopback (or a Unix
    socket's none), no proxy's forwarding header naming another machine, and a ``Host``
    and ``Origin`` of this machine (a Unix socket's ``Host`` left alone, a proxy's own).

    The bound address alone said nothing of who asks: a server on loopback behind a
    reverse proxy, or the app served by uvicorn on ``0.0.0.0`` with ``RAGSTORE_API_HOST``
    left at 127.0.0.1, showed every collection's name to anyone, keys on."""
    from ragstore.http.guard import foreign_party, foreign_sender

    if foreign_sender(scope) is not None:
        return False
    headers = dict(scope.get("headers", ()))
    return foreign_party(headers, check_host=bool(scope.get("client"))) is None


def install_observability(app: Any, settings: Any, *, extra: Sequence[Collector] = ()) -> None:
    """Logging from the settings, the metrics middleware and ``GET /metrics`` on ``app``.

    ``extra``: collectors of the app's own that each scrape reads besides the registry's
    (the API gives its job queue's pool, ``ragstore_job_queue_pool_*``), as a worker's
    metrics port takes its own (``serve_process_metrics``): the surface that holds a
    resource hands its figures over, and observability reaches into no service."""
    from ragstore import __version__

    app.state.ragstore_extra_metrics = tuple(extra)

    configure_logging(
        settings.log_level, log_format=settings.log_format, log_queries=settings.log_queries
    )
    metrics.set_build_info(__version__, settings.profile)
    metrics.mark_process_dead_at_exit()
    app.add_middleware(ObservabilityMiddleware, root=app)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
