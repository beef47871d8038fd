"""Ragstore errors as HTTP answers: RFC 9457 ``application/problem+json``.

:data:`PROBLEMS` maps every class of the :mod:`ragstore.errors` hierarchy to its status and
title (a test checks that it covers them all). Every answer carries the stable ``code``, a
human ``detail`` and the ``request_id``. Shared by the API and MCP over HTTP (and by the
middleware of both that answers before any route ran:
:func:`send_problem`), so one error reads alike on each; the API's exception handlers
(``ragstore.api.errors``) build on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Scope, Send

from ragstore import errors as e

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
    e.CursorStaleError: Problem(409, "Cursor from another collection"),
    e.AuthenticationError: Problem(401, "Unauthorized"),
    e.PermissionDeniedError: Problem(403, "Forbidden"),
    e.RateLimitedError: Problem(429, "Too many requests"),
    e.RequestTooLargeError: Problem(413, "Request too large"),
    e.HeadersTooLargeError: Problem(431, "Request headers too large"),
    e.MethodNotAllowedError: Problem(405, "Method not allowed"),
    e.NotReadyError: Problem(503, "Not ready"),
    e.OverloadedError: Problem(503, "Server overloaded"),
    e.SearchTimeoutError: Problem(504, "Search timed out"),
    e.AnswerTooLargeError: Problem(422, "Answer too large"),
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
    e.ParseHelperUnavailableError: Problem(503, "Parse helper unavailable"),
    e.ResourcesExhaustedError: Problem(503, "Out of descriptors or memory"),
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


def retry_after(exc: e.RagstoreError) -> float | None:
    """Seconds a client should wait before retrying, for the errors that pass with time."""
    if isinstance(exc, e.RetryLater):
        return exc.retry_after
    if isinstance(exc, e.NotReadyError):
        return 5.0
    if isinstance(exc, e.ParseHelperUnavailableError):
        return exc.retry_after  # None where waiting does not help
    return None


def problem_body(
    exc: e.RagstoreError, *, request_id: str, instance: str, **extra: Any
) -> dict[str, Any]:
    p = problem_for(type(exc))
    body: dict[str, Any] = {
        "type": f"urn:ragstore:problem:{exc.code}",
        "title": p.title,
        "status": p.status,
        "detail": e.public_detail(exc),
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
