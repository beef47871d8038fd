"""Structured logs: one JSON object per line, or a readable console line on a terminal.

Every line carries ``timestamp`` (UTC, ISO 8601), ``level`` and ``event``; lines written
while a request is handled also carry ``request_id`` (and ``collection``/``duration_ms``
where the code knows them), bound with :func:`bind_request` through contextvars so that
library code logs them without passing them around.

Secrets never reach a line: values under secret-looking keys (password, api key, token,
authorization, database URL ...) are replaced by ``**********``, and any
``postgresql://user:password@`` or ``password=...`` inside a value loses its password, in a
dict's or a list's items and in an object's repr too (:func:`redacted`).
Query texts and document texts (keys ``query``, ``q``, ``text``) are dropped unless
``RAGSTORE_LOG_QUERIES=true``.

Configured only by entry points (CLI, API, worker) through :func:`configure_logging`;
importing ragstore configures nothing. Standard-library loggers (uvicorn, procrastinate,
alembic) are routed through the same renderer.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import IO, Any, Literal, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ragstore.stdfds import fill_closed_std_fds
from ragstore.urls import masked_urls

REDACTED = "**********"
_SECRET_KEY = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|database_url|dsn",
    re.IGNORECASE,
)
# a libpq keyword conninfo's password (``host=db password=s3cret``, ``password='a b'``),
# and a URL's ``?password=`` parameter: up to the closing quote or the next blank
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b\w*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s]+)", re.IGNORECASE
)
_QUERY_KEYS = frozenset({"query", "q", "text", "query_text"})

LogFormat = Literal["auto", "json", "console"]


class Redactor:
    """structlog processor: masks secrets; drops query texts unless told to keep them."""

    def __init__(self, *, log_queries: bool = False) -> None:
        self.log_queries = log_queries

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key in list(event):
            value = event[key]
            if key != "event" and _SECRET_KEY.search(key):
                event[key] = REDACTED
            elif key in _QUERY_KEYS and not self.log_queries:
                del event[key]
            elif not key.startswith("_"):  # structlog's own (``_record``) are left alone
                event[key] = redacted(value)
        return event


def redacted(value: Any, depth: int = 0) -> Any:
    """``value`` (a log line's field) as it may be logged: a string as
    :func:`redact_text` leaves it, a dict, list or tuple with each item so (a dict's
    secret-looking keys' values replaced), any other object by its repr when that repr
    holds a secret to mask (as the renderers would print it, masked), else unchanged.

    Only string fields were masked: a field holding a dict (a model's ``options``) or an
    object whose repr shows one (a model spec, a collection) was rendered whole, the
    password of a URL in it with it."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MOST_DEPTH:
        if type(value) is dict:
            return {
                k: REDACTED
                if isinstance(k, str) and _SECRET_KEY.search(k)
                else redacted(v, depth + 1)
                for k, v in value.items()
            }
        if type(value) in (list, tuple):
            return type(value)(redacted(v, depth + 1) for v in value)
    shown = repr(value)
    masked = redact_text(shown)
    return value if masked == shown and depth < _MOST_DEPTH else masked


# how deep :func:`redacted` walks a field's dicts and lists; below, an item is logged as
# its repr, masked (a structure that holds itself is not walked, nor rendered, for ever)
_MOST_DEPTH = 8


def redact_text(text: str) -> str:
    """``text`` with the password of any URL in it masked, and that of any keyword
    conninfo (``host=db user=app password=s3cret``, the other form libpq and
    RAGSTORE_DATABASE_URL take): it reached the log as it was. A URL's password runs to
    the last ``@`` of its authority, as httpx reads it (``ragstore.urls``): it stopped at
    the first, and ``http://u:p@ss@host`` logged ``ss``."""
    text = masked_urls(text, REDACTED)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


_FIRST = ("timestamp", "level", "event", "logger", "request_id", "collection", "duration_ms")


def _ordered(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """The well-known keys first, so a line reads the same way every time."""
    out = {k: event.pop(k) for k in _FIRST if k in event}
    out.update(event)
    return out


# C0 and C1 control characters (tab aside) and the Unicode line breaks: in a console line's
# message they would end the line or drive the terminal
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _one_line_event(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """The console renderer prints the message as it is (other values are quoted): a
    message carrying request data (a path, an error's text) with a newline in it read as
    a second, forged record, and an ANSI escape reached the terminal. They are escaped.

    So are other values': the renderer quotes only a value with blanks in it, so a
    collection name from a request's path (``/v1/collections/a%1B%5B2J``, in every
    access line, even a 404's) sent its escape sequence to the operator's terminal."""
    for key, text in event.items():
        if isinstance(text, str) and _CONTROL.search(text):
            event[key] = _CONTROL.sub(_escaped, text)
    return event


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _shared_processors(log_queries: bool) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        Redactor(log_queries=log_queries),
    ]


def configure_logging(
    level: str = "info",
    *,
    log_format: LogFormat = "auto",
    log_queries: bool = False,
    stream: IO[str] | None = None,
) -> None:
    """Send every log line (ours and the standard library's) to ``stream`` (stderr).

    ``auto`` renders JSON unless the stream is a terminal. Calling it again replaces the
    previous configuration (tests and the CLI re-configure freely). Where there is no
    ``sys.stderr`` (a process started with fd 2 closed), see :func:`_stderr_fallback`.
    """
    out = stream or sys.stderr or _stderr_fallback()
    use_console = log_format == "console" or (
        log_format == "auto" and hasattr(out, "isatty") and out.isatty()
    )
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    shared = _shared_processors(log_queries)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _ordered,
            *([_one_line_event] if use_console else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("ragstore")
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call, and logging.basicConfig's plain stderr handler
        plain = type(old) is logging.StreamHandler and old.stream in (sys.stderr, sys.stdout)
        if old.get_name() == "ragstore" or plain:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # our own access line replaces uvicorn's (it has the route, status and request id)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


_fallback: IO[str] | None = None


def _stderr_fallback() -> IO[str]:
    """Where log lines go in a process Python started without stderr (fd 2 closed at its
    start: ``uvicorn --factory ragstore.api.app:create_app 2>&-``, a service manager;
    the CLI's ``main`` fills fd 2 itself): ``sys.stderr`` is None, and every line was
    dropped without a word, though fd 2 may have been opened since (a service wrapper
    putting its log file there).

    fd 2 when it is open for writing. Closed, /dev/null is opened on it first (lines are
    dropped, quietly): otherwise the next file or connection the process opens (the
    connection to PostgreSQL) becomes fd 2, and what a library writes to stderr goes
    into it. Open for reading only (a file that took the number): lines are dropped, and
    that file is left alone; one the process opened for writing before this call took
    the number gets them, as it gets whatever a library writes to stderr. The same
    stream on every call, so reconfiguring opens nothing new."""
    global _fallback
    if _fallback is not None and not _fallback.closed:
        return _fallback
    fill_closed_std_fds((2,))
    if _writable(2):
        # kept for the process's life, as stderr is; fd 2 itself is never closed by it
        _fallback = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    else:
        _fallback = cast(IO[str], _Discard())  # a TextIOBase, as a file object is
    return _fallback


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing: log lines with nowhere to go."""

    def write(self, text: str) -> int:
        return len(text)


def _writable(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: as its stderr is, if open
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True
    try:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return False
    return mode in (os.O_WRONLY, os.O_RDWR)


def get_logger(name: str = "ragstore") -> Any:
    """A structlog logger; use keyword fields, not f-strings: ``log.info("ingested", n=3)``."""
    return structlog.stdlib.get_logger(name)


@contextmanager
def bind_request(request_id: str, **fields: Any) -> Iterator[None]:
    """Attach ``request_id`` (and other fields) to every line logged inside the block."""
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id, **fields)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def bind(**fields: Any) -> None:
    """Add fields (e.g. ``collection``) to the current request's lines."""
    structlog.contextvars.bind_contextvars(**fields)


def current_fields() -> MutableMapping[str, Any]:
    return structlog.contextvars.get_contextvars()
