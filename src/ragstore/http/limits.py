"""Request body limits for ragstore's HTTP servers (the API and MCP over HTTP).

:class:`BodyLimitMiddleware` refuses a body over its limit (or sent with a
``Content-Encoding``) before a route reads it; :func:`refuse_and_drain` answers such a
request and reads the rest of its body, so the client sees the answer rather than a
reset connection. The API's own middleware (``ragstore.api.middleware``) uses the same
drain for a request refused before its body was read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import RagstoreError, RequestTooLargeError, UnsupportedContentEncodingError
from ragstore.http.problems import problem_response
from ragstore.wire import REQUEST_LIMIT_HEADER, UPLOAD_LIMIT_HEADER

# How much of a refused body is read and dropped after its 413, so the client finishes
# sending and reads the answer (see refuse_and_drain): more, or longer, and it is cut off.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_MAX_S = 30.0
# Refused bodies drained at once by one server process; past it a refused connection is
# closed with its body unread, as before draining. A caller needs no key to be refused,
# so without a bound any number of connections could each hold the server reading and
# dropping up to DRAIN_MAX_BYTES for DRAIN_MAX_S.
DRAIN_MAX_AT_ONCE = 8
_draining = 0  # drains under way in this process (one event loop: no lock needed)


async def refuse_and_drain(
    scope: Scope,
    receive: Receive,
    send: Send,
    exc: RagstoreError,
    *,
    declared: int | None,
    headers: dict[str, str] | None = None,
    max_bytes: int = DRAIN_MAX_BYTES,
) -> None:
    """Answer ``exc``'s problem with ``Connection: close``, then read and drop the rest of
    the request body before the connection closes.

    Closed with the body unread, the connection was reset while the client was still
    sending, and the reset threw away the answer it had not read yet: async httpx raised
    ``ReadError`` ("cannot reach the ragstore server"), never saw the 413, and so could
    not send the upload again in smaller requests. The whole answer is written first
    (a client that reads early, or sent ``Expect: 100-continue``, has it at once), the
    response held open while the body is drained, then ended, which closes the
    connection. A body declared over ``max_bytes`` (:data:`DRAIN_MAX_BYTES`), one that
    grows past it, or one not done within :data:`DRAIN_MAX_S` (a trickle, or a client
    that stops sending) is not waited for: the connection is closed as before; so is
    one refused while :data:`DRAIN_MAX_AT_ONCE` others are being drained. ``headers`` are
    added to the answer.
    """
    global _draining
    state: dict[str, Any] = scope.get("state", {})
    response = problem_response(
        exc, request_id=str(state.get("request_id", "")), instance=scope.get("path", "")
    )
    response.headers.update(headers or {})
    response.headers["Connection"] = "close"
    max_bytes = min(max_bytes, DRAIN_MAX_BYTES)
    drain = (
        max_bytes > 0
        and (declared is None or declared <= max_bytes)
        and _draining < DRAIN_MAX_AT_ONCE
    )

    async def held_send(message: Message) -> None:
        if drain and message["type"] == "http.response.body" and not message.get("more_body"):
            message = {**message, "more_body": True}  # ended below, once the body is read
        await send(message)

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    if not drain:
        await response(scope, no_body, held_send)
        return
    _draining += 1
    try:
        await response(scope, no_body, held_send)
        with contextlib.suppress(TimeoutError):  # past the time bound: closed all the same
            await asyncio.wait_for(_drop_body(receive, max_bytes), DRAIN_MAX_S)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        _draining -= 1


async def _drop_body(receive: Receive, max_bytes: int) -> None:
    """Read the request body to its end (or the client's disconnect), at most
    ``max_bytes`` of it."""
    dropped = 0
    while dropped <= max_bytes:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


UPLOAD_SUFFIX = "/documents/upload"  # the one route that takes files (api/routes/documents.py)
DOCUMENT_SUFFIX = "/documents"  # a document given as JSON text


def _how_to_fit(path: str, multipart: bool) -> str:
    """What a 413 says to do, for the route refused. A document given as JSON text over
    the request limit was told its size and the setting only, and nothing of the upload
    route, which takes it as a file up to RAGSTORE_MAX_UPLOAD_BYTES."""
    if multipart:
        how = "send large document sets in several uploads"
    elif path.endswith(DOCUMENT_SUFFIX):
        how = (
            "send a document this large as a file upload (POST "
            f"{path}/upload; Client.upload(collection, [(name, text.encode())])), which "
            "takes up to RAGSTORE_MAX_UPLOAD_BYTES"
        )
    elif "/texts" in path:
        how = "send fewer texts or ids per request (the Python client splits them itself)"
    else:
        return "; nothing was done"
    return f"; {how}; nothing was stored"


class BodyLimitMiddleware:
    """Refuse bodies over the limit: multipart uploads get ``upload_bytes``, others ``json_bytes``.

    Only the upload route takes upload-sized bodies: a JSON route sent a body labelled
    multipart keeps the JSON limit (it read up to ``upload_bytes`` into memory before).

    A declared Content-Length over the limit is refused before reading; a body that grows past
    it while streaming is cut off with the same ``request_too_large`` problem. Either way the
    rest of the body is read and dropped after the answer (:func:`refuse_and_drain`), so the
    client reads the 413 rather than a reset connection.

    A body sent with a ``Content-Encoding`` (gzip, br, ...) is refused here too, before it
    is read (:func:`_content_coding`), with 415 and ``Accept-Encoding: identity`` (RFC 9110
    15.5.16, RFC 7694; it was a 422 ``invalid_input``): nothing decodes one, so a gzipped
    JSON body was answered "not UTF-8 text: the byte 0x8b", a gzipped upload "body.files:
    Field required", and a body labelled ``br`` but sent plain was read as if unlabelled.
    """

    def __init__(self, app: ASGIApp, *, json_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        multipart = ctype.startswith("multipart/") and scope["path"].endswith(UPLOAD_SUFFIX)
        limit = self.upload_bytes if multipart else self.json_bytes
        what = "upload" if multipart else "request body"
        setting = "RAGSTORE_MAX_UPLOAD_BYTES" if multipart else "RAGSTORE_MAX_REQUEST_BYTES"
        # the limit, said so a client can size its next requests (Client.upload does)
        advertised = {UPLOAD_LIMIT_HEADER if multipart else REQUEST_LIMIT_HEADER: str(limit)}

        def too_large(size: str) -> RequestTooLargeError:
            return RequestTooLargeError(
                f"the {what} is {size} bytes, over the limit of {limit} bytes ({setting})"
                + _how_to_fit(scope["path"], multipart)
            )

        declared = headers.get(b"content-length")
        coding = _content_coding(scope.get("headers", ()))
        if coding is not None:
            encoded = UnsupportedContentEncodingError(
                f"the {what} is sent with Content-Encoding: {coding}, which this server "
                "does not decode; send it uncompressed, without a Content-Encoding header; "
                "nothing was stored"
            )
            size = int(declared) if declared is not None and declared.isdigit() else None
            await refuse_and_drain(
                scope,
                receive,
                send,
                encoded,
                declared=size,
                max_bytes=limit,
                headers={"Accept-Encoding": "identity"},  # RFC 7694: what it does take
            )
            return
        if declared is not None and declared.isdigit() and int(declared) > limit:
            exc = too_large(declared.decode())
            await refuse_and_drain(
                scope, receive, send, exc, declared=int(declared), headers=advertised
            )
            return
        seen = 0
        started = False
        overflow: RequestTooLargeError | None = None

        async def counting_receive() -> Message:
            nonlocal seen, overflow
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflow = too_large(f"more than {limit}")
                    raise overflow
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if overflow is not None:
                # the app answered a body it could not read (form parsing turns our error
                # into a 4xx of its own): the client gets the 413 instead
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await refuse_and_drain(
                        scope, receive, send, overflow, declared=None, headers=advertised
                    )
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestTooLargeError as exc:
            if started:
                raise
            await refuse_and_drain(scope, receive, send, exc, declared=None, headers=advertised)


def _content_coding(headers: Any) -> str | None:
    """The ``Content-Encoding`` of a request other than ``identity`` (each header and each
    coding in a list counted), shortened for a message; None for a body sent as is."""
    codings = [
        part.strip()
        for name, value in headers
        if name.lower() == b"content-encoding"
        for part in value.decode("latin-1").split(",")
    ]
    sent = [c for c in codings if c and c.lower() != "identity"]
    return ", ".join(sent)[:100] if sent else None
