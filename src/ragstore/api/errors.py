"""The one place ragstore errors become HTTP answers: RFC 9457 ``application/problem+json``.

:data:`PROBLEMS` maps every class of the :mod:`ragstore.errors` hierarchy to its status and
title (a test checks that it covers them all). Every answer carries the stable ``code``, a
human ``detail`` and the ``request_id``; no stack trace ever reaches a client: an
unexpected exception is logged here with its request id and answered as ``internal_error``.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Scope, Send

from ragstore import errors as e
from ragstore.api.disconnect import CLIENT_CLOSED

log = logging.getLogger("ragstore.api")

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    status: int
    title: str


PROBLEMS: dict[type[e.RagstoreError], Problem] = {
    e.RagstoreError: Problem(500, "Internal error"),
    e.ConfigError: Problem(500, "Server misconfigured"),
    e.DatabaseError: Problem(500, "Database error"),
    e.DatabaseUnavailableError: Problem(503, "Database unavailable"),
    e.ExtensionMissingError: Problem(503, "Database extension missing"),
    e.SchemaMismatchError: Problem(503, "Database schema mismatch"),
    e.ReplicaBehindError: Problem(503, "Replica behind"),
    e.StatementCancelledError: Problem(503, "Statement cancelled"),
    e.ReadOnlyError: Problem(403, "Read-only server"),
    e.NotFoundError: Problem(404, "Not found"),
    e.CollectionNotFoundError: Problem(404, "Collection not found"),
    e.DocumentNotFoundError: Problem(404, "Document not found"),
    e.JobNotFoundError: Problem(404, "Job not found"),
    e.ApiKeyNotFoundError: Problem(404, "API key not found"),
    e.ConflictError: Problem(409, "Conflict"),
    e.AuthenticationError: Problem(401, "Unauthorized"),
    e.PermissionDeniedError: Problem(403, "Forbidden"),
    e.RateLimitedError: Problem(429, "Too many requests"),
    e.RequestTooLargeError: Problem(413, "Request too large"),
    e.HeadersTooLargeError: Problem(431, "Request headers too large"),
    e.MethodNotAllowedError: Problem(405, "Method not allowed"),
    e.NotReadyError: Problem(503, "Not ready"),
    e.OverloadedError: Problem(503, "Server overloaded"),
    e.SearchTimeoutError: Problem(504, "Search timed out"),
    e.InputError: Problem(422, "Invalid input"),
    e.PathNotFoundError: Problem(422, "Path not found"),
    e.FileUnreadableError: Problem(422, "File unreadable"),
    e.UnsupportedFormatError: Problem(415, "Unsupported format"),
    e.UnsupportedContentEncodingError: Problem(415, "Unsupported content encoding"),
    e.EmptyDocumentError: Problem(422, "Empty document"),
    e.BinaryFileError: Problem(415, "Binary file"),
    e.DecodeError: Problem(422, "Invalid encoding"),
    e.FileTooLargeError: Problem(413, "Payload too large"),
    e.CorruptDocumentError: Problem(422, "Corrupt document"),
    e.ParseTimeoutError: Problem(422, "Parse timed out"),
    e.InvalidFilterError: Problem(400, "Invalid filter"),
    e.MalformedRequestError: Problem(400, "Malformed request"),
    e.ModelError: Problem(500, "Model error"),
    e.ModelNotFoundError: Problem(404, "Model not found"),
    e.ModelMismatchError: Problem(409, "Model mismatch"),
    e.EmbeddingProviderError: Problem(502, "Embedding provider error"),
    e.MigrationStateError: Problem(409, "Model migration in the wrong state"),
    e.EncryptedDocumentError: Problem(422, "Encrypted document"),
    e.ImportSourceError: Problem(422, "Invalid import source"),
    e.ImportValidationError: Problem(422, "Import validation failed"),
    e.ImportVerificationError: Problem(500, "Import verification failed"),
    e.BackupError: Problem(500, "Backup failed"),
    e.BackupInvalidError: Problem(422, "Invalid backup"),
    e.OutcomeUnknownError: Problem(500, "Outcome unknown"),
    e.DiskFullError: Problem(507, "Disk full"),
}


def problem_for(cls: type[e.RagstoreError]) -> Problem:
    """The class's entry, or its nearest listed ancestor's (a class added elsewhere)."""
    for klass in cls.__mro__:
        if klass in PROBLEMS:
            return PROBLEMS[klass]
    return PROBLEMS[e.RagstoreError]


def error_class_for_code(code: str) -> type[e.RagstoreError]:
    """The class whose stable ``code`` this is (the root class for an unknown code)."""
    for cls in e.all_error_classes():
        if cls.code == code:
            return cls
    return e.RagstoreError


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


public_detail = e.public_detail  # the routes' name for it (defined with the errors)


def retry_after(exc: e.RagstoreError) -> float | None:
    """Seconds a client should wait before retrying, for the errors that pass with time."""
    if isinstance(exc, e.RetryLater):
        return exc.retry_after
    if isinstance(exc, e.NotReadyError):
        return 5.0
    return None


def problem_body(
    exc: e.RagstoreError, *, request_id: str, instance: str, **extra: Any
) -> dict[str, Any]:
    p = problem_for(type(exc))
    body: dict[str, Any] = {
        "type": f"urn:ragstore:problem:{exc.code}",
        "title": p.title,
        "status": p.status,
        "detail": public_detail(exc),
        "code": exc.code,
        "instance": instance,
        "request_id": request_id,
    }
    body.update(extra)
    return body


def problem_response(
    exc: e.RagstoreError, *, request_id: str, instance: str, **extra: Any
) -> JSONResponse:
    body = problem_body(exc, request_id=request_id, instance=instance, **extra)
    headers = {"X-Request-ID": request_id} if request_id else {}
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(max(1, round(wait)))
    if isinstance(exc, e.AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="ragstore"'
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


async def send_problem(
    scope: Scope, send: Send, exc: e.RagstoreError, *, close: bool = False
) -> None:
    """Answer a request from ASGI middleware (before any route ran) with ``exc``'s problem,
    the request body left unread; ``close`` adds ``Connection: close`` (the client may be
    sending a body nobody will read)."""
    state: dict[str, Any] = scope.get("state", {})
    response = problem_response(
        exc, request_id=str(state.get("request_id", "")), instance=scope.get("path", "")
    )
    if close:
        response.headers["Connection"] = "close"

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


def _name_rule(err: dict[str, Any]) -> str | None:
    """The collection-name rule's own message (:func:`repository.check_name`, the Store's,
    the Client's and the CLI's) for a name the API's pattern refused; None for any other
    error. FastAPI answered ``String should match pattern '^[A-Za-z0-9]...$'``, a regular
    expression where every other way in says which characters a name takes."""
    from ragstore.db import repository

    ctx = err.get("ctx") or {}
    if err.get("type") != "string_pattern_mismatch" or ctx.get("pattern") != (
        repository.NAME_RE.pattern
    ):
        return None
    try:
        repository.check_name(err.get("input"))  # type: ignore[arg-type]
    except e.InputError as exc:
        return exc.message
    return None


def _validation_detail(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The detail of a request the schemas refused, and its ``errors`` member: each error
    at its place (``body.k``), said in pydantic's words for a wrong type or range and in
    the validator's own for a check of ours (:func:`~ragstore.errors.pydantic_message`),
    which went out as ``body: Value error, give `query` ...``. A check of the whole body
    (``schemas.Strict``, ``SearchRequest``) names its fields itself: its ``body:`` is
    left out of the detail."""
    items = []
    said = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = _name_rule(err) or e.pydantic_message(err)
        items.append({"loc": loc, "msg": msg})
        ours = err.get("type") in ("value_error", "assertion_error")
        said.append(msg if ours and loc == "body" else f"{loc}: {msg}")
    text = "; ".join(said[:5]) or "invalid request"
    return f"the request is invalid: {text}", items


def _disk_full_cause(exc: BaseException) -> e.RagstoreError | None:
    """The form parser's disk full, as its own error: FastAPI answers any failure to read a
    multipart body 400 "There was an error parsing the body", a full temporary folder (where
    Starlette spools an upload's files over 1 MB) among them, and that went out as 422
    ``invalid_input``, blaming the caller's body for the server's disk. Any other failure
    to write there (permission denied, a read-only filesystem, an I/O error) is the
    server's too: a 5xx naming the folder (``staging.folder_failed``)."""
    cause = exc.__cause__
    for _ in range(8):  # a chain's first few links; never a cycle
        if cause is None:
            return None
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.DiskFullError(
                f"the disk that holds the temporary folder {tempfile.gettempdir()} is full "
                f"({cause.strerror}) while the upload was read; free space on it (or set "
                "TMPDIR to a folder on a bigger disk), then retry: nothing of this upload was "
                "stored"
            )
        if isinstance(cause, OSError) and not isinstance(cause, ConnectionError):
            from ragstore.jobs.staging import folder_failed

            where = f"the temporary folder {tempfile.gettempdir()} (where uploads are read)"
            return folder_failed(cause, where)
        cause = cause.__cause__ or cause.__context__
    return None


def _client_left(exc: BaseException) -> bool:
    """Whether reading the body failed because the client hung up (Starlette's
    ``ClientDisconnect``): FastAPI answers that 400 "There was an error parsing the body",
    which went out as a 422 ``invalid_input`` and was counted and logged as bad input that
    nobody sent."""
    from starlette.requests import ClientDisconnect

    cause: BaseException | None = exc.__cause__
    for _ in range(8):  # a chain's first few links; never a cycle
        if cause is None:
            return False
        if isinstance(cause, ClientDisconnect):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _unreadable_form(exc: BaseException) -> e.InputError | None:
    """A multipart body the form parser could not read, said with the parser's own reason:
    Starlette answers every such failure (a part whose headers pass the parser's 4 KB,
    as a file name of 10,000 characters does; a body that does not match its boundary)
    400 "Invalid multipart data.", which went out as a 422 that said neither what was
    wrong nor how to send it. An ``InputError`` that reading the body raised (a body cut
    off before its closing boundary, :func:`ragstore.api.forms.cut_off_error`) is
    answered as itself."""
    from python_multipart.exceptions import FormParserError

    link: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(8):  # a chain's first few links; never a cycle
        if link is None:
            return None
        if isinstance(link, e.InputError):  # the body's reader refused it (api/forms.py)
            return link
        if isinstance(link, FormParserError):
            return e.InputError(
                f"the multipart body could not be read ({str(link)[:200]}): send each file "
                'as a part headed Content-Disposition: form-data; name="files"; '
                'filename="notes/a.md" (each header of a part, the one naming its file '
                "among them, at most 4 KB), the parts separated by the boundary the "
                "Content-Type names; nothing was stored"
            )
        link = link.__cause__ or link.__context__
    return None


def _unparsable_json(exc: BaseException) -> e.InputError | None:
    """What FastAPI's JSON parser could not take in a body that is valid JSON: it
    answers a parser's failure other than a syntax error with 400 "There was an error
    parsing the body", and that went out as a 422 saying nothing of what or where. A
    search filter of ``$and`` in ``$and`` a thousand deep reached Python's recursion
    limit so; an integer of more than 4,300 digits, Python's conversion limit."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return _undecodable_json(cause)
    if isinstance(cause, RecursionError):
        return e.InputError(
            "the JSON body is nested too deeply to be read (about a thousand levels); "
            "a search filter takes at most 32 levels of $and/$or/$not: flatten it, e.g. "
            "the alternatives of one field in one $in array"
        )
    if (
        isinstance(cause, ValueError)
        and not isinstance(cause, json.JSONDecodeError)
        and "digits" in str(cause)
    ):
        return e.InputError(
            f"the JSON body holds an integer of more than {sys.get_int_max_str_digits()} "
            "digits, which cannot be read; send numbers within the 64-bit range"
        )
    return None


def _undecodable_json(cause: UnicodeDecodeError) -> e.InputError:
    """A JSON body whose bytes are not text: FastAPI answered it 400 "There was an error
    parsing the body" (a 422 ``invalid_input`` here), naming neither the byte nor the
    encoding. The parser reads UTF-8, or UTF-16/32 when the body starts with their
    byte-order mark or zero bytes."""
    encoding = cause.encoding.upper().replace("_", "-")
    bad = cause.object[cause.start : cause.start + 1]
    what = f"the byte 0x{bad.hex()}" if bad else "the end of the body"
    guessed = "" if encoding.startswith("UTF-8") else " (the encoding its first bytes suggest)"
    return e.InputError(
        f"the JSON body is not {encoding} text{guessed}: {what} at byte {cause.start} "
        f"cannot be decoded ({cause.reason}); send the JSON encoded as UTF-8 (a text in "
        "another encoding, such as Latin-1, must be converted first), with "
        "Content-Type: application/json"
    )


def _json_syntax(err: dict[str, Any], doc: Any) -> str:
    """FastAPI's ``json_invalid`` error as one sentence: it said "JSON decode error" at
    ``body.N``, the parser's own reason (``Expecting ',' delimiter``) left out."""
    reason = str((err.get("ctx") or {}).get("error", "invalid JSON"))
    loc = err.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if isinstance(doc, str) and not doc.strip():
        where = " (the body holds nothing but white space or a byte-order mark)"
    elif isinstance(doc, str) and pos is not None:
        line = doc.count("\n", 0, pos) + 1
        column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
        where = f" at line {line}, column {column} (character {pos})"
    else:
        where = ""
    return (
        f"the body is not valid JSON: {reason}{where}; send one JSON object with "
        "Content-Type: application/json"
    )


def crash_response(exc: Exception, *, request_id: str, scope: Scope) -> JSONResponse:
    """The answer to an exception no handler took in the request of ``scope``: logged here
    with its request id, answered ``internal_error`` with the security headers of its path
    (an answer made outside :class:`~ragstore.console.security.SecurityHeadersMiddleware`
    lacked them). The headers follow the path without the root path (``--root-path``), as
    the middleware's do: with the prefix, a console page's or /docs' crash went without its
    ``Cache-Control: no-store`` (and under a root path such as ``/ui`` an API answer got it)."""
    from ragstore.api.deps import route_path
    from ragstore.console.security import security_headers

    log.error("request %s crashed", request_id, exc_info=exc)
    response = problem_response(
        e.RagstoreError(f"internal error; the server log has the details (request {request_id})"),
        request_id=request_id,
        instance=scope.get("path", ""),
    )
    response.headers.update(security_headers(route_path(scope) if "path" in scope else ""))
    return response


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str | None:
    """Every method some route takes on this request's path, for a 405's ``Allow``
    (``None``: the routes take the request's own method, so the 405 came from inside one,
    e.g. the static files; its own ``Allow``, if any, stands).

    RFC 9110 requires the header on a 405. It was dropped, and Starlette's names only the
    methods of the first route on the path (``POST`` for ``/v1/collections``, which takes
    ``GET`` too), so a client was told which method is refused but not which are taken.
    ``HEAD`` is named wherever ``GET`` is (it is answered there).
    """
    from starlette.routing import Match

    routes = request.app.router.routes
    taken = [
        m
        for m in (*_METHODS, request.method)
        if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)
    ]
    if "GET" in taken and "HEAD" not in taken:  # answered as the GET (HeadAsGetMiddleware)
        taken.insert(taken.index("GET") + 1, "HEAD")
    return None if request.method in taken else ", ".join(dict.fromkeys(taken))


# problem members listing what a failed request stored before its error: an upload's
# other files (``stored``), an ingest's earlier rounds (``stored_files``)
COMMITTED_MEMBERS = ("stored", "stored_files")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with problem+json: ours, FastAPI's validation, routing, crashes."""

    async def on_ragstore(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, e.RagstoreError)
        caller = getattr(request.state, "principal", None)
        if isinstance(exc, e.CollectionNotFoundError) and caller is not None:
            exc = exc.seen_by(caller.sees)
        if problem_for(type(exc)).status >= 500:
            log.warning("request %s failed: %s: %s", request_id_of(request), exc.code, exc)
        if any(exc.problem_members.get(k) for k in COMMITTED_MEMBERS):
            # some of the request's writes committed before this error: its RAGStore-LSN
            # must not be left out (api/routing.py reads this)
            request.state.writes_committed = True
        return problem_response(
            exc,
            request_id=request_id_of(request),
            instance=request.url.path,
            **exc.problem_members,
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        syntax = next((err for err in errors if err.get("type") == "json_invalid"), None)
        if syntax is not None:
            return problem_response(
                e.InputError(_json_syntax(syntax, exc.body)),
                request_id=request_id_of(request),
                instance=request.url.path,
            )
        detail, items = _validation_detail(errors)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if any(i["loc"] == "body" for i in items) and not media.endswith("json"):
            # FastAPI reads a body only as JSON: a form or text body fails as "not an object"
            detail += (
                f"; the body was sent as {media or 'no content type'}: send JSON with "
                "Content-Type: application/json"
            )
        return problem_response(
            e.InputError(detail),
            request_id=request_id_of(request),
            instance=request.url.path,
            errors=items,
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        err: e.RagstoreError
        if _client_left(exc):
            # nobody reads this answer: nginx's 499 "client closed request", as a search
            # whose client left gets (api/disconnect.py), for the access log and metrics
            return Response(status_code=CLIENT_CLOSED)
        if exc.status_code == 404:
            err = e.NotFoundError(
                f"no route {request.method} {request.url.path}; "
                "see /docs or /openapi.json for the API"
            )
        elif exc.status_code == 405:
            err = e.MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}")
        elif exc.status_code == 413:
            err = e.RequestTooLargeError(str(exc.detail))
        elif exc.status_code in (401, 403):
            err = e.AuthenticationError(str(exc.detail))
        elif (full := _disk_full_cause(exc)) is not None:
            err = full
        elif exc.status_code == 400 and (unread := _unparsable_json(exc) or _unreadable_form(exc)):
            err = unread
        elif exc.status_code < 500:
            err = e.InputError(str(exc.detail))
        else:
            err = e.RagstoreError("internal error; the server log has the details")
        response = problem_response(
            err, request_id=request_id_of(request), instance=request.url.path
        )
        # the exception's own headers go with it (they were dropped)
        for name, value in (exc.headers or {}).items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        if exc.status_code == 405 and (allowed := _allowed_methods(request)) is not None:
            response.headers["Allow"] = allowed
        return response

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        # only a crash of the outermost middleware gets here (CrashMiddleware answers the
        # others, inside them): Starlette answers it outside every middleware of the app
        return crash_response(exc, request_id=request_id_of(request), scope=request.scope)

    app.add_exception_handler(e.RagstoreError, on_ragstore)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
