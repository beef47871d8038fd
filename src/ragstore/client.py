"""``ragstore.Client`` and ``ragstore.AsyncClient``: the HTTP API from Python.

Both send the calls built in :mod:`ragstore._requests`, so they have the same verbs with
the same names and options as each other and as the in-process :class:`ragstore.Store`:
code moves between in-process and server by changing the line that builds the object.
A problem+json answer is raised as the :class:`~ragstore.errors.RagstoreError` subclass
whose ``code`` it carries, with ``status`` and ``request_id`` set on it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

import httpx

from ragstore import _requests as calls
from ragstore._requests import (
    RESENT,
    Call,
    Plan,
    Upload,
    error_from_problem,
    raise_for_problem,
    read_answer,
)
from ragstore.errors import (
    AuthenticationError,
    ConfigError,
    DatabaseUnavailableError,
    DocumentNotFoundError,
    InputError,
    OutcomeUnknownError,
    RagstoreError,
)
from ragstore.uploads.names import name_path
from ragstore.urls import shown_url
from ragstore.wire import IDEMPOTENCY_SUPPORT_HEADER, LSN_HEADER

__all__ = ["AsyncClient", "Client", "error_from_problem"]


def _found(page: dict[str, Any], collection: str, source: str) -> dict[str, Any]:
    """The one document of a page listed by exact ``source``, or the error the Store
    raises for it (no source is stored twice in a collection)."""
    asked = name_path(source)  # read as the server reads a name (NFC, \\ as /)
    found = [
        d
        for d in page["data"]
        if d.get("source") == source or (d.get("name") and PurePosixPath(d["name"]) == asked)
    ]
    if not found:
        # checked, not trusted: a server that ignored the filter would answer the
        # collection's first document, and `documents delete NAME --yes` delete it
        raise DocumentNotFoundError.missing(source, collection)
    return dict(found[0])


T = TypeVar("T")
_FINISHED = ("succeeded", "failed")
# the shortest pause wait_for_job takes between polls: poll=0 asked the server in a tight
# loop (thousands of requests a second, for up to the whole timeout)
MIN_POLL = 0.01
# used after close: httpx's own message said neither which object nor what to do (the
# in-process Store raises the same class, ragstore.store.Store._rt)
_CLOSED = "this {kind} is closed; open a new {kind}(...) (or keep using it inside its with block)"


def _headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header of ``api_key``, its surrounding whitespace dropped.

    A key read from a file kept its final newline, which no header may carry: every
    call failed "cannot reach the ragstore server ... Illegal header value b'Bearer
    rsk_...'", blaming the network and printing the whole secret; a key with a
    non-ASCII character raised UnicodeEncodeError. The server strips the token too, so
    the newline is dropped here; a key with characters inside that no key has is
    refused (AuthenticationError) without being repeated."""
    key = (api_key or "").strip()
    if not key:
        return {}
    if not all(33 <= ord(c) < 127 for c in key):
        raise AuthenticationError(
            "the API key has characters no key has (spaces, control or non-ASCII "
            "characters); keys look like rsk_<id>_<secret>, as `ragstore keys create` "
            "printed it"
        )
    return {"Authorization": f"Bearer {key}"}


# errors after which httpx sent none of the request: no connection was made (refused, no
# route, the name unresolved, a TLS handshake failed) or none came free in its pool
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# answered errors that pass with time, for a call that may be sent again whatever became
# of the first send (a read, an upsert); a proxy's 502/503/504 besides
_PASSING = frozenset(
    {
        "database_unavailable",
        "replica_behind",
        "statement_cancelled",
        "not_ready",
        "overloaded",
        "rate_limited",
    }
)
# answered errors of a request the server did not run: any call is sent again after them
_NOT_RUN = frozenset({"rate_limited", "not_ready", "overloaded"})
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MOST_S = 8.0


def _transport_error(
    exc: httpx.TransportError, base_url: object, method: str, path: str, effect: str
) -> RagstoreError:
    """What a request that got no answer means for its caller.

    Before: every such failure was "cannot reach the ragstore server", a
    DatabaseUnavailableError, also when the request had reached it and the connection
    dropped (a restart, a read timeout) while it was being done: a caller took the write
    for not stored. Now the three cases are told apart: nothing sent (``nothing_sent``:
    known not done), a read without answer (nothing changed either way), and a write
    without answer, an :class:`OutcomeUnknownError` saying how to find out and whether
    sending it again is safe."""
    url = shown_url(base_url)
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        error: RagstoreError = DatabaseUnavailableError(
            f"cannot reach the ragstore server at {url}: {why} (nothing was sent)"
        )
        error.nothing_sent = True  # type: ignore[attr-defined]
        return error
    if effect == "read":
        return DatabaseUnavailableError(
            f"{method} {path}: the ragstore server at {url} gave no answer ({why}); it "
            "changes nothing: send it again once the server is back"
        )
    if effect == "upsert":
        return OutcomeUnknownError(
            f"{method} {path}: the ragstore server at {url} gave no answer ({why}) after "
            "the request was sent: the server may or may not have stored it. Sending it "
            "again is safe: texts are stored under their ids and documents by name and "
            "content, so a second send stores the same (answered 'unchanged'); but an "
            "upload or document large enough to be queued as a job (the server's "
            "RAGSTORE_BACKGROUND_INGEST_BYTES) is queued again by a new call: check "
            "`list_jobs` first"
        )
    return OutcomeUnknownError(
        f"{method} {path}: the ragstore server at {url} gave no answer ({why}) after the "
        "request was sent: the server may or may not have done it. Check before sending it "
        "again, which could do it twice: read back what it changes (the collection, its "
        "documents or texts, the field indexes; `list_jobs` for a background upload)"
    )


class _Retrying:
    """When one request is sent again (``Client(retries=, max_retry_wait=)``).

    A call that may be sent again whatever became of the first send (its ``effect`` is
    "read" or "upsert": ``ragstore._requests.Call.kind``) is retried on no answer and on
    the answered errors that pass with time (``_PASSING``; a proxy's 502/503/504). Any
    call, a "write" too, is retried only where the server provably did not take it:
    nothing sent (no connection), ``rate_limited`` (429: counted before the request is
    read, ``auth/ratelimit.py``), ``not_ready`` (503: a connection past the cap, not
    read, or a server not ready) or ``overloaded`` (503: shed before any of it ran,
    ``api/shed.py``; a write so answered was raised at once). Waits grow from 0.5 s,
    doubling to 8 s, with jitter; a ``Retry-After`` is waited instead; all waits of one
    request together stay within ``max_retry_wait`` seconds: one that would not is not
    waited, the error raised."""

    def __init__(self, retries: int, max_wait: float, effect: str) -> None:
        self.left = retries
        self.effect = effect
        self.tries = 0
        self.lost = False  # a send got no answer: it may have done what a later one did
        self.deadline = time.monotonic() + max_wait

    def wait(self, error: RagstoreError) -> float | None:
        """Seconds to wait before sending again after ``error``; None: raise it."""
        self.tries += 1
        if isinstance(error, OutcomeUnknownError):
            self.lost = True
        if self.left <= 0 or not self._passes(error):
            return None
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, (int, float)) and hint > 0:
            seconds = float(hint) * random.uniform(1.0, 1.2)
        else:
            step = min(_BACKOFF_MOST_S, _BACKOFF_FIRST_S * 2 ** (self.tries - 1))
            seconds = step * random.uniform(0.5, 1.0)
        if time.monotonic() + seconds > self.deadline:
            return None
        self.left -= 1
        return seconds

    def _passes(self, error: RagstoreError) -> bool:
        if getattr(error, "nothing_sent", False) or error.code in _NOT_RUN:
            return True
        if self.effect == "write":
            return False
        status = getattr(error, "status", None)
        if status is None:  # no answer: an upsert or a read is sent again
            return isinstance(error, (OutcomeUnknownError, DatabaseUnavailableError))
        return error.code in _PASSING or (
            status in (502, 503, 504) and error.code == RagstoreError.code  # a proxy's
        )

    def answered(self, response: httpx.Response) -> httpx.Response:
        """``response``, marked (:data:`RESENT`) when it answers a send made after an
        earlier one got no answer: what that one stored this one was told is there
        (texts counted ``unchanged``, a document's status ``unchanged``)."""
        if self.lost:
            response.extensions[RESENT] = True
        return response

    def said(self, error: RagstoreError) -> RagstoreError:
        """``error``, its message saying how often the request was sent."""
        if self.tries > 1:
            error.message += f" (sent {self.tries} times)"
            error.args = (error.message,)
        return error


class _WritePosition:
    """Read-your-writes: the WAL position of this client's last write (``RAGStore-LSN``),
    sent back on later requests so a read a replica serves already shows that write. Copy
    ``last_lsn`` to another client (one for a read-only server) to carry it over. A write
    whose position the server could not read answers ``primary``: sent back, it has reads
    served by the primary until a later write answers a position.

    "Later" is a write sent after ``primary`` arrived: one sent before it (writes sent at
    once) may have committed before the write that answered ``primary``, and its position
    replaced ``primary`` whichever order the answers came in, so a replica at that
    position, without the other write, served the next read. Each send takes a number
    (``_sends``); ``primary``, answered or set, notes the number sent by then
    (``_primary_at``), and only a position answered to a later send replaces it. The
    lock keeps a send's number and the position it carries together across threads."""

    read_your_writes: bool = True
    _held: str | None = None
    _sends = 0  # requests sent so far, each numbered
    _primary_at = 0  # the number sent by the time the held ``primary`` was noted

    def __init__(self) -> None:
        self._lsn_lock = threading.Lock()

    @property
    def last_lsn(self) -> str | None:
        """The position sent back with each request (None: no write yet)."""
        return self._held

    @last_lsn.setter
    def last_lsn(self, value: str | None) -> None:
        with self._lsn_lock:
            self._held = value
            self._primary_at = self._sends  # set ``primary``: sends in flight are earlier

    def _with_lsn(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """``kwargs`` with the held position, and the number of this send (for
        :meth:`_note_lsn`)."""
        with self._lsn_lock:
            self._sends += 1
            sent, held = self._sends, self._held
        if self.read_your_writes and held:
            kwargs["headers"] = {LSN_HEADER: held, **dict(kwargs.get("headers") or {})}
        return kwargs, sent

    def _note_lsn(self, response: httpx.Response, sent: int) -> None:
        """Keep the later of the position held and the one answered to send number
        ``sent``. Writes sent at once (``asyncio.gather``, threads) answer in any order:
        keeping the last answer could step back to an earlier write's position, and a
        read sent after all of them could be served by a replica without the later ones.
        ``primary`` (no position known) is kept until a position answers a send made
        after it arrived (see the class). (A client that outlives its server's database
        being replaced by a new cluster, whose positions start low again, should be made
        anew.)"""
        written = response.headers.get(LSN_HEADER)
        if not written:
            return
        new = _lsn_value(written)
        with self._lsn_lock:
            held = _lsn_value(self._held) if self._held else None
            if new is None:  # ``primary``: no position; sends made so far are earlier
                self._held, self._primary_at = written, self._sends
            elif self._held and held is None:  # ``primary`` held
                if sent > self._primary_at:
                    self._held = written
            elif held is None or new >= held:
                self._held = written


class _KeyedWrites:
    """Whether the server honours ``Idempotency-Key``: said by the last answer, which
    says ``RAGStore-Idempotency: 1`` (:data:`ragstore.wire.IDEMPOTENCY_SUPPORT_HEADER`)
    when it does. Until one says so a background upload that got no answer is not sent
    again: an older server ignored the key and queued a second job. A client whose first
    request was such an upload did not know it yet, and that upload was not sent again: a
    call whose retries depend on it asks ``/healthz`` first, once (:meth:`_asks_keys_first`).

    Once learned it was kept for ever: after the server behind the URL was replaced by an
    older one (a rollback, a restart onto another release, a load balancer's other
    backend) a background upload whose answer was lost was still sent again, and the
    older server queued a second job. Now an answer that does not say it forgets it, and
    so does a request that reached no server (the one that comes back may be another):
    the next such call asks again, and each send of a call is judged on what is known
    then (``Client._send``)."""

    keys_honoured: bool = False
    retries: int
    _keys_asked: bool = False

    def _note_keys(self, response: httpx.Response) -> None:
        said = response.headers.get(IDEMPOTENCY_SUPPORT_HEADER, "").strip() == "1"
        if self.keys_honoured and not said:
            self._keys_asked = False  # another server answers: asked again when it matters
        self.keys_honoured = said

    def _note_unreached(self, error: RagstoreError) -> None:
        """A request that reached no server (refused, no route): whatever answers next may
        be another server; what this one said is forgotten."""
        if getattr(error, "nothing_sent", False):
            self.keys_honoured = self._keys_asked = False

    def _asks_keys_first(self, call: Call[Any]) -> bool:
        """Whether to ask the server (``/healthz``) before sending ``call``: how often
        it may be sent depends on whether the server honours its key
        (:meth:`ragstore._requests.Call.effect_on`), no answer has said so yet, the
        server has not answered the question before (one whose answer did not say it is
        an older server: asked once, not before every upload) and the call may be sent
        again at all (``retries``)."""
        if self.keys_honoured or self._keys_asked or self.retries <= 0:
            return False
        return call.effect_on(True) != call.effect_on(False)

    def _keys_answered(self, error: RagstoreError | None) -> None:
        """The question was sent once, without retries (the call itself waits for a
        server that is away); ``error`` None or an error answer: it was answered, and
        not asked again. No answer: asked again before the next such call."""
        self._keys_asked = error is None or getattr(error, "status", None) is not None


def _retry_options(retries: int, max_retry_wait: float) -> tuple[int, float]:
    """The retry options checked: a count of at least 0, seconds of at least 0."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0 (0: none), got {retries!r}")
    wait = max_retry_wait
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < 1e6:
        raise ConfigError(f"max_retry_wait must be seconds >= 0, got {max_retry_wait!r}")
    return retries, float(wait)


def _wait_options(timeout: Any, poll: Any) -> tuple[float, float]:
    """wait_for_job's seconds checked before its first request: ``poll=-1`` failed in
    ``time.sleep`` with a bare ValueError (after one request), ``poll=0`` polled the
    server in a tight loop, and a NaN timeout waited for ever (no time is past NaN)."""
    for name, value, least in (("timeout", timeout, 0.0), ("poll", poll, MIN_POLL)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not least <= value < 1e9  # NaN is in no range
        ):
            raise InputError(f"{name} must be seconds >= {least:g}, got {value!r}")
    return float(timeout), float(poll)


def _lsn_value(text: str) -> int | None:
    """A WAL position's text form (``16/B374D848``) as an integer; None for any other."""
    hi, sep, lo = text.strip().partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16) if sep else None
    except ValueError:
        return None


class Client(_WritePosition, _KeyedWrites):
    """A connection to one ragstore server.

    ``Client("http://127.0.0.1:8080", api_key="rsk_...")``; use it as a context manager or
    call :meth:`close`. ``transport`` lets tests and embedders hand in their own httpx
    transport.

    A request that fails for a while (the server restarting, 503 ``not_ready`` or
    ``database_unavailable`` while the database fails over, 429 ``rate_limited``, a
    connection refused) is sent again up to ``retries`` times (0: never), waiting its
    ``Retry-After`` or a growing, jittered pause, all within ``max_retry_wait`` seconds
    (:class:`_Retrying`). Reads and upserts (texts under ids, documents) are sent again
    whatever happened, and so are background uploads once the server has said it honours
    their ``Idempotency-Key`` (:class:`_KeyedWrites`); other writes only where the server
    provably did not take them. A
    write that got no answer raises :class:`~ragstore.errors.OutcomeUnknownError`
    (``outcome_unknown``): it may or may not have been done, never "not stored".
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        read_your_writes: bool = True,
        retries: int = 3,
        max_retry_wait: float = 30.0,
    ) -> None:
        _WritePosition.__init__(self)
        self.read_your_writes = read_your_writes
        self.retries, self.max_retry_wait = _retry_options(retries, max_retry_wait)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    # --- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, effect: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request; raise the matching RagstoreError for any error answer.

        Sent again as :class:`_Retrying` says: ``effect`` is what sending it twice does
        ("read", "upsert" or "write"; by default "read" for GET/HEAD, else "write")."""
        chosen = effect or ("read" if method.upper() in ("GET", "HEAD") else "write")
        return self._retried(method, path, lambda: chosen, kwargs)

    def _retried(
        self, method: str, path: str, effect_of: Callable[[], str], kwargs: dict[str, Any]
    ) -> httpx.Response:
        """:meth:`request`, its effect asked before each send (a keyed call's changes
        with what the server last said: :class:`_KeyedWrites`)."""
        if self._http.is_closed:
            raise RuntimeError(_CLOSED.format(kind="Client"))
        retrying = _Retrying(self.retries, self.max_retry_wait, "read")
        while True:
            retrying.effect = effect = effect_of()
            try:
                return retrying.answered(self._request_once(method, path, effect, kwargs))
            except RagstoreError as error:
                wait = retrying.wait(error)
                if wait is None:
                    raise retrying.said(error) from None
            time.sleep(wait)

    def _request_once(
        self, method: str, path: str, effect: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        sending, sent = self._with_lsn(dict(kwargs))
        try:
            response = self._http.request(method, path, **sending)
        except httpx.TransportError as exc:
            error = _transport_error(exc, self._http.base_url, method, path, effect)
            self._note_unreached(error)
            raise error from None
        self._note_lsn(response, sent)  # an error can follow writes that committed
        self._note_keys(response)
        raise_for_problem(response)
        return response

    def _send(self, call: Call[T]) -> T:
        def effect() -> str:
            if self._asks_keys_first(call):
                asked: RagstoreError | None = None
                try:  # its answer says it (_note_keys); unsaid, sent as to an older server
                    self._request_once("GET", calls.health().path, "read", {})
                except RagstoreError as exc:
                    asked = exc
                self._keys_answered(asked)
            return call.effect_on(self.keys_honoured)

        response = self._retried(call.method, call.path, effect, call.kwargs())
        return calls.resent_said(read_answer(call, response), response)

    def _run(self, plan: Plan[T]) -> T:
        """Send a verb's calls one after another (see :data:`ragstore._requests.Plan`).
        The plan is closed however this ends (an interrupt mid-call: what it holds open,
        an upload's files, is closed now, not by the garbage collector)."""
        with closing(plan):
            call = next(plan)
            while True:
                answer: Any = None
                failure: RagstoreError | None = None
                try:
                    answer = self._send(call)
                except RagstoreError as exc:
                    failure = exc
                try:
                    call = plan.send(answer) if failure is None else plan.throw(failure)
                except StopIteration as done:
                    return cast(T, done.value)

    # --- verbs ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._send(calls.health())

    def ready(self) -> dict[str, Any]:
        return self._send(calls.ready())

    def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        settings: Mapping[str, Any] | None = None,
        dimension: int | None = None,
        distance: str | None = None,
    ) -> dict[str, Any]:
        return self._send(
            calls.create_collection(
                name, model=model, settings=settings, dimension=dimension, distance=distance
            )
        )

    def list_collections(self) -> list[dict[str, Any]]:
        """Every collection the key may see, in name order: the server answers a page at a
        time, and this follows ``next_cursor`` to the last."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self._send(calls.list_collections(cursor))
            out.extend(page["data"])
            cursor = calls.next_collections_cursor(page, cursor)
            if cursor is None:
                return out

    def get_collection(self, name: str) -> dict[str, Any]:
        return self._send(calls.get_collection(name))

    def fields(self, collection: str) -> dict[str, Any]:
        """The fields a search filter can name in ``collection`` (``Store.fields``)."""
        return self._send(calls.collection_fields(collection))

    def field_indexes(self) -> list[dict[str, Any]]:
        """The metadata fields indexed for range filters (``Store.field_indexes``)."""
        return self._send(calls.field_indexes())

    def index_field(self, field: str, type: str) -> dict[str, Any]:
        """Index a metadata field for range filters (``Store.index_field``; an admin key)."""
        return self._send(calls.index_field(field, type))

    def drop_field_index(self, field: str, type: str) -> dict[str, Any]:
        """Drop a field's range-filter indexes (``Store.drop_field_index``; an admin key)."""
        return self._send(calls.drop_field_index(field, type))

    def delete_collection(self, name: str) -> None:
        self._send(calls.delete_collection(name))

    def add_texts(
        self,
        collection: str,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        *,
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> dict[str, Any]:
        """Add or update texts under ``ids`` (see :meth:`ragstore.Store.add_texts`), in as
        many requests as the API's limits need (:func:`ragstore._requests.add_texts_plan`)."""
        return self._run(calls.add_texts_plan(collection, texts, metadatas, ids, vectors=vectors))

    def get_texts(self, collection: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._run(calls.get_texts_plan(collection, ids))

    def delete_texts(self, collection: str, ids: Sequence[str]) -> int:
        return self._run(calls.delete_texts_plan(collection, ids))

    def text_ids(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """The ids of the texts ``where`` keeps, among ``ids`` when given, in id order
        (see :meth:`ragstore.Store.text_ids`), following the server's pages to the last."""
        return self._run(calls.text_ids_where_plan(collection, where=where, ids=ids))

    def delete_texts_where(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Delete the texts :meth:`text_ids` lists, in one request and so one transaction
        (see :meth:`ragstore.Store.delete_texts_where`); the ids deleted are returned."""
        return self._send(calls.delete_texts_where(collection, where=where, ids=ids))

    def add_document(
        self,
        collection: str,
        name: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        """Ingest text as document ``name``: the document, or the job when run in background
        (a job has ``status`` queued/running/...; see :meth:`wait_for_job`)."""
        return self._send(
            calls.add_document(collection, name, text, metadata=metadata, background=background)
        )

    def upload(
        self,
        collection: str,
        files: Upload | Sequence[Upload],
        *,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        """Upload files: ``{"data": [documents]}`` (201) or a job (202, has ``"id"``).

        An upload over the server's limits (RAGSTORE_MAX_UPLOAD_BYTES, 1000 files) is sent
        in several requests, answered as one: ``{"data": [documents], ...}`` with
        ``"jobs"``, one per request answered 202 (``background``), when there are; an
        error says what each file's fate was (:func:`ragstore._requests.upload_plan`)."""
        return self._run(
            calls.upload_plan(collection, files, metadata=metadata, background=background)
        )

    def ingest(
        self,
        collection: str,
        paths: str | Path | Sequence[str | Path],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload files and folders (as :meth:`ragstore.Store.ingest`), in as many
        requests as the server's limits need (as :meth:`upload`)."""
        return self._run(calls.ingest_plan(collection, paths, metadata=metadata))

    def list_documents(
        self,
        collection: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        format: str | None = None,
        source_prefix: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """One page: ``{"data": [...], "count": n, "next_cursor": str | None}``
        (``source``: see :meth:`ragstore.Store.list_documents`)."""
        return self._send(
            calls.list_documents(
                collection,
                cursor=cursor,
                limit=limit,
                format=format,
                source_prefix=source_prefix,
                metadata=metadata,
                source=source,
            )
        )

    def iter_documents(
        self, collection: str, *, page_size: int = 100, **filters: Any
    ) -> Iterator[dict[str, Any]]:
        """Every document, following the cursor from page to page."""
        cursor: str | None = None
        while True:
            page = self.list_documents(collection, cursor=cursor, limit=page_size, **filters)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def get_document(self, collection: str, document_id: int) -> dict[str, Any]:
        return self._send(calls.get_document(collection, document_id))

    def find_document(self, collection: str, source: str) -> dict[str, Any]:
        """The document of this source (see :meth:`ragstore.Store.find_document`): a
        relative path is the name it was uploaded under, an absolute one its source on the
        server; ``DocumentNotFoundError`` naming ``source`` when none is."""
        return _found(self.list_documents(collection, source=source, limit=1), collection, source)

    def delete_document(self, collection: str, document_id: int) -> None:
        self._send(calls.delete_document(collection, document_id))

    def search(
        self,
        collection: str,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 10,
        mode: str | None = None,
        where: Mapping[str, Any] | None = None,
        context: int | str | None = None,
        explain: bool = False,
        ef_search: int | None = None,
        rrf_k: float | None = None,
        vector_weight: float | None = None,
        fulltext_weight: float | None = None,
        sections: bool = True,
        mmr: bool = False,
        fetch_k: int | None = None,
        lambda_mult: float | None = None,
    ) -> dict[str, Any]:
        """Search by ``query`` text or by ``vector`` (see :meth:`ragstore.Store.search`)."""
        return self._send(
            calls.search(
                collection,
                query,
                vector=vector,
                k=k,
                mode=mode,
                where=where,
                context=context,
                explain=explain,
                ef_search=ef_search,
                rrf_k=rrf_k,
                vector_weight=vector_weight,
                fulltext_weight=fulltext_weight,
                sections=sections,
                mmr=mmr,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
            )
        )

    def list_models(self) -> list[dict[str, Any]]:
        return self._send(calls.list_models())

    def model_status(self, collection: str) -> dict[str, Any]:
        return self._send(calls.model_status(collection))

    def migrate_model(
        self,
        collection: str,
        to: str,
        *,
        batch_size: int = 256,
        switch: bool = True,
        sample_queries: int = 8,
    ) -> dict[str, Any]:
        return self._send(
            calls.migrate_model(
                collection, to, batch_size=batch_size, switch=switch, sample_queries=sample_queries
            )
        )

    def rollback_model(self, collection: str) -> dict[str, Any]:
        return self._send(calls.rollback_model(collection))

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self._send(calls.get_job(job_id))

    def list_jobs(
        self,
        *,
        cursor: str | None = None,
        limit: int = 50,
        status: str | None = None,
        collection: str | None = None,
    ) -> dict[str, Any]:
        return self._send(
            calls.list_jobs(cursor=cursor, limit=limit, status=status, collection=collection)
        )

    def wait_for_job(
        self, job_id: int, *, timeout: float = 300.0, poll: float = 0.2
    ) -> dict[str, Any]:
        """Poll until the job succeeded or failed; TimeoutError after ``timeout`` seconds.
        ``poll`` (seconds between polls) is at least 0.01; a bad one is an InputError."""
        timeout, poll = _wait_options(timeout, poll)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in _FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll)


class AsyncClient(_WritePosition, _KeyedWrites):
    """:class:`Client` for asyncio: the same verbs, names and options, awaited.

    ``async with AsyncClient(url, api_key=...) as client: await client.search(...)``.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        read_your_writes: bool = True,
        retries: int = 3,
        max_retry_wait: float = 30.0,
    ) -> None:
        _WritePosition.__init__(self)
        self.read_your_writes = read_your_writes
        self.retries, self.max_retry_wait = _retry_options(retries, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self, method: str, path: str, *, effect: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request; raise the matching RagstoreError for any error answer (sent
        again as :meth:`Client.request` says)."""
        chosen = effect or ("read" if method.upper() in ("GET", "HEAD") else "write")

        async def effect_of() -> str:
            return chosen

        return await self._retried(method, path, effect_of, kwargs)

    async def _retried(
        self,
        method: str,
        path: str,
        effect_of: Callable[[], Awaitable[str]],
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        """As :meth:`Client._retried`."""
        if self._http.is_closed:
            raise RuntimeError(_CLOSED.format(kind="AsyncClient"))
        retrying = _Retrying(self.retries, self.max_retry_wait, "read")
        while True:
            retrying.effect = effect = await effect_of()
            try:
                return retrying.answered(await self._request_once(method, path, effect, kwargs))
            except RagstoreError as error:
                wait = retrying.wait(error)
                if wait is None:
                    raise retrying.said(error) from None
            await asyncio.sleep(wait)

    async def _request_once(
        self, method: str, path: str, effect: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        sending, sent = self._with_lsn(dict(kwargs))
        try:
            response = await self._http.request(method, path, **sending)
        except httpx.TransportError as exc:
            error = _transport_error(exc, self._http.base_url, method, path, effect)
            self._note_unreached(error)
            raise error from None
        self._note_lsn(response, sent)  # an error can follow writes that committed
        self._note_keys(response)
        raise_for_problem(response)
        return response

    async def _send(self, call: Call[T]) -> T:
        async def effect() -> str:  # as Client._send
            if self._asks_keys_first(call):
                asked: RagstoreError | None = None
                try:
                    await self._request_once("GET", calls.health().path, "read", {})
                except RagstoreError as exc:
                    asked = exc
                self._keys_answered(asked)
            return call.effect_on(self.keys_honoured)

        response = await self._retried(call.method, call.path, effect, call.kwargs())
        return calls.resent_said(read_answer(call, response), response)

    async def _run(self, plan: Plan[T]) -> T:
        """Send a verb's calls one after another (see :data:`ragstore._requests.Plan`).
        The plan is closed however this ends (an interrupt mid-call: what it holds open,
        an upload's files, is closed now, not by the garbage collector)."""
        with closing(plan):
            call = next(plan)
            while True:
                answer: Any = None
                failure: RagstoreError | None = None
                try:
                    answer = await self._send(call)
                except RagstoreError as exc:
                    failure = exc
                try:
                    call = plan.send(answer) if failure is None else plan.throw(failure)
                except StopIteration as done:
                    return cast(T, done.value)

    async def health(self) -> dict[str, Any]:
        return await self._send(calls.health())

    async def ready(self) -> dict[str, Any]:
        return await self._send(calls.ready())

    async def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        settings: Mapping[str, Any] | None = None,
        dimension: int | None = None,
        distance: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            calls.create_collection(
                name, model=model, settings=settings, dimension=dimension, distance=distance
            )
        )

    async def list_collections(self) -> list[dict[str, Any]]:
        """Every collection the key may see, following ``next_cursor`` page to page."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self._send(calls.list_collections(cursor))
            out.extend(page["data"])
            cursor = calls.next_collections_cursor(page, cursor)
            if cursor is None:
                return out

    async def get_collection(self, name: str) -> dict[str, Any]:
        return await self._send(calls.get_collection(name))

    async def fields(self, collection: str) -> dict[str, Any]:
        """The fields a search filter can name in ``collection`` (``Store.fields``)."""
        return await self._send(calls.collection_fields(collection))

    async def field_indexes(self) -> list[dict[str, Any]]:
        """The metadata fields indexed for range filters (``Store.field_indexes``)."""
        return await self._send(calls.field_indexes())

    async def index_field(self, field: str, type: str) -> dict[str, Any]:
        """Index a metadata field for range filters (``Store.index_field``; an admin key)."""
        return await self._send(calls.index_field(field, type))

    async def drop_field_index(self, field: str, type: str) -> dict[str, Any]:
        """Drop a field's range-filter indexes (``Store.drop_field_index``; an admin key)."""
        return await self._send(calls.drop_field_index(field, type))

    async def delete_collection(self, name: str) -> None:
        await self._send(calls.delete_collection(name))

    async def add_texts(
        self,
        collection: str,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        *,
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> dict[str, Any]:
        return await self._run(
            calls.add_texts_plan(collection, texts, metadatas, ids, vectors=vectors)
        )

    async def get_texts(self, collection: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        return await self._run(calls.get_texts_plan(collection, ids))

    async def delete_texts(self, collection: str, ids: Sequence[str]) -> int:
        return await self._run(calls.delete_texts_plan(collection, ids))

    async def text_ids(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """See :meth:`Client.text_ids`."""
        return await self._run(calls.text_ids_where_plan(collection, where=where, ids=ids))

    async def delete_texts_where(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """See :meth:`Client.delete_texts_where`."""
        return await self._send(calls.delete_texts_where(collection, where=where, ids=ids))

    async def add_document(
        self,
        collection: str,
        name: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        return await self._send(
            calls.add_document(collection, name, text, metadata=metadata, background=background)
        )

    async def upload(
        self,
        collection: str,
        files: Upload | Sequence[Upload],
        *,
        metadata: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> dict[str, Any]:
        return await self._run(
            calls.upload_plan(collection, files, metadata=metadata, background=background)
        )

    async def ingest(
        self,
        collection: str,
        paths: str | Path | Sequence[str | Path],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self._run(calls.ingest_plan(collection, paths, metadata=metadata))

    async def list_documents(
        self,
        collection: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        format: str | None = None,
        source_prefix: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            calls.list_documents(
                collection,
                cursor=cursor,
                limit=limit,
                format=format,
                source_prefix=source_prefix,
                metadata=metadata,
                source=source,
            )
        )

    async def iter_documents(
        self, collection: str, *, page_size: int = 100, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self.list_documents(collection, cursor=cursor, limit=page_size, **filters)
            for doc in page["data"]:
                yield doc
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def get_document(self, collection: str, document_id: int) -> dict[str, Any]:
        return await self._send(calls.get_document(collection, document_id))

    async def find_document(self, collection: str, source: str) -> dict[str, Any]:
        page = await self.list_documents(collection, source=source, limit=1)
        return _found(page, collection, source)

    async def delete_document(self, collection: str, document_id: int) -> None:
        await self._send(calls.delete_document(collection, document_id))

    async def search(
        self,
        collection: str,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 10,
        mode: str | None = None,
        where: Mapping[str, Any] | None = None,
        context: int | str | None = None,
        explain: bool = False,
        ef_search: int | None = None,
        rrf_k: float | None = None,
        vector_weight: float | None = None,
        fulltext_weight: float | None = None,
        sections: bool = True,
        mmr: bool = False,
        fetch_k: int | None = None,
        lambda_mult: float | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            calls.search(
                collection,
                query,
                vector=vector,
                k=k,
                mode=mode,
                where=where,
                context=context,
                explain=explain,
                ef_search=ef_search,
                rrf_k=rrf_k,
                vector_weight=vector_weight,
                fulltext_weight=fulltext_weight,
                sections=sections,
                mmr=mmr,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
            )
        )

    async def list_models(self) -> list[dict[str, Any]]:
        return await self._send(calls.list_models())

    async def model_status(self, collection: str) -> dict[str, Any]:
        return await self._send(calls.model_status(collection))

    async def migrate_model(
        self,
        collection: str,
        to: str,
        *,
        batch_size: int = 256,
        switch: bool = True,
        sample_queries: int = 8,
    ) -> dict[str, Any]:
        return await self._send(
            calls.migrate_model(
                collection, to, batch_size=batch_size, switch=switch, sample_queries=sample_queries
            )
        )

    async def rollback_model(self, collection: str) -> dict[str, Any]:
        return await self._send(calls.rollback_model(collection))

    async def get_job(self, job_id: int) -> dict[str, Any]:
        return await self._send(calls.get_job(job_id))

    async def list_jobs(
        self,
        *,
        cursor: str | None = None,
        limit: int = 50,
        status: str | None = None,
        collection: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(
            calls.list_jobs(cursor=cursor, limit=limit, status=status, collection=collection)
        )

    async def wait_for_job(
        self, job_id: int, *, timeout: float = 300.0, poll: float = 0.2
    ) -> dict[str, Any]:
        timeout, poll = _wait_options(timeout, poll)
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["status"] in _FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            await asyncio.sleep(poll)
