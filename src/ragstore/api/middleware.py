"""ASGI middleware of our own: request ids, request body limits enforced while reading, and
API keys checked before a request body is read.

Both are plain ASGI (no BaseHTTPMiddleware) so they cost little on every request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.api.deps import ApiState, authenticate, route_path, route_scope
from ragstore.api.errors import crash_response
from ragstore.api.shed import before_work
from ragstore.errors import (
    InputError,
    RagstoreError,
    RateLimitedError,
)
from ragstore.http.bearer import bearer_token
from ragstore.http.limits import DRAIN_MAX_BYTES, UPLOAD_SUFFIX, refuse_and_drain
from ragstore.http.problems import problem_response, send_problem
from ragstore.validation import repeated_key
from ragstore.wire import IDEMPOTENCY_SUPPORT_HEADER

_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_KEYS_HONOURED = IDEMPOTENCY_SUPPORT_HEADER.lower().encode()


class RequestIdMiddleware:
    """Takes a sane ``X-Request-ID`` from the client or makes one; echoes it on the response.

    Every answer also says ``RAGStore-Idempotency: 1`` (:data:`IDEMPOTENCY_SUPPORT_HEADER`):
    this server answers an upload sent again with the same ``Idempotency-Key`` with the
    job the first send queued. The clients send a background upload again after a lost
    answer only to a server that said so; an older one ignored the key and queued a
    second job."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                headers.append((_KEYS_HONOURED, b"1"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class HeadAsGetMiddleware:
    """Answers ``HEAD`` wherever a ``GET`` route takes the path: the ``GET`` is run and its
    status and headers sent, without the body.

    RFC 9110 has a server answer ``HEAD`` wherever it answers ``GET``; FastAPI's routes
    take only the methods they declare, so ``HEAD /healthz`` (a load balancer's or an
    uptime check's probe), a collection, a console page and ``/docs`` all answered 405.
    The request runs as a ``GET`` from the router inwards, so the route's key and scope
    checks are those of the ``GET``; every middleware outside this one (the host guard,
    the access log, the metrics) sees the ``HEAD``. A route that takes ``HEAD`` itself
    (``/openapi.json``, the static files) and a path with no ``GET`` route are left alone:
    the latter is refused 405 naming the methods taken. Installed innermost.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not _takes_get_only(scope):
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}  # a copy: the server's scope stays HEAD

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(as_get, receive, without_body)
        finally:
            # what the router put on the request (its route, path parameters) is read by
            # the middleware outside (the access log, the metrics' route label)
            scope.update({k: v for k, v in as_get.items() if k != "method"})


def _takes_get_only(scope: Scope) -> bool:
    """Whether a route of the app takes ``GET`` on this path and none takes ``HEAD``."""
    from starlette.routing import Match

    routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())

    def taken(method: str) -> bool:
        probe = {**scope, "method": method}
        return any(r.matches(probe)[0] is Match.FULL for r in routes)

    return not taken("HEAD") and taken("GET")


class DuplicateKeyMiddleware:
    """Refuses a JSON request body in which one object names a key twice.

    Python's parser keeps the last of a repeated key without a word, so a search with
    ``"where": {"team": "ops", "team": "nobody"}`` searched ``team = nobody`` only, and
    ``{"k": 5, "k": 1000}`` asked for 1000 results; the sender meant one of them, and
    nothing said which was used. Such a body is answered 422 ``invalid_input`` naming
    the key, before any route runs. Only ``/v1`` bodies sent as JSON are read here (the
    body was already bounded by :class:`BodyLimitMiddleware`); a body that is not JSON
    at all is left for the route's own error. Installed inside the body limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _BODY_METHODS
            or not route_path(scope).startswith("/v1/")
            or not _is_json(dict(scope.get("headers", ())).get(b"content-type", b""))
        ):
            await self.app(scope, receive, send)
            return
        pending: list[Message] = []
        while True:
            message = await receive()
            pending.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in pending if m["type"] == "http.request")
        repeated = repeated_key(body)
        if repeated is not None:
            state: dict[str, Any] = scope.get("state", {})
            response = problem_response(
                InputError(
                    f"the JSON body names the key {repeated!r} twice in one object; only one "
                    "of its values would be used: send each key once (combine the "
                    'conditions of one field in one object, e.g. {"year": {"$gte": 2020, '
                    '"$lt": 2024}})'
                ),
                request_id=str(state.get("request_id", "")),
                instance=scope.get("path", ""),
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()  # the body is spent: this waits for the disconnect

        await self.app(scope, replay, send)


def _is_json(content_type: bytes) -> bool:
    """Whether a Content-Type is one FastAPI reads as JSON (``application/json``,
    ``application/*+json``, parameters allowed)."""
    media = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class CrashMiddleware:
    """Answers an exception that no handler took (a crash) with the ``internal_error``
    problem, from inside the app's outer middleware.

    Starlette answers such an exception from its ``ServerErrorMiddleware``, outside every
    middleware added to the app: the 500 went out without the security headers
    (Content-Security-Policy, no framing, no sniffing), the access log and the metrics
    counted it without its ``code``, and uvicorn then closed the connection. Installed
    inside :class:`~ragstore.console.security.SecurityHeadersMiddleware`, the
    observability and the request-id middleware, the answer gets all of theirs. A crash
    after the answer started is left to propagate: the connection is cut, so the client
    never takes a partial answer for a whole one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            if started:
                raise
            state: dict[str, Any] = scope.get("state", {})
            response = crash_response(exc, request_id=str(state.get("request_id", "")), scope=scope)
            await response(scope, receive, send)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _declares_body(headers: dict[bytes, bytes]) -> bool:
    """Whether a request's headers say a body follows (a ``DELETE`` may carry one)."""
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or (length != b"0" and length != b"")


class AuthBeforeBodyMiddleware:
    """With API keys on, check the key of every ``/v1`` request first: before its body is
    read, and before the read routing (:class:`~ragstore.api.routing.ReadRoutingMiddleware`,
    further in) acts on it.

    The routing ran before the key check of a request without a body: an anonymous
    ``GET`` with a ``RAGStore-LSN`` ahead of a standby's held a worker thread for
    ``RAGSTORE_REPLICA_WAIT_S`` and was answered 503 ``replica_behind``, not 401, and an
    anonymous ``DELETE`` learnt that the server was read-only. Such a request refused here
    is answered at once (no body to drain).

    FastAPI reads and parses a body (a 50 MB multipart upload is parsed and spooled to
    disk) before a route's dependencies run, so a caller without a valid key made the
    server take in whole bodies just to be told 401. Here a missing, wrong or throttled key
    is answered at once with ``Connection: close``, the body neither parsed nor kept, and so
    is a key without the route's scope or collection (403, :func:`~ragstore.api.deps.
    route_scope`); a good one is left on the request's state for the routes' dependency
    (:func:`ragstore.api.deps._caller`).

    The refused body is read and dropped after the answer (:func:`refuse_and_drain`), up
    to the limit the request would have had (``upload_bytes`` for an upload, else
    ``json_bytes``) and :data:`DRAIN_MAX_S`: closed with it unread, the connection was
    reset while the client was still sending and async httpx raised ``ReadError``
    ("cannot reach the ragstore server") instead of the 401/403/429. A caller without a
    key so makes the server read no more than a keyed one could send, and keeps none; one
    throttled for its failed key checks (429) is not read from at all.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        json_bytes: int = DRAIN_MAX_BYTES,
        upload_bytes: int = DRAIN_MAX_BYTES,
    ) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        api: ApiState = scope["app"].state.ragstore
        if api.keys is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        client = scope["client"][0] if scope.get("client") else ""
        state: dict[str, Any] = scope.setdefault("state", {})
        try:
            token = bearer_token(scope.get("headers", ()))
            caller = await before_work(authenticate, api.keys, api.limiter, token, client)
            state["principal"] = caller
            # the route's scope (and collection) too: a key without them was answered 403
            # only once FastAPI had read and parsed the whole body
            routes = getattr(scope["app"].state, "api_routes", ())
            # HEAD runs the GET route (HeadAsGetMiddleware, further in): matched as one
            as_route = {**scope, "method": "GET"} if scope["method"] == "HEAD" else scope
            needed, collection = route_scope(routes, as_route)
            if needed is not None:
                if collection is None:
                    caller.require_scope(needed)
                else:
                    caller.require(needed, collection)
        except RagstoreError as exc:
            if scope["method"] not in _BODY_METHODS and not _declares_body(headers):
                await send_problem(scope, send, exc)
                return
            ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
            upload = ctype.startswith("multipart/") and scope["path"].endswith(UPLOAD_SUFFIX)
            declared = headers.get(b"content-length", b"")
            # a caller throttled for its failed key checks (auth/throttle.py: one guessing
            # keys) is not read from at all
            guessing = isinstance(exc, RateLimitedError) and exc.failed_keys
            await refuse_and_drain(
                scope,
                receive,
                send,
                exc,
                declared=int(declared) if declared.isdigit() else None,
                max_bytes=0 if guessing else self.upload_bytes if upload else self.json_bytes,
            )
            return
        await self.app(scope, receive, send)
