"""ASGI wrappers of the MCP SDK's streamable HTTP app (``ragstore mcp --transport http``)
for what the SDK leaves undone: a request whose client disconnects is cancelled
(:class:`CancelOnDisconnect`), a new session past the cap is refused in the
problem+json every other refusal of the server is made in (:class:`SessionCap`), and a
body that is no message is answered in one line, as over stdio (:class:`ReadableReplies`).

Both sit directly around the SDK's app, inside the key check and the body limit
(``integrations/mcp.http_app``), so everything they read has been authenticated and
bounded already.
"""

from __future__ import annotations

import json
import logging

import anyio
from mcp.shared.dispatcher import coerce_request_id
from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import NotReadyError
from ragstore.http.problems import send_problem

__all__ = ["CancelOnDisconnect", "ReadableReplies", "SessionCap"]

log = logging.getLogger("ragstore.mcp")

# What posting a cancellation for a disconnected client can meet: the session's streams
# closed or broken under it (the session ended meanwhile), or the transport gone. Any other
# error is a defect and surfaces.
_CANCEL_ERRORS = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ConnectionError,
)

SESSION_HEADER = b"mcp-session-id"


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k.lower() == name), None)


def _request_id(body: bytes) -> tuple[int | str, str] | None:
    """The JSON-RPC id and method of the request ``body`` is; None for a notification, a
    response, a batch or a body that is no JSON-RPC request at all (the SDK refuses those
    before running any)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    rid, method = message.get("id"), message.get("method")
    if not isinstance(method, str):
        return None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return None
    return rid, method


def _duplicate(rid: int | str) -> JSONRPCError:
    """The answer to a request whose id a request of its session still running holds."""
    text = (
        f"request id {rid!r} is already running in this session: give each request an id "
        "no other request of the session still running has (JSON-RPC), or wait for its "
        "answer"
    )
    return JSONRPCError(jsonrpc="2.0", id=rid, error=ErrorData(code=INVALID_REQUEST, message=text))


class CancelOnDisconnect:
    """ASGI middleware: a request of a session whose client disconnects before its answer
    ended is cancelled in that session, as if the client had sent ``notifications/cancelled``
    for it; a ``search`` then leaves PostgreSQL at once (``mcp.until_abandoned``).

    Over streamable HTTP the SDK answers each request on the POST that carried it, but
    runs it in the session, which outlives the POST: a client that closed the connection
    (gave up, crashed, timed out) left its search waiting or running in PostgreSQL, holding
    a pooled connection, to ``RAGSTORE_SEARCH_TIMEOUT_S``; only a closed session (DELETE)
    cancelled it. The HTTP API cancels such a search (``api/disconnect.py``).

    The SDK has no public hook from a POST to the call it runs, so the cancellation goes
    in as the client would send it: a ``notifications/cancelled`` POSTed to the session
    (the disconnected request's own headers, so the SDK checks it as it checked that
    one) naming the request's id. The request's body is read whole first (it is held to
    ``RAGSTORE_MAX_REQUEST_BYTES`` outside) and handed on to the SDK as it came.

    A request whose id a request of its session still running holds is refused (400, a
    JSON-RPC -32600 under its id), which JSON-RPC and MCP allow: ids must be unique among
    a session's requests. The SDK keys a running request, the stream its answer goes
    out on and its cancellation by the id alone (``7`` and ``"7"`` alike), so a second
    request took the first's place: the first's client disconnecting cancelled the
    second, and the first's search ran on. Keying the cancellation by the request itself
    cannot mend that here (the SDK's ``notifications/cancelled`` names an id, and its
    answers are routed by id too); refusing the reuse keeps each id naming one request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # (session, the id as the SDK correlates it) of each request running now
        self._running: set[tuple[bytes, int | str]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        session = _header(scope, SESSION_HEADER)
        if session is None:  # opens a session (initialize), or a stateless request
            await self.app(scope, receive, send)
            return
        body: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # gone before its request was whole: nothing ran
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        whole = b"".join(body)
        gone = answered = handed = False

        async def watched_receive() -> Message:
            nonlocal gone, handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal gone, answered
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            try:
                await send(message)
            except OSError:  # uvicorn's ClientDisconnected: the client is gone
                gone = True
                raise

        request = _request_id(whole)
        if request is None:
            await self.app(scope, watched_receive, watched_send)
            return
        rid, method = request
        key = (session, coerce_request_id(rid))
        if key in self._running:
            log.info("MCP: request id %r refused: one of its session still runs", rid)
            await _send_json(send, _duplicate(rid))
            return
        self._running.add(key)
        try:
            await self.app(scope, watched_receive, watched_send)
        finally:
            try:
                # not an initialize: JSON-RPC forbids cancelling it
                if gone and not answered and method != "initialize":
                    with anyio.CancelScope(shield=True):
                        await self._cancel(scope, rid)
            finally:
                self._running.discard(key)

    async def _cancel(self, scope: Scope, rid: int | str) -> None:
        """Post ``notifications/cancelled`` for ``rid`` to the session of ``scope``."""
        note = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "the client disconnected"},
            }
        ).encode()
        dropped = {b"content-length", b"content-type", b"accept", b"transfer-encoding"}
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in dropped]
        headers += [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-length", str(len(note)).encode()),
        ]
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": note, "more_body": False}

        status: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        try:
            await self.app({**scope, "headers": headers}, receive, send)
        except _CANCEL_ERRORS:  # the client's request is over either way: not its error
            log.exception("MCP: cancelling request %r of a client that disconnected", rid)
            return
        if status != [202]:
            log.warning(
                "MCP: request %r of a client that disconnected was not cancelled (HTTP %s)",
                rid,
                status[0] if status else "none",
            )


async def _send_json(send: Send, reply: JSONRPCError) -> None:
    """Answer 400 with the JSON-RPC error ``reply``."""
    content = reply.model_dump_json(by_alias=True, exclude_unset=True).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class SessionCap:
    """ASGI middleware: the SDK's refusal of a new session at its cap (``max_sessions``,
    ``RAGSTORE_MCP_MAX_SESSIONS`` here), a 503 with a JSON-RPC body that named no setting
    and no time to retry, answered as ``not_ready`` problem+json with ``Retry-After``,
    as the API answers a connection past ``RAGSTORE_MAX_CONNECTIONS``. The SDK answers
    503 for nothing else."""

    def __init__(self, app: ASGIApp, *, max_sessions: int, idle_s: float) -> None:
        self.app = app
        self.max_sessions, self.idle_s = max_sessions, idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _header(scope, SESSION_HEADER) is not None:
            await self.app(scope, receive, send)
            return
        refused = False

        async def watched_send(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, receive, watched_send)
        if refused:
            await send_problem(scope, send, self._refusal())

    def _refusal(self) -> NotReadyError:
        return NotReadyError(
            f"this MCP server holds {self.max_sessions} sessions open, its most "
            "(RAGSTORE_MCP_MAX_SESSIONS); retry shortly: a session a client ends (DELETE) "
            f"frees its place at once, one left idle after {self.idle_s:g} s "
            "(RAGSTORE_MCP_SESSION_IDLE_S)"
        )


class ReadableReplies:
    """ASGI middleware: a POST body the SDK cannot read as a JSON-RPC message is answered
    as ``ragstore mcp`` answers such a line over stdio (``mcp.unreadable_reply``): one
    line, -32700 for no JSON, -32600 for JSON that is no message, under the request's id
    where it can be read. The SDK answered 400 with -32602 and pydantic's report (``11
    validation errors for ...``, a dozen lines with pydantic.dev URLs) for ``{"foo": 1}``
    or a batch, and -32700 "recursion limit exceeded" under no id for a request nested
    past its parser's depth (a made-up ``where``), which left the agent unable to tell
    which of its calls failed or why.

    Only the SDK's 400 answers of those two codes are replaced, after the body is read
    again as the SDK reads a stdio line; any other answer passes as it was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body: list[bytes] = []
        held: list[Message] = []  # a 400 of the SDK's, until it is judged

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await self._answer(scope, b"".join(body), held, send)

        await self.app(scope, watched_receive, watched_send)

    async def _answer(self, scope: Scope, body: bytes, held: list[Message], send: Send) -> None:
        """Send ours for the SDK's 400 ``held`` (its start and body), or ``held`` itself."""
        reply = _unreadable(body) if _refused_unread(held) else None
        if reply is None:
            for message in held:
                await send(message)
            return
        content = reply.model_dump_json(by_alias=True, exclude_unset=True).encode()
        start = held[0]
        headers = [
            (k, v)
            for k, v in start.get("headers", ())
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _refused_unread(held: list[Message]) -> bool:
    """Whether the SDK's 400 ``held`` says it could not read the body as a message."""
    text = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and error.get("code") in (PARSE_ERROR, INVALID_PARAMS)


def _unreadable(body: bytes) -> JSONRPCError | None:
    """Our answer to ``body``, read as the SDK reads a stdio line; None if it reads."""
    from ragstore.integrations.mcp import unreadable_reply  # which imports this module

    try:
        jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError as exc:
        reply = unreadable_reply(exc, what="body")
    except ValueError:  # not even UTF-8, say
        reply = unreadable_reply(ValueError(), what="body")
    else:
        return None
    if reply is None:  # a notification, answered over stdio with silence; HTTP must answer
        text = "the body is not a valid JSON-RPC message (jsonrpc, id, method, params)"
        reply = JSONRPCError(
            jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message=text)
        )
    return reply
