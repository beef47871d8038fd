"""The one exception hierarchy of ragstore.

Every failure a user can see is a :class:`RagstoreError` with a stable machine-readable
``code``, the HTTP status the API answers with and the exit status the CLI ends with. The
CLI prints ``error[code]: message`` on one line; the API answers RFC 9457 problem+json.
Foreign exceptions (psycopg, pydantic, parsers) are translated into these where they
are caught, never passed through to a user.

::

    RagstoreError
    ├── ConfigError                     config_invalid
    ├── DatabaseError                   database_error
    │   ├── DatabaseUnavailableError    database_unavailable
    │   ├── ExtensionMissingError       extension_missing
    │   ├── ReplicaBehindError          replica_behind
    │   ├── SchemaMismatchError         schema_mismatch
    │   └── StatementCancelledError     statement_cancelled
    ├── NotFoundError                   not_found
    │   ├── CollectionNotFoundError     collection_not_found
    │   ├── DocumentNotFoundError       document_not_found
    │   ├── JobNotFoundError            job_not_found
    │   └── ApiKeyNotFoundError         key_not_found
    ├── ConflictError                   conflict
    ├── AuthenticationError             unauthorized
    ├── PermissionDeniedError           forbidden
    ├── RateLimitedError                rate_limited
    ├── RequestTooLargeError            request_too_large
    │   └── HeadersTooLargeError        headers_too_large
    ├── MethodNotAllowedError           method_not_allowed
    ├── NotReadyError                   not_ready
    ├── SearchTimeoutError              search_timeout
    ├── ReadOnlyError                   read_only
    ├── InputError                      invalid_input
    │   ├── PathNotFoundError           path_not_found
    │   ├── FileUnreadableError         file_unreadable
    │   ├── UnsupportedFormatError      unsupported_format
    │   ├── EmptyDocumentError          empty_document
    │   ├── BinaryFileError             binary_file
    │   ├── DecodeError                 invalid_encoding
    │   ├── FileTooLargeError           payload_too_large
    │   ├── CorruptDocumentError        corrupt_document
    │   ├── ParseTimeoutError           parse_timeout
    │   ├── EncryptedDocumentError      encrypted_document
    │   ├── InvalidFilterError          invalid_filter
    │   ├── AnswerTooLargeError         answer_too_large
    │   ├── MalformedRequestError       malformed_request
    │   ├── ImportSourceError           import_source_invalid
    │   └── ImportValidationError       import_invalid
    ├── ImportVerificationError         import_verification_failed
    ├── BackupError                     backup_failed
    │   └── BackupInvalidError          backup_invalid
    ├── DiskFullError                   disk_full
    ├── ParseHelperUnavailableError     parse_helper_unavailable
    ├── ResourcesExhaustedError         resources_exhausted
    ├── OutcomeUnknownError             outcome_unknown
    └── ModelError                      model_error
        ├── ModelNotFoundError          model_not_found
        ├── ModelMismatchError          model_mismatch
        ├── EmbeddingProviderError      embedding_provider_error
        └── MigrationStateError         model_migration_state
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class RagstoreError(Exception):
    """Root of every error ragstore raises on purpose."""

    code = "internal_error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # members the HTTP API adds to this error's problem+json body (RFC 9457
        # extensions), e.g. what an upload stored before one of its files failed
        self.problem_members: dict[str, Any] = {}
        # what the one who made the failed request does about it ("only this request
        # failed, retry it"), said as the message's last words: a background job's
        # record, which has no request to retry, says its own instead (public_reason
        # leaves it out, public_detail keeps it)
        self.advice = ""

    def __str__(self) -> str:
        return self.message


class ConfigError(RagstoreError):
    code = "config_invalid"
    http_status = 500
    exit_code = 78  # EX_CONFIG


class DatabaseError(RagstoreError):
    """PostgreSQL refused a statement for a reason that is not the caller's input: our bug
    or the server's state (permissions, disk). Bad input maps to 4xx in ``db/errors.py``."""

    code = "database_error"
    http_status = 500
    exit_code = 70  # EX_SOFTWARE


class RetryLater(Exception):
    """Mixed into the errors that pass with time: ``retry_after`` seconds is the hint a
    client is sent (HTTP ``Retry-After``, ``http/problems.retry_after``). Not a class of the
    hierarchy itself (no code of its own): it comes first in their bases, so its
    ``__init__`` hands the message on to theirs."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailableError(RetryLater, DatabaseError):
    """No connection to PostgreSQL. ``public`` is what an API caller is told (never the
    database's address); ``retry_after`` seconds is the hint sent as ``Retry-After``.
    ``busy`` says the server answers but every pooled connection is in use: load, not
    a failure (a read replica's router must not mark such a replica down).
    ``says_outcome``: the message already says what became of the write that failed
    (its transaction rolled back, nothing stored), so callers add nothing to it."""

    code = "database_unavailable"
    http_status = 503
    exit_code = 69  # EX_UNAVAILABLE

    def __init__(
        self,
        message: str,
        public: str | None = None,
        retry_after: float = 5.0,
        *,
        busy: bool = False,
        says_outcome: bool = False,
    ) -> None:
        super().__init__(message, retry_after)
        self.public = public or "the database is unavailable"
        self.busy = busy
        self.says_outcome = says_outcome


class ExtensionMissingError(DatabaseError):
    code = "extension_missing"
    http_status = 503
    exit_code = 69


class SchemaMismatchError(DatabaseError):
    code = "schema_mismatch"
    http_status = 503
    exit_code = 69


class ReplicaBehindError(RetryLater, DatabaseError):
    """A read-only server's replica has not replayed the caller's last write in time (503);
    ``retry_after`` seconds is a fair guess at when it will have."""

    code = "replica_behind"
    http_status = 503
    exit_code = 69  # EX_UNAVAILABLE


class StatementCancelledError(RetryLater, DatabaseError):
    """PostgreSQL cancelled one statement of the request (an administrator's
    ``pg_cancel_backend``, a role's own ``statement_timeout`` or ``lock_timeout``): that
    request failed, the
    database is fine (503: retry it; ``retry_after`` seconds is the hint)."""

    code = "statement_cancelled"
    http_status = 503
    exit_code = 75  # EX_TEMPFAIL


class NotFoundError(RagstoreError):
    code = "not_found"
    http_status = 404
    exit_code = 66  # EX_NOINPUT


class CollectionNotFoundError(NotFoundError):
    code = "collection_not_found"

    def __init__(self, message: str, *, collection: str = "", known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.collection = collection
        self.known = known

    @classmethod
    def missing(cls, name: str, known: Sequence[str]) -> CollectionNotFoundError:
        """``name`` does not exist; the message lists ``known`` to help a typo."""
        names = ", ".join(known) or "none yet"
        return cls(
            f"collection {name!r} does not exist (collections: {names}); "
            "ingest into it to create it",
            collection=name,
            known=tuple(known),
        )

    def seen_by(self, sees: Callable[[str], bool]) -> CollectionNotFoundError:
        """The same error listing only the collections a caller may see: a key limited to
        one collection must not learn the others' names from a 404."""
        if not self.collection:
            return self
        return CollectionNotFoundError.missing(self.collection, [n for n in self.known if sees(n)])


class DocumentNotFoundError(NotFoundError):
    code = "document_not_found"

    @classmethod
    def missing(cls, document: int | str, collection: str) -> DocumentNotFoundError:
        """The error for a document id or source a collection does not hold: names both,
        and how to see what it holds. One text for the database (``db.catalog``) and the
        ``Client``, which finds a document by name through the list route."""
        return cls(
            f"document {document!r} is not in collection {collection!r}; list its documents "
            f"with `ragstore documents list -c {collection}` "
            f"(API: GET /v1/collections/{collection}/documents)"
        )


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class ApiKeyNotFoundError(NotFoundError):
    code = "key_not_found"


class ConflictError(RagstoreError):
    code = "conflict"
    http_status = 409
    exit_code = 65


class CursorStaleError(ConflictError):
    """A listing's cursor from another collection of that name: it was deleted and made
    again, or re-cut for another model (its documents under new ids), since the cursor's
    page. Paging went on into the other collection's rows as if they followed."""

    code = "cursor_stale"


class AuthenticationError(RagstoreError):
    """No API key, or one that is unknown or revoked (HTTP 401)."""

    code = "unauthorized"
    http_status = 401
    exit_code = 77  # EX_NOPERM


class PermissionDeniedError(RagstoreError):
    """A valid API key without the scope or collection the request needs (HTTP 403)."""

    code = "forbidden"
    http_status = 403
    exit_code = 77


class RateLimitedError(RetryLater, RagstoreError):
    """The API key spent its request budget; ``retry_after`` seconds until the next one."""

    code = "rate_limited"
    http_status = 429
    exit_code = 75  # EX_TEMPFAIL

    def __init__(self, message: str, retry_after: float = 1.0, *, failed_keys: bool = False):
        super().__init__(message, retry_after)
        # refused for too many failed key checks (auth/throttle.py), not a key's budget: a
        # caller guessing keys, whose request body is not even read (api/middleware.py)
        self.failed_keys = failed_keys


class RequestTooLargeError(RagstoreError):
    """A request body over RAGSTORE_MAX_REQUEST_BYTES / RAGSTORE_MAX_UPLOAD_BYTES (HTTP 413)."""

    code = "request_too_large"
    http_status = 413
    exit_code = 65


class HeadersTooLargeError(RequestTooLargeError):
    """A request head (request line and headers) over ``RAGSTORE_MAX_HEADER_BYTES``: answered
    by the HTTP protocol layer before the app sees the request."""

    code = "headers_too_large"
    http_status = 431


class MethodNotAllowedError(RagstoreError):
    code = "method_not_allowed"
    http_status = 405
    exit_code = 64


class ReadOnlyError(RagstoreError):
    """A write sent to a server that serves a read replica only (HTTP 403)."""

    code = "read_only"
    http_status = 403
    exit_code = 77


class NotReadyError(RagstoreError):
    """The service cannot serve yet (database, schema or model); the reason says which."""

    code = "not_ready"
    http_status = 503
    exit_code = 69


class OverloadedError(RetryLater, RagstoreError):
    """A request that waited ``RAGSTORE_QUEUE_WAIT_S`` for one of the server's worker
    threads (every one busy) and was answered without being run (``api/shed.py``): a
    client that waits on a saturated server gives up long before its turn comes, and
    the work done then is for no one. ``retry_after`` seconds is the hint sent."""

    code = "overloaded"
    http_status = 503
    exit_code = 75  # EX_TEMPFAIL


class SearchTimeoutError(RagstoreError):
    """A search statement ran past ``RAGSTORE_SEARCH_TIMEOUT_S`` and PostgreSQL ended it (504)."""

    code = "search_timeout"
    http_status = 504
    exit_code = 75  # EX_TEMPFAIL


class InputError(RagstoreError):
    code = "invalid_input"
    http_status = 422
    exit_code = 65  # EX_DATAERR


class MalformedRequestError(InputError):
    """A request the HTTP parser could not read (its request line, a header or its framing):
    answered 400 by the HTTP protocol layer before the app sees the request."""

    code = "malformed_request"
    http_status = 400


class PathNotFoundError(InputError):
    code = "path_not_found"
    exit_code = 66


class FileUnreadableError(InputError):
    """The file exists but cannot be read: permissions, an I/O error, a directory loop."""

    code = "file_unreadable"
    exit_code = 66


class UnsupportedFormatError(InputError):
    code = "unsupported_format"
    http_status = 415


class UnsupportedContentEncodingError(InputError):
    """A request body sent with a ``Content-Encoding`` (gzip, br, ...): the server decodes
    none, and RFC 9110 (15.5.16) answers a coding the server does not take with 415, the
    answer saying ``Accept-Encoding: identity`` (RFC 7694) so a client knows to send the
    body as is. It was a 422 ``invalid_input``, which reads as a fault in the body itself."""

    code = "unsupported_content_encoding"
    http_status = 415


class EmptyDocumentError(InputError):
    code = "empty_document"


class BinaryFileError(InputError):
    code = "binary_file"
    http_status = 415


class DecodeError(InputError):
    code = "invalid_encoding"


class FileTooLargeError(InputError):
    code = "payload_too_large"
    http_status = 413


class CorruptDocumentError(InputError):
    code = "corrupt_document"


class ParseTimeoutError(InputError):
    """A file whose parser ran past ``RAGSTORE_PARSE_TIMEOUT_S`` (``parsing.sandbox``)."""

    code = "parse_timeout"


class EncryptedDocumentError(InputError):
    code = "encrypted_document"


class InvalidFilterError(InputError):
    code = "invalid_filter"
    http_status = 400


class AnswerTooLargeError(InputError):
    """A search asking for more chunks in its answer (``k`` hits, each with its context)
    than ``RAGSTORE_MAX_ANSWER_CHUNKS``: refused before it runs, as one request's answer
    of that size held hundreds of megabytes of the server's memory."""

    code = "answer_too_large"


class ImportSourceError(InputError):
    """A legacy store could not be read: bad file, missing column, unreadable row."""

    code = "import_source_invalid"


class ImportValidationError(InputError):
    """The source holds records the chosen policy refuses (bad dimension, NaN, duplicates ...)."""

    code = "import_invalid"


class ImportVerificationError(RagstoreError):
    """Written rows differ from the source, or search parity fell short; nothing was kept."""

    code = "import_verification_failed"
    http_status = 500
    exit_code = 70


class BackupError(RagstoreError):
    """pg_dump or pg_restore failed; the database was left as it was."""

    code = "backup_failed"
    http_status = 500
    exit_code = 74  # EX_IOERR


class BackupInvalidError(BackupError):
    """The file is not a ragstore backup (missing, truncated, checksum differs)."""

    code = "backup_invalid"
    http_status = 422
    exit_code = 65


class DiskFullError(RagstoreError):
    """A file ragstore writes itself (an upload's staging file) found its disk full; the
    message names the folder and says to free space. A full disk under the database is
    ``database_unavailable``, with the database's own words."""

    code = "disk_full"
    http_status = 507  # Insufficient Storage
    exit_code = 74  # EX_IOERR


class ParseHelperUnavailableError(RagstoreError):
    """A parse helper process (``parsing.sandbox``) could not be started: its interpreter
    cannot be run, the process found no descriptor, memory or process slot left to start
    it, or it ended (or hung) before it was ready. The machine's or the installation's
    state, not the file's and not a bug of ragstore (it was ``internal_error``, which
    TROUBLESHOOTING.md calls one). ``retry_after`` is set where the cause passes with time
    (descriptors, memory, a loaded machine): the API then answers ``Retry-After``; None
    where it does not (no interpreter there, one that cannot import ragstore)."""

    code = "parse_helper_unavailable"
    http_status = 503
    exit_code = 69  # EX_UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ResourcesExhaustedError(RetryLater, RagstoreError):
    """A file's read (or parse) failed because the process ran out of file descriptors
    or memory (EMFILE, ENFILE, ENOMEM: ``files.NOT_THE_FILE``), in an ingest, a client's
    upload or an import: the machine's state at that moment, which passes as other work
    ends, not the file's fault and not a bug of ragstore (it was ``internal_error``, which
    TROUBLESHOOTING.md says to report). 503 with ``Retry-After``; the CLI exits 75
    (EX_TEMPFAIL: try again later)."""

    code = "resources_exhausted"
    http_status = 503
    exit_code = 75  # EX_TEMPFAIL

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message, retry_after)


class OutcomeUnknownError(RagstoreError):
    """A restore, upgrade or downgrade lost its database as it ended, and what it left
    could not be read back: it may have taken effect or not. Neither "failed" nor "done"
    is true; the message says how to tell (``ragstore db status``, the counts). Raised by
    the HTTP clients too for a write sent that got no answer (the connection dropped, a
    read timeout): the message says whether sending it again is safe."""

    code = "outcome_unknown"
    http_status = 500
    exit_code = 76


class ModelError(RagstoreError):
    code = "model_error"
    http_status = 500
    exit_code = 70


class ModelNotFoundError(ModelError):
    """The model a command, setting (``RAGSTORE_MODEL``) or collection names is neither
    pinned nor built in, or names no weights to load: a configuration to fix, not
    ragstore's failure (it exited 70, EX_SOFTWARE, as a bug does)."""

    code = "model_not_found"
    http_status = 404
    exit_code = 78  # EX_CONFIG


class ModelMismatchError(ModelError):
    """A model differs from what a collection, archive or import is pinned to or declares
    (weights checksum, dimension, probe vector, another model's vectors): a setup to fix
    (install the pinned weights, declare the right model), not ragstore's failure (it
    exited 70, EX_SOFTWARE, as a bug does)."""

    code = "model_mismatch"
    http_status = 409
    exit_code = 78  # EX_CONFIG


class EmbeddingProviderError(ModelError):
    """A remote embedding endpoint failed or answered nonsense (after retries)."""

    code = "embedding_provider_error"
    http_status = 502


class MigrationStateError(ModelError):
    """A model migration, rollback or prune cannot run in the collection's current state."""

    code = "model_migration_state"
    http_status = 409


# every database address ``db.database.describe`` has written (user@host:port/db, no
# password): public_detail hides them in any error's text
_ADDRESSES: set[str] = set()
_ADDRESSES_LOCK = threading.Lock()
# the rest: an address in a URL not described here (an import source's, say)
_URL = re.compile(r"postgres(?:ql)?://\S+")
HIDDEN_ADDRESS = "the database"


def known_address(text: str) -> str:
    """Note ``text`` as a database address that :func:`public_detail` hides; returns it."""
    with _ADDRESSES_LOCK:
        _ADDRESSES.add(text)
    return text


def hide_addresses(text: str) -> str:
    """``text`` with every database address in it replaced by "the database"."""
    with _ADDRESSES_LOCK:
        known = sorted(_ADDRESSES, key=len, reverse=True)
    for address in known:
        if address in text:
            text = text.replace(address, HIDDEN_ADDRESS)
    return _URL.sub(HIDDEN_ADDRESS, text)


def public_reason(exc: RagstoreError) -> str:
    """What any reader may be told of ``exc``, and no more: an unreachable database is
    described without its address (the full message, with it, goes to the log).

    Every other error's message is told with any database address in it hidden: a
    schema mismatch ("the database schema on postgresql://user@host:port/db ..."), a
    statement cancelled, a missing extension told API callers the database's address,
    user and name. The message itself (the CLI's, the log's) keeps it. Said for no
    surface in particular: :func:`public_detail` adds what an API caller does next, and
    a background job's record (``jobs.runner``) what became of its documents. An error's
    ``advice`` (the message's last words, "only this request failed, retry it") is left
    out: a job's records said "retry the request" of a request nobody had made."""
    if isinstance(exc, DatabaseUnavailableError):
        return exc.public
    told = hide_addresses(exc.message)
    return told.removesuffix(f"; {exc.advice}") if exc.advice else told


def public_detail(exc: RagstoreError) -> str:
    """What an API caller (HTTP problem details, an MCP tool's error) is told:
    :func:`public_reason`, and for an unreachable database when to send the request again
    (the ``Retry-After`` it is answered with) and that the server's log has the rest.

    Not a background job's record: its errors said "retry in 5s", a request to repeat
    that nobody had made, and its reader could do nothing with a wait of seconds; nor
    the ``advice`` of an error (a statement cancelled: "only this request failed, retry
    it"), which the API tells as the message does."""
    if isinstance(exc, DatabaseUnavailableError):
        return (
            f"{public_reason(exc)}; retry in {max(1, round(exc.retry_after))}s (the server "
            "log has the details)"
        )
    return f"{public_reason(exc)}; {exc.advice}" if exc.advice else public_reason(exc)


# the error types whose message pydantic builds as "<prefix>, <the exception's text>"
_WRAPPED_ERRORS = {"value_error": "Value error, ", "assertion_error": "Assertion failed, "}


def pydantic_message(err: Mapping[str, Any]) -> str:
    """What is wrong, in one of pydantic's errors: a validator's own message as it raised
    it, pydantic's own wording otherwise (``Input should be a valid integer``). The CLI's
    configuration errors (``config.describe_error``) and the HTTP API's validation
    problems (``api/errors.py``) both say it so.

    pydantic puts ``Value error, `` (``Assertion failed, `` for an assert) before the
    message of an exception a validator raised: the CLI printed ``RAGSTORE_DATA_DIR=''
    is invalid: Value error, it is empty; ...``, and the API answered ``body: Value
    error, give `query` ...``, the name of a Python exception in the middle of a
    sentence written for the user."""
    msg = str(err.get("msg", "bad value"))
    prefix = _WRAPPED_ERRORS.get(str(err.get("type")))
    if prefix is None:
        return msg
    raised = (err.get("ctx") or {}).get("error")  # absent from errors(include_context=False)
    text = str(raised if raised is not None else msg.removeprefix(prefix)).strip()
    return text or msg  # a bare ``assert``: pydantic's words are all there is


def invalid_collection_name(name: object) -> InputError:
    """The refusal of ``name`` as a collection name, one wording for the Store
    (``repository.check_name``) and the Client (``_requests._n``). A name made up by a
    caller may be megabytes: it is echoed cut at 100 characters (a valid one is <= 63);
    the Client quoted it whole, so a 10 KB name made a 10 KB error."""
    shown = name[:100] + "..." if isinstance(name, str) and len(name) > 100 else name
    return InputError(
        f"invalid collection name {shown!r}: use 1-63 letters, digits, '_', '-' or '.', "
        "starting with a letter or digit"
    )


def all_error_classes() -> list[type[RagstoreError]]:
    """Every class of the hierarchy, root first; the API and CLI tables are checked against it."""
    found: list[type[RagstoreError]] = []
    todo: list[type[RagstoreError]] = [RagstoreError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found
