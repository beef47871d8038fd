"""Request building shared by :class:`ragstore.Client` and :class:`ragstore.AsyncClient`.

Each verb is a function returning a :class:`Call`: the method, path, parameters and body,
and how to read the answer. The two clients only send calls (one blocking, one with
``await``), so their verbs, names and options cannot drift apart; the in-process
:class:`ragstore.Store` has the same verbs. Error answers (problem+json) become the
:class:`~ragstore.errors.RagstoreError` subclass named by their ``code``.
"""

from __future__ import annotations

import email.utils
import io
import json
import numbers
import operator
import os
import re
import stat
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Generic, Literal, TypeVar, cast

import httpx

from ragstore.errors import (
    ConfigError,
    FileUnreadableError,
    InputError,
    InvalidFilterError,
    RagstoreError,
    RequestTooLargeError,
    all_error_classes,
    invalid_collection_name,
)
from ragstore.files import (
    LINK_OUTSIDE_FOLDER,
    NOT_THE_FILE,
    discover,
    link_outside_detail,
    not_ingestible,
    stat_mode,
    unlisted_error,
    unreadable,
)
from ragstore.interrupts import deferred
from ragstore.models import COLLECTION_NAME
from ragstore.urls import shown_url
from ragstore.wire import (
    IDEMPOTENCY_HEADER,
    MAX_UPLOAD_FILES,
    UPLOAD_LIMIT_HEADER,
)

T = TypeVar("T")
Upload = Path | str | tuple[str, bytes]

# What one request to the API may hold: 10,000 texts or ids (schemas.py ``TextsCreate``,
# ``TextIds``) in a JSON body of at most the server's RAGSTORE_MAX_REQUEST_BYTES (1 MiB by
# default, config.py ``max_request_bytes``). The clients send a longer list in several
# requests within both (the Store batches too); a server set to a lower byte limit answers
# 413, which stores nothing, and the request is sent again in halves.
MAX_ITEMS_PER_REQUEST = 10_000
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how its (successful) answer becomes the verb's result."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: list[tuple[str, tuple[str, bytes | StreamedFile, str]]] | None = None
    data: dict[str, str] | None = None
    # what sending it twice does (the clients' retries, ``client._Retrying``): "read"
    # changes nothing; "upsert" stores the same however often it arrives (texts under
    # their ids, documents by name and content hash: a second send answers "unchanged");
    # "write" may do it twice (create a collection, queue a job, count deletions), so it
    # is sent again only where the server provably did not take it. None: "read" for
    # GET/HEAD, else "write".
    kind: Literal["read", "upsert", "write"] | None = None
    # sent with an ``Idempotency-Key`` (:data:`IDEMPOTENCY_HEADER`), drawn anew for each
    # send of the call and kept by the clients' retries of that send: a request the
    # server queues as a job is then queued once however often it arrives
    idempotent: bool = False

    @property
    def effect(self) -> Literal["read", "upsert", "write"]:
        if self.kind is not None:
            return self.kind
        return "read" if self.method in ("GET", "HEAD") else "write"

    def effect_on(self, keys_honoured: bool) -> Literal["read", "upsert", "write"]:
        """What sending it twice does on a server that does (``keys_honoured``: it said
        :data:`IDEMPOTENCY_SUPPORT_HEADER`) or may not honour its ``Idempotency-Key``.

        A "write" sent with a key (a background upload: it queues a job) is answered with
        the first send's job when sent again with the same key, so it is retried as an
        upsert is, on no answer too; on a server not known to honour keys (an older one
        ignored them and queued a second job) it stays a "write"."""
        if keys_honoured and self.idempotent and self.effect == "write":
            return "upsert"
        return self.effect

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("params", "json", "files", "data"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.idempotent:
            out["headers"] = {IDEMPOTENCY_HEADER: str(uuid.uuid4())}
        return out


# The server's collection name pattern. A name or id goes
# into the URL path, and the server decodes %2F before routing: checked here, a name such
# as "docs/documents/7" cannot turn delete_collection into deleting a document.
_NAME = re.compile(COLLECTION_NAME)


def _n(name: str) -> str:
    """``name`` as a URL path segment, or InputError when it is no collection name (the
    Store's refusal, the name quoted cut: :func:`ragstore.errors.invalid_collection_name`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise invalid_collection_name(name)
    return name


def _id(value: int, what: str) -> int:
    """``value`` as a URL path segment, or InputError when it is no row id (the Store's
    check, :func:`ragstore.validation.row_id`)."""
    from ragstore.validation import row_id

    return row_id(value, what)


def _ids(ids: Sequence[str], what: str = "ids") -> list[str]:
    """``ids`` as the list of strings the Store takes (:func:`ragstore.validation.id_list`):
    a bare string was sent as its characters (``delete_texts(c, "abc")`` deleted the texts
    "a", "b" and "c")."""
    from ragstore.validation import id_list

    return id_list(ids, what)


def _json_value(
    value: Any, what: str, error: type[InputError] = InputError, *, paths: bool = False
) -> Any:
    """``value`` when it is JSON the server takes unchanged, else ``error`` naming the bad
    part in the Store's words (:func:`ragstore.validation.json_value`, the Store's check)."""
    from ragstore.validation import json_value

    return json_value(value, what, error, paths=paths)


def _metadata(meta: Any, what: str) -> dict[str, Any]:
    if not isinstance(meta, Mapping):
        from ragstore.validation import a_type

        raise InputError(f"{what} is {a_type(meta)}, not a JSON object")
    return cast(dict[str, Any], _json_value(dict(meta), what, paths=True))


def _floats(values: Any, what: str) -> list[float]:
    """One vector as a list of floats once checked as the Store checks it (numbers, finite,
    within float32): NaN failed in the encoder with a bare ``ValueError``, a string in
    ``float()`` with another."""
    from ragstore.validation import float32_array

    if float32_array(values, what).ndim != 1:
        raise InputError(f"{what} must be one list of numbers")
    return [float(x) for x in values]


def _body(r: httpx.Response) -> dict[str, Any]:
    return cast(dict[str, Any], r.json())


def _data(r: httpx.Response) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], r.json()["data"])


def _none(_: httpx.Response) -> None:
    return None


# set on a write's answer (a dict) that came to a send made again after an earlier send
# of it got no answer (the clients' retries of an upsert): that send may have stored what
# this answer calls "unchanged" (texts counted so, a document's status). The verbs
# answered in several requests keep it when any of theirs was (``add_texts``, uploads)
RESENT = "resent"


def resent_said(result: T, response: httpx.Response) -> T:
    """``result`` with ``"resent": True`` where :data:`RESENT` marks ``response`` and the
    result is a write's answer object (a read's answer says nothing of stores)."""
    written = response.request.method not in ("GET", "HEAD")
    if written and response.extensions.get(RESENT) and isinstance(result, dict):
        result[RESENT] = True
    return result


def error_from_problem(status: int, body: Mapping[str, Any]) -> RagstoreError:
    """The exception a problem+json body stands for."""
    code = str(body.get("code") or "internal_error")
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    cls = next((c for c in all_error_classes() if c.code == code), RagstoreError)
    exc = cls(detail)
    exc.status = status  # type: ignore[attr-defined]
    exc.request_id = body.get("request_id")  # type: ignore[attr-defined]
    exc.problem = dict(body)  # type: ignore[attr-defined]
    if code == "rate_limited" and "retry_after" not in vars(exc):
        exc.retry_after = 1.0  # type: ignore[attr-defined]
    return exc


def read_answer(call: Call[T], response: httpx.Response) -> T:
    """The verb's result from a successful answer.

    An answer that is not ragstore's (another web server at the URL, a proxy's or captive
    portal's page) would otherwise surface as a bare ``JSONDecodeError`` or ``KeyError``.
    """
    try:
        return call.read(response)
    except (ValueError, KeyError, TypeError) as exc:
        kind = response.headers.get("content-type", "no content type")
        raise ConfigError(
            f"{call.method} {shown_url(response.url)} answered HTTP {response.status_code} "
            f"({kind}), "
            f"which is not ragstore's API ({type(exc).__name__}: {exc}); check the server "
            "URL (RAGSTORE_URL)"
        ) from None


# what another web server answers for a route or method it does not have: ragstore
# answers these with a problem+json body, always
_NOT_OURS = (404, 405, 501)


def _foreign_error(response: httpx.Response) -> RagstoreError:
    """The error for an error answer that is no problem+json object (another web server
    at the URL, a proxy's page). Its HTML page was the whole message, as an
    ``internal_error`` with no word of the URL, so ``RAGSTORE_URL`` naming another
    service looked like a ragstore crash; now the message names the request, the status
    and the content type, and a 404/405/501 is a ConfigError pointing at the URL."""
    request = response.request
    kind = response.headers.get("content-type", "no content type")
    # a page's markup says nothing the status does not; a plain-text body may say more
    plain = "html" not in kind.lower() and " ".join(response.text[:200].split())
    text = plain or response.reason_phrase or "no explanation"
    said = (
        f"{request.method} {shown_url(request.url)} answered HTTP {response.status_code} "
        f"({kind}), "
        f"which is not ragstore's API: {text}"
    )
    if response.status_code in _NOT_OURS:
        return ConfigError(f"{said}; check the server URL (RAGSTORE_URL)")
    if response.status_code == 413:
        # a proxy before the server (nginx's client_max_body_size) refused the body, as
        # the server's own 413 does: it was an ``internal_error``, told as a crash, which
        # callers that handle ``request_too_large`` (the CLI's ingest) did not handle
        return error_from_problem(
            413,
            {
                "code": RequestTooLargeError.code,
                "detail": f"{said}; a proxy before the server limits request bodies (nginx: "
                "client_max_body_size): send smaller requests or raise its limit",
            },
        )
    return error_from_problem(response.status_code, {"detail": said})


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds: a number of them, or an HTTP date (RFC 9110,
    ``Fri, 31 Dec 1999 23:59:59 GMT``) as the seconds from now until then (0 for one
    past); None for anything else. A date was not read: the clients waited their own
    short backoff where a proxy or load balancer in front had said how long to wait."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are in GMT
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if 0 <= seconds < 1e6 else None


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the RagstoreError an error answer stands for; do nothing on success."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    exc = (
        error_from_problem(response.status_code, body)
        if isinstance(body, dict)
        else _foreign_error(response)
    )
    wait = _seconds(response.headers.get("Retry-After"))
    if wait is not None:  # what the clients' retries wait (``client._Retrying``)
        exc.retry_after = wait  # type: ignore[attr-defined]
    said = response.headers.get(UPLOAD_LIMIT_HEADER, "")
    if response.status_code == 413 and said.isdigit():  # the server's upload limit
        exc.max_upload_bytes = int(said)  # type: ignore[attr-defined]
    raise exc


# --- health ------------------------------------------------------------------------------


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", _body)


def ready() -> Call[dict[str, Any]]:
    return Call("GET", "/readyz", _body)


# --- collections -------------------------------------------------------------------------


def create_collection(
    name: str,
    *,
    model: str | None = None,
    settings: Mapping[str, Any] | None = None,
    dimension: int | None = None,
    distance: str | None = None,
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"name": name, "settings": dict(settings or {})}
    dimension = _integer(dimension)  # a NumPy integer, as the Store takes it
    for key, value in (("model", model), ("dimension", dimension), ("distance", distance)):
        if value is not None:
            body[key] = value
    return Call("POST", "/v1/collections", _body, json=body)


# the most collections a page of ``GET /v1/collections`` holds (the server's maximum)
COLLECTIONS_PAGE = 1000


def list_collections(cursor: str | None = None) -> Call[dict[str, Any]]:
    """One page of the collections: ``{"data", "count", "next_cursor"}``; the clients'
    ``list_collections`` follows ``next_cursor`` to the last (a server from before pages
    answers every collection and no cursor, and ignores the parameters)."""
    params: dict[str, Any] = {"limit": COLLECTIONS_PAGE}
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/v1/collections", _body, params=params)


def next_collections_cursor(page: Mapping[str, Any], previous: str | None) -> str | None:
    """The cursor of the page after ``page``, None after the last; a server that answers
    the cursor it was given again would have the clients ask for the same page forever.

    A page with no data but a cursor is not the last: every collection the server read
    the names of was deleted before it read their details, and collections may follow
    (stopping there dropped them from the list without a word). Only a null cursor ends."""
    cursor = page.get("next_cursor")
    if not cursor:
        return None
    if cursor == previous:
        raise RagstoreError(f"the server answered the same next_cursor {cursor!r} again")
    return str(cursor)


def get_collection(name: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/collections/{_n(name)}", _body)


def collection_fields(name: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/collections/{_n(name)}/fields", _body)


def field_indexes() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/field-indexes", lambda r: list(_body(r)["data"]))


def index_field(field: str, type: str) -> Call[dict[str, Any]]:
    return Call("POST", "/v1/field-indexes", _body, json={"field": field, "type": type})


def drop_field_index(field: str, type: str) -> Call[dict[str, Any]]:
    return Call("DELETE", "/v1/field-indexes", _body, params={"field": field, "type": type})


def delete_collection(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/collections/{_n(name)}", _none)


# --- texts -------------------------------------------------------------------------------


def add_texts(
    collection: str,
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
    *,
    vectors: Sequence[Sequence[float]] | None = None,
) -> Call[dict[str, Any]]:
    if isinstance(texts, (str, bytes)):  # sent as its characters, a text each
        raise InputError("texts is one string, not a list of texts; pass [text] to add one")
    from ragstore.validation import check_text_items

    body: dict[str, Any] = {"texts": list(texts)}
    # as the Store checks them, in its words: a NUL was told in the server's words for the
    # whole request ("the request holds a NUL byte at 'texts'")
    check_text_items(body["texts"])
    if metadatas is not None:
        body["metadatas"] = [_metadata(m, f"metadatas[{i}]") for i, m in enumerate(metadatas)]
    if ids is not None:
        body["ids"] = _ids(ids)
    if vectors is not None:
        body["vectors"] = [_floats(v, f"vectors[{i}]") for i, v in enumerate(vectors)]
    # under ids, a text sent again is stored over itself (answered "unchanged")
    kind: Literal["upsert", "write"] = "upsert" if ids is not None else "write"
    return Call("POST", f"/v1/collections/{_n(collection)}/texts", _body, json=body, kind=kind)


def get_texts(collection: str, ids: Sequence[str]) -> Call[list[dict[str, Any]]]:
    path = f"/v1/collections/{_n(collection)}/texts/get"
    return Call("POST", path, _data, json={"ids": _ids(ids)}, kind="read")


def delete_texts(collection: str, ids: Sequence[str]) -> Call[int]:
    return Call(
        "POST",
        f"/v1/collections/{_n(collection)}/texts/delete",
        lambda r: int(r.json()["deleted"]),
        json={"ids": _ids(ids)},
    )


# --- texts in batches --------------------------------------------------------------------

# A verb sent as several requests: a generator that yields each call, is sent each answer
# (or thrown each error: a RagstoreError) and returns the verb's result. Both clients drive
# it (``Client._run``, ``AsyncClient._run``), so they batch alike.
Plan = Generator[Call[Any], Any, T]


def _json_size(value: Any) -> int:
    """Bytes ``value`` takes in a body as httpx encodes it (compact, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _spans(body: dict[str, Any], lists: Sequence[str]) -> list[tuple[int, int]]:
    """``body``'s parallel ``lists`` cut into consecutive spans, each within
    :data:`MAX_ITEMS_PER_REQUEST` items and :data:`MAX_REQUEST_BYTES` bytes once encoded
    (an item over the byte limit alone is a span of its own: the server says whether it
    takes it)."""
    present = [key for key in lists if key in body]
    n = len(body[present[0]])
    budget = MAX_REQUEST_BYTES - _json_size({key: [] for key in present})
    spans: list[tuple[int, int]] = []
    start, size = 0, 0
    for i in range(n):
        cost = sum(_json_size(body[key][i]) + 1 for key in present)  # +1: its comma
        if i > start and (i - start >= MAX_ITEMS_PER_REQUEST or size + cost > budget):
            spans.append((start, i))
            start, size = i, 0
        size += cost
    spans.append((start, n))
    return spans


def _part(call: Call[T], lists: Sequence[str], start: int, end: int) -> Call[T]:
    body = {
        k: v[start:end] if k in lists else v for k, v in cast(dict[str, Any], call.json).items()
    }
    return replace(call, json=body)


def _refused_whole(exc: RagstoreError) -> bool:
    """The answer was 413: the server (or a proxy before it) read none of the request."""
    return getattr(exc, "status", None) == 413


def _halved(exc: RagstoreError, start: int, end: int, pending: list[tuple[int, int]]) -> bool:
    """Where request ``[start, end)`` of more than one item was refused 413 (nothing of it
    read), put its two halves first in ``pending`` to be sent instead; whether it was."""
    if not (_refused_whole(exc) and end - start > 1):
        return False
    middle = (start + end) // 2
    pending[:0] = [(start, middle), (middle, end)]
    return True


def _answered(exc: RagstoreError) -> bool:
    """An error answer came back (the request's fate is known): not a connection lost,
    a timeout, or an answer that was not ragstore's, after which it may have been done."""
    if getattr(exc, "nothing_sent", False):  # no connection made: known, not stored
        return True
    status = getattr(exc, "status", None)
    return isinstance(status, int) and status >= 400


def _tell(exc: RagstoreError, members: dict[str, Any], note: str) -> None:
    """Put ``members`` on the error as the Store does (``problem_members``) and in its
    problem body (``problem``, where a client's error carries the server's), and ``note``
    in its message."""
    exc.problem_members = {**exc.problem_members, **members}
    problem = getattr(exc, "problem", None)
    if isinstance(problem, dict):
        problem.update(members)
    exc.message += note


def _check_all_texts(body: dict[str, Any]) -> None:
    """What the server would refuse in any text, id, metadata or vector, checked before the
    first of several requests (the Store's checks, ``ingest/texts.py`` ``_checked``):
    found by the server in a later request, it was refused after the earlier ones stored.
    Only what the collection decides (the vectors' dimension, the model) is left to the
    server, and the first request meets it as every later one would."""
    from ragstore.validation import check_texts

    texts = body["texts"]
    n = len(texts)
    others = {key: body.get(key) for key in ("metadatas", "vectors")}
    check_texts(texts, body["ids"], others)
    widths = {len(v) for v in body.get("vectors", ())}
    if len(widths) > 1:
        raise InputError(
            f"vectors must be {n} rows of one length (the collection's dimension), got rows "
            f"of {sorted(widths)} numbers"
        )


_TEXT_LISTS = ("texts", "metadatas", "ids", "vectors")
_ADDED_COUNTS = ("added", "updated", "unchanged", "embedded", "reused")


def add_texts_plan(
    collection: str,
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None = None,
    ids: Sequence[str] | None = None,
    *,
    vectors: Sequence[Sequence[float]] | None = None,
) -> Plan[dict[str, Any]]:
    """:func:`add_texts` in as many requests as the API's limits need, answered as one.

    Sent whole, more than 10,000 texts (or 1 MiB of them) were refused 422/413, though the
    Store takes any number. Ids are drawn here when none are given (as the Store draws
    them), so that each text's id is known whatever request stores it. When a request
    fails after earlier ones stored their texts, the error says so as the Store's does:
    ``stored_ids`` and ``not_stored_ids`` (and ``unknown_ids``, the request's own, when
    no answer came back for it), in ``problem_members`` and the ``problem`` body.
    """
    whole = add_texts(collection, texts, metadatas, ids, vectors=vectors)
    body = cast(dict[str, Any], whole.json)
    drawn = "ids" not in body  # the caller knows no ids: a call again would draw others
    if drawn:
        body["ids"] = [uuid.uuid4().hex for _ in body["texts"]]
        whole = replace(whole, kind="upsert")  # its ids drawn once: sent again, the same
    all_ids: list[str] = body["ids"]
    n = len(body["texts"])
    if any(key in body and len(body[key]) != n for key in _TEXT_LISTS):
        return cast(dict[str, Any], (yield whole))  # the server names the mismatch
    pending = _spans(body, _TEXT_LISTS)
    checked = False
    answers: list[dict[str, Any]] = []
    while pending:
        start, end = pending.pop(0)
        if not checked and (start, end) != (0, n):
            _check_all_texts(body)  # before a second request could follow a first
            checked = True
        try:
            answers.append((yield _part(whole, _TEXT_LISTS, start, end)))
        except RagstoreError as exc:
            if _halved(exc, start, end, pending):
                continue
            if (start, end) != (0, n):
                _say_what_was_added(exc, all_ids, start, end, drawn)
            elif drawn and not _answered(exc):
                _tell(
                    exc,
                    {"stored_ids": [], "unknown_ids": all_ids, "not_stored_ids": []},
                    _DRAWN_IDS_NOTE,
                )
            raise
    if len(answers) == 1:
        return answers[0]
    out = {
        "collection": answers[-1]["collection"],
        "ids": all_ids,
        **{key: sum(int(a.get(key, 0)) for a in answers) for key in _ADDED_COUNTS},
    }
    if any(a.get(RESENT) for a in answers):
        out[RESENT] = True
    return out


# said of texts that got no answer where the call gave no ids: "sending it again is safe"
# held only under the same ids, and a second call without ids drew new ones and stored
# each text that had arrived twice
_DRAWN_IDS_NOTE = (
    "; but this call gave no ids, so its texts were sent under ids drawn for them, in their "
    "order: 'unknown_ids'. Send those texts again with ids= those ids; a call without ids "
    "draws new ones and would store each text that arrived a second time"
)


def _say_what_was_added(
    exc: RagstoreError, ids: list[str], start: int, end: int, drawn: bool = False
) -> None:
    """Request ``ids[start:end]`` failed; the requests before it stored theirs.
    ``drawn``: the ids were drawn here, not given (see :data:`_DRAWN_IDS_NOTE`)."""
    if _answered(exc):
        # the server's own account of this request (its batches commit one at a time)
        # (a large one through the ingest's pipeline, where a text that fails fails
        # alone: the ids it stored need not be its first ones)
        own = exc.problem_members or getattr(exc, "problem", {}) or {}
        within = set(own.get("stored_ids") or [])
        mine = ids[start:end]
        stored = ids[:start] + [i for i in mine if i in within]
        members: dict[str, Any] = {
            "stored_ids": stored,
            "not_stored_ids": [i for i in mine if i not in within] + ids[end:],
        }
        note = (
            f" ({len(stored)} of the {len(ids)} texts of the whole call were stored: see "
            "'stored_ids'; the rest were not: 'not_stored_ids')"
        )
    else:
        members = {
            "stored_ids": ids[:start],
            "unknown_ids": ids[start:end],
            "not_stored_ids": ids[end:],
        }
        note = (
            f" ({start} of the {len(ids)} texts, the first ones, were stored before it: see "
            f"'stored_ids'; the {end - start} sent in the request that got no answer may or may "
            "not be: 'unknown_ids' (adding them again is safe); the rest were not: "
            "'not_stored_ids')"
        )
        if drawn:
            note += _DRAWN_IDS_NOTE
    _tell(exc, members, note)


def text_ids_plan(call: Call[T], combine: Callable[[list[T]], T], verb: str) -> Plan[T]:
    """``call`` (a get or delete by ids) in as many requests as the API's limits need;
    ``combine`` makes the answers one (read texts in the order asked, deleted counts
    summed). Ids asked twice are asked once, as the server takes them in one request.
    When a delete fails after earlier requests deleted, the error names the ids those
    covered (``deleted_ids``; ``deleted`` counts the texts that existed) and the rest."""
    body = cast(dict[str, Any], call.json)
    body["ids"] = list(dict.fromkeys(body["ids"]))
    pending = _spans(body, ("ids",))
    answers: list[T] = []
    while pending:
        start, end = pending.pop(0)
        try:
            answers.append((yield _part(call, ("ids",), start, end)))
        except RagstoreError as exc:
            if _halved(exc, start, end, pending):
                continue
            if verb == "delete" and start:
                ids = body["ids"]
                done = cast(int, combine(answers))
                members: dict[str, Any] = {"deleted": done, "deleted_ids": ids[:start]}
                if _answered(exc):
                    members["not_deleted_ids"] = ids[start:]
                else:
                    members["unknown_ids"] = ids[start:end]
                    members["not_deleted_ids"] = ids[end:]
                _tell(
                    exc,
                    members,
                    f" (the first {start} of the {len(ids)} ids were deleted before it, {done} "
                    "texts: see 'deleted_ids'; the rest were not: see "
                    + (
                        "'not_deleted_ids')"
                        if _answered(exc)
                        else "'unknown_ids' and 'not_deleted_ids')"
                    ),
                )
            raise
    return combine(answers)


def get_texts_plan(collection: str, ids: Sequence[str]) -> Plan[list[dict[str, Any]]]:
    return text_ids_plan(
        get_texts(collection, ids), lambda parts: [t for p in parts for t in p], "get"
    )


def delete_texts_plan(collection: str, ids: Sequence[str]) -> Plan[int]:
    return text_ids_plan(delete_texts(collection, ids), sum, "delete")


# --- texts by filter ---------------------------------------------------------------------

TEXT_IDS_PAGE = 10_000


def _integer(value: Any) -> Any:
    """An integral ``value`` (a NumPy integer too, as the Store's checks take any
    ``numbers.Integral``) as a Python int; anything else unchanged, for the server's
    check to name (``True`` stays a bool: it is refused, not read as 1)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return operator.index(value)
    return value


def _where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``where`` filter as sent: JSON the server takes unchanged, else InvalidFilterError
    naming the bad part (as the Store's filter compiler would)."""
    if where is None:
        return None
    return cast(
        dict[str, Any],
        _json_value(
            dict(where) if isinstance(where, Mapping) else where, "the filter", InvalidFilterError
        ),
    )


def _texts_where_body(where: Mapping[str, Any] | None, ids: Sequence[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if where is not None:
        body["where"] = _where(where)
    if ids is not None:
        body["ids"] = list(dict.fromkeys(_ids(ids)))  # asked twice, listed once
    return body


def text_ids_where_plan(
    collection: str,
    *,
    where: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
) -> Plan[list[str]]:
    """``Store.text_ids`` over HTTP (``POST .../texts/query``): each page, following
    ``next_cursor`` to the last; ids over one request's limits are asked in several
    requests (a read: nothing is left half done) and answered together in id order."""
    body = {**_texts_where_body(where, ids), "limit": TEXT_IDS_PAGE}
    call = Call("POST", f"/v1/collections/{_n(collection)}/texts/query", _body, kind="read")
    pending = _spans(body, ("ids",)) if "ids" in body else [(0, 0)]
    several = len(pending) > 1
    found: list[str] = []
    while pending:
        start, end = pending.pop(0)
        part = _part(replace(call, json=body), ("ids",), start, end)
        cursor: str | None = None
        while True:
            paged = cast(dict[str, Any], part.json)
            page_call = replace(part, json={**paged, "cursor": cursor} if cursor else paged)
            try:
                page = cast(dict[str, Any], (yield page_call))
            except RagstoreError as exc:
                if cursor is None and _halved(exc, start, end, pending):
                    several = True
                    break
                raise
            found.extend(str(i) for i in page["data"])
            cursor = next_collections_cursor(page, cursor)
            if cursor is None:
                break
    # the server's order within one request; across several, merged (the collation is C:
    # byte order, which is Python's order of str)
    return sorted(set(found)) if several else found


def delete_texts_where(
    collection: str,
    *,
    where: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
) -> Call[list[str]]:
    """``Store.delete_texts_where`` over HTTP (``POST .../texts/delete-where``): one
    request, so one transaction. Ids over one request's limits (10,000 of them, 1 MiB)
    are refused before anything is sent: split, a failure could stop the delete halfway,
    which the Store's one transaction never does."""
    body = _texts_where_body(where, ids)
    if "ids" in body and len(_spans(body, ("ids",))) > 1:
        raise InputError(
            f"delete_texts_where over HTTP deletes in one request (one transaction), and "
            f"{len(body['ids'])} ids exceed what one request holds ({MAX_ITEMS_PER_REQUEST} "
            "ids, 1 MiB); call it for fewer ids at a time, or use delete_texts(ids) for the "
            "ids alone"
        )
    return Call(
        "POST",
        f"/v1/collections/{_n(collection)}/texts/delete-where",
        lambda r: [str(i) for i in r.json()["ids"]],
        json=body,
    )


# --- documents ---------------------------------------------------------------------------


def add_document(
    collection: str,
    name: str,
    text: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    background: bool = False,
) -> Call[dict[str, Any]]:
    meta = _metadata(metadata or {}, "metadata")
    body = {"name": name, "text": text, "metadata": meta, "background": background}
    # stored by name and content hash: sent again, the same document (answered
    # "unchanged"); one queued as a job (large), that job (its Idempotency-Key); in
    # background, sent again where it may have arrived only to a server known to honour
    # the key (Call.effect_on: an older server queued a second job)
    kind: Literal["upsert", "write"] = "write" if background else "upsert"
    return Call(
        "POST",
        f"/v1/collections/{_n(collection)}/documents",
        _body,
        json=body,
        kind=kind,
        idempotent=True,
    )


def _open_nonblocking(path: str, flags: int) -> int:
    """``open``'s opener that does not wait for a pipe's writer: ``O_NONBLOCK`` changes
    nothing for the regular file it is meant to be."""
    return os.open(path, flags | os.O_NONBLOCK)


class StreamedFile:
    """A file on disk sent in an upload's multipart body as httpx reads it, 64 KiB at a
    time, rather than read whole beforehand: a 2 GB folder took 2 GB of memory (more
    while the body was built).

    Its size and modification time are taken when the upload is planned (and sized to the
    server's limits by them); the request's ``Content-Length`` counts that size. A file
    that is gone, shorter, longer or modified when it is sent raises ``file_unreadable``
    (:meth:`_changed`) before the last of its bytes leaves (the server, short of its
    declared body, stores nothing of that request): sent anyway, it was a half-file, or
    bytes of two versions under one content hash. It is opened for each request that
    sends it (a request refused 413 is sent again) and closed once read or when a new
    send starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # a pipe's open would wait for a writer
                raise FileUnreadableError(f"{path}: not a regular file")
            # found unreadable here, before any request is sent (without waiting: a pipe
            # put in the file's place since the check above)
            with deferred(), open(path, "rb", opener=_open_nonblocking) as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise FileUnreadableError(f"{path}: not a regular file")
                f.read(1)
        except OSError as exc:
            raise unreadable(path, exc, "upload") from None
        self.size = st.st_size
        self._mtime = st.st_mtime_ns
        self._file: BinaryIO | None = None
        self._pos = 0
        self._read_all = False

    # what httpx asks of a file object: its length (tell, seek to the end), a rewind
    # before each send (seek(0)), and reads
    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END and offset == 0:
            return self.size  # the planned size; nothing is opened
        if whence == os.SEEK_SET and offset == 0:
            self.close()  # a new send: opened (and checked) again at the first read
            return 0
        if whence == os.SEEK_SET and offset == self._pos:
            return self._pos
        raise io.UnsupportedOperation("an upload's file is read from its start only")

    def read(self, n: int = -1) -> bytes:
        if self._pos == self.size and self._file is None and self._read_all:
            return b""  # read to its end and closed (checked as it was)
        if self._file is None:
            try:
                # without waiting: a pipe put in the file's place since it was planned
                # blocked the open, and the upload, until something wrote to it (_check
                # then finds it is not the file planned). Interrupts wait for the open
                # to be held: a SIGTERM between the descriptor's opening and its
                # assignment left the file to the garbage collector (a CI run's
                # ResourceWarning, in the CLI's interrupted remote ingest)
                with deferred():
                    self._file = open(self.path, "rb", opener=_open_nonblocking)  # noqa: SIM115
            except OSError as exc:
                if exc.errno in NOT_THE_FILE:  # the process's, not the file's: not a change
                    error = unreadable(self.path, exc, "upload")
                    error.changed_source = self  # type: ignore[attr-defined]
                    raise error from None
                raise self._changed(f"it cannot be opened now ({exc.strerror or exc})") from None
            self._check(os.fstat(self._file.fileno()))
        want = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        try:
            chunk = self._file.read(want)
            self._pos += len(chunk)
            if len(chunk) < want:
                raise self._changed(f"it ended after {self._pos} bytes")
            if self._pos == self.size:  # its last bytes: is it still the file planned?
                if self._file.read(1):
                    raise self._changed("it grew while it was being sent")
                self._check(os.fstat(self._file.fileno()))
                self._file.close()
                self._file, self._read_all = None, True
        except OSError as exc:  # an I/O error: the error Store.ingest raises for it
            self.close()
            error = unreadable(self.path, exc, "upload")
            error.changed_source = self  # type: ignore[attr-defined]
            raise error from None
        except BaseException:
            self.close()
            raise
        return chunk

    def close(self) -> None:
        """Close the file if open; the next read starts a new send from its start."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pos, self._read_all = 0, False

    def _check(self, st: os.stat_result) -> None:
        if (st.st_size, st.st_mtime_ns) != (self.size, self._mtime):
            raise self._changed(f"it is now {st.st_size} bytes and was modified")

    def _changed(self, what: str) -> FileUnreadableError:
        """The error for this file found changed; ``changed_source`` on it names the file
        to :func:`upload_plan` (its request's body was cut short: nothing of it stored)."""
        self.close()
        exc = FileUnreadableError(
            f"{self.path}: changed while the upload was being sent ({self.size} bytes when "
            f"planned; {what}); nothing of the request holding it was stored: upload it "
            "again once nothing is writing it"
        )
        exc.changed_source = self  # type: ignore[attr-defined]
        return exc


def _size(content: bytes | StreamedFile) -> int:
    return content.size if isinstance(content, StreamedFile) else len(content)


def upload(
    collection: str,
    files: Upload | Sequence[Upload | tuple[str, StreamedFile]],
    *,
    metadata: Mapping[str, Any] | None = None,
    background: bool = False,
) -> Call[dict[str, Any]]:
    # one file given bare is that file, not its characters (or its tuple's two halves)
    bare = isinstance(files, (str, Path)) or (
        isinstance(files, tuple) and len(files) == 2 and isinstance(files[1], (bytes, StreamedFile))
    )
    parts: list[tuple[str, tuple[str, bytes | StreamedFile, str]]] = []
    for f in cast(Sequence[Upload | tuple[str, StreamedFile]], [files] if bare else files):
        if isinstance(f, tuple):
            name, content = f
        else:
            path = Path(f)
            name, content = path.name, StreamedFile(path)
        parts.append(("files", (name, content, "application/octet-stream")))
    data = {
        "metadata": json.dumps(_metadata(metadata or {}, "metadata")),
        "background": "true" if background else "false",
    }
    return Call(
        "POST",
        f"/v1/collections/{_n(collection)}/documents/upload",
        _body,
        files=parts,
        data=data,
        # documents by name and content hash, as add_document; queued as a job (over the
        # server's RAGSTORE_BACKGROUND_INGEST_BYTES), that job again (its Idempotency-Key);
        # in background, a job sent again where it may have arrived only to a server known
        # to honour the key (Call.effect_on)
        kind="write" if background else "upsert",
        idempotent=True,
    )


# What one upload may hold: the server's RAGSTORE_MAX_UPLOAD_BYTES (50 MiB by default,
# config.py ``max_upload_bytes``) and 1000 files (``wire.MAX_UPLOAD_FILES``, the multipart
# parser's). A larger upload is sent in several requests within both; a server set to a
# lower byte limit answers 413, which stores nothing, and the request is sent again in
# halves. A part's boundary and headers cost about 200 bytes besides its name.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_PART_OVERHEAD = 256

# statuses that refuse a request for what it is, not for its file: a one-file request so
# answered stops the upload rather than failing that file alone and going on
_REQUEST_REFUSED = frozenset({401, 403, 404, 408, 429})


def _upload_spans(
    call: Call[Any], limit: int | None = None, first: int = 0, max_files: int | None = None
) -> list[tuple[int, int]]:
    """``call``'s files from ``first`` on cut into consecutive spans within ``max_files``
    (:data:`MAX_UPLOAD_FILES`) files and ``limit`` (:data:`MAX_UPLOAD_BYTES`) bytes (a
    file over it alone is a span of its own: the server refuses it, alone)."""
    most = MAX_UPLOAD_FILES if max_files is None else max_files
    parts = call.files or []
    fields = sum(len(v.encode("utf-8")) + _PART_OVERHEAD for v in (call.data or {}).values())
    budget = (MAX_UPLOAD_BYTES if limit is None else limit) - fields - _PART_OVERHEAD
    spans: list[tuple[int, int]] = []
    start, size = first, 0
    for i, (_, (name, content, _type)) in enumerate(parts):
        if i < first:
            continue
        cost = _size(content) + 3 * len(name.encode("utf-8")) + _PART_OVERHEAD
        if i > start and (i - start >= most or size + cost > budget):
            spans.append((start, i))
            start, size = i, 0
        size += cost
    spans.append((start, len(parts)))
    return spans


def _check_upload_names(names: list[str]) -> None:
    """What the server refuses in any name (a bad or repeated one), checked before the
    first of several requests: found in a later request, it was refused after the earlier
    ones stored, and a name repeated across two requests was stored over the first
    (answered "updated") where one request refuses it."""
    from ragstore.uploads.names import new_name, unique_names

    for name in names:
        new_name(name)
    unique_names(names)


def _file_report(exc: RagstoreError) -> tuple[list[Any], list[Any]] | None:
    """The server's account of a request some of whose files failed: the documents it
    stored and the files that failed (``api/routes/documents.py`` ``_ingest_now``)."""
    own = getattr(exc, "problem", None) or exc.problem_members or {}
    stored, failed = own.get("stored"), own.get("failed")
    if isinstance(stored, list) and isinstance(failed, list):
        return stored, failed
    return None


def upload_plan(
    collection: str,
    files: Upload | Sequence[Upload | tuple[str, StreamedFile]],
    *,
    metadata: Mapping[str, Any] | None = None,
    background: bool = False,
) -> Plan[dict[str, Any]]:
    """:func:`upload` in as many requests as the server's limits need, answered as one.

    Sent whole, an upload over RAGSTORE_MAX_UPLOAD_BYTES (or of more than 1000 files) was
    refused whole, though ``Store.ingest`` takes any number. Sent in several requests, in
    order, the answer is one request's: ``data`` (the documents stored, each with its
    ``status``), ``count`` and ``next_cursor``; and ``jobs``, when the server answered
    some requests 202 (``background``, or a request over its
    RAGSTORE_BACKGROUND_INGEST_BYTES): one job per such request, in order, whose files
    are not in ``data``. A file that fails does not stop the others, as in one request;
    the first failure is raised at the end, its ``problem_members`` (and ``problem``)
    listing ``stored`` and ``failed`` (name, code, detail) over every request, with
    ``jobs`` and ``queued`` (their files' names) when there are jobs. A request that
    fails outright (the server gone, no answer, refused as a whole), or at an error that
    fails every later write too (the database gone or full, a disk full, a read-only
    server: :func:`_stops_upload`), stops the upload:
    the error says, besides, which files were ``not_sent`` and which got no answer
    (``unknown``: they may or may not be stored; uploading them again is safe).
    """
    whole = upload(collection, files, metadata=metadata, background=background)
    parts = whole.files or []
    names = [name for _, (name, _, _) in parts]
    n = len(parts)
    limit, max_files = None, MAX_UPLOAD_FILES
    if n > 1:  # the server's limits, where it says them, size even the first request
        limit, max_files = yield from _server_limits()
    pending = _upload_spans(whole, limit, max_files=max_files)
    checked = False
    stored: list[Any] = []
    failed: list[Any] = []
    jobs: list[dict[str, Any]] = []
    queued: list[str] = []
    first: RagstoreError | None = None
    resent = False
    while pending:
        start, end = pending.pop(0)
        if not checked and (start, end) != (0, n):
            _check_upload_names(names)  # before a second request could follow a first
            checked = True
        try:
            answer = yield replace(whole, files=parts[start:end])
        except GeneratorExit:
            # the plan closed mid-request (an interrupt while it was sent, the client's
            # ``_run`` closing it): its files closed now, not left to the garbage collector
            _close(parts[start:end])
            raise
        except RagstoreError as exc:
            _close(parts[start:end])
            if (start, end) == (0, n) and not (_refused_whole(exc) and n > 1):
                raise  # one request, as before: the server's own answer
            if _refused_whole(exc) and end - start > 1:
                # the server's limit, when it says it (RAGStore-Max-Upload-Bytes): the rest
                # is cut to fit it at once, where halving re-sent up to twice the upload
                said = getattr(exc, "max_upload_bytes", None)
                fitted = _upload_spans(whole, said, start, max_files) if said else []
                if fitted and fitted[0][1] < end:
                    pending[:] = fitted
                else:
                    _halved(exc, start, end, pending)
                continue
            source = getattr(exc, "changed_source", None)
            if source is not None:  # this request's body was cut short: none of it stored
                changed = next(i for i in range(start, end) if parts[i][1][1] is source)
                _stop(exc, names, start, end, pending, stored, failed, jobs, queued, changed)
                raise
            report = _file_report(exc)
            status = getattr(exc, "status", None)
            one_file = (
                end - start == 1
                and _answered(exc)
                and status not in _REQUEST_REFUSED
                and cast(int, status) < 500
            )
            if report is None and not one_file:
                _stop(exc, names, start, end, pending, stored, failed, jobs, queued)
                raise
            if report is not None:
                stored += report[0]
                failed += report[1]
                if _stops_upload(exc):
                    _stop(exc, names, start, end, pending, stored, failed, jobs, queued, None, True)
                    raise
            else:
                failed.append(_failure(names[start], exc))
            first = first or exc
            continue
        _close(parts[start:end])
        if (start, end) == (0, n):
            return cast(dict[str, Any], answer)
        resent = resent or bool(answer.get(RESENT))
        if "data" in answer:
            stored += answer["data"]
        else:  # 202: a job for the worker
            jobs.append(answer)
            queued += names[start:end]
    if first is not None:
        members: dict[str, Any] = {"stored": stored, "failed": failed}
        if jobs:
            members |= {"jobs": jobs, "queued": queued}
        _tell(
            first,
            members,
            f" (of the {n} files of this upload, sent in several requests: {len(stored)} "
            f"stored, see 'stored'; {len(failed)} failed, see 'failed'"
            + (f"; {len(queued)} queued in jobs, see 'jobs' and 'queued')" if jobs else ")"),
        )
        raise first
    out: dict[str, Any] = {"data": stored, "count": len(stored), "next_cursor": None}
    if jobs:
        out["jobs"] = jobs
    if resent:
        out[RESENT] = True
    return out


def _close(parts: list[tuple[str, tuple[str, bytes | StreamedFile, str]]]) -> None:
    """Close the files a request sent (one it stopped reading, the answer come early,
    was left open)."""
    for _, (_, content, _) in parts:
        if isinstance(content, StreamedFile):
            content.close()


def _server_limits() -> Generator[Call[Any], Any, tuple[int | None, int]]:
    """The server's upload limits, asked of ``/healthz`` (its ``limits``): the bytes (None
    where it does not say them: an older server, another in front of it) and the files
    (at most :data:`MAX_UPLOAD_FILES`) one upload request may hold. Unasked, a server with
    a lower limit than :data:`MAX_UPLOAD_BYTES` was sent the upload whole, refused 413,
    before the client fitted its requests to it."""
    try:
        answer = yield health()
    except RagstoreError:
        return None, MAX_UPLOAD_FILES  # found by the 413s, as before
    told = answer.get("limits") if isinstance(answer, dict) else None
    if not isinstance(told, dict):
        return None, MAX_UPLOAD_FILES

    def positive(key: str) -> int | None:
        value = told.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return value if ok else None

    files = positive("max_upload_files")
    return positive("max_upload_bytes"), min(files or MAX_UPLOAD_FILES, MAX_UPLOAD_FILES)


# errors that fail every later write too (``ingest.service.stops_ingest``): the database
# gone, out of room or not ready (503), the staging disk full (507), a read-only server
_STOPS_UPLOAD_CODES = frozenset({"database_unavailable", "not_ready", "disk_full", "read_only"})


def _stops_upload(exc: RagstoreError) -> bool:
    """Whether a request that stored some of its files and failed others failed at an
    error every later request would meet too: the server says it stopped its ingest there
    (``not_attempted``), or the error's kind fails every write. The upload stops there,
    the rest ``not_sent``, where each remaining request was sent (its files staged, parsed
    and embedded) only to fail in turn."""
    own = getattr(exc, "problem", None) or exc.problem_members or {}
    return bool(own.get("not_attempted")) or exc.code in _STOPS_UPLOAD_CODES


def _failure(name: str, exc: RagstoreError) -> dict[str, Any]:
    """A file a request refused, as the server lists one that failed (``failed``): its
    detail naming it, which a refusal of the whole request (a 413's) does not."""
    detail = exc.message if name in exc.message else f"{name}: {exc.message}"
    return {"name": name, "code": exc.code, "detail": detail}


def _stop(
    exc: RagstoreError,
    names: list[str],
    start: int,
    end: int,
    pending: list[tuple[int, int]],
    stored: list[Any],
    failed: list[Any],
    jobs: list[dict[str, Any]],
    queued: list[str],
    changed: int | None = None,
    reported: bool = False,
) -> None:
    """Request ``names[start:end]`` failed outright; say what every file's fate is.
    ``changed``: the file found changed while the request was sent, which stopped it
    before its body was whole: that file failed, the request's others were not sent.
    ``reported``: the server's report of the request's files is in ``stored`` and
    ``failed`` already (it stopped at an error that fails every later write)."""
    not_sent = [name for s, e in pending for name in names[s:e]]
    members: dict[str, Any] = {"stored": stored, "failed": list(failed)}
    if reported:
        pass
    elif changed is not None:
        members["failed"].append(_failure(names[changed], exc))
        not_sent[:0] = [name for i, name in enumerate(names[start:end], start) if i != changed]
    elif _answered(exc):  # refused as a whole: none of its files stored
        members["failed"] += [_failure(name, exc) for name in names[start:end]]
    else:
        members["unknown"] = names[start:end]
    members["not_sent"] = not_sent
    if jobs:
        members |= {"jobs": jobs, "queued": queued}
    _tell(
        exc,
        members,
        f" (of the {len(names)} files of this upload, sent in several requests: "
        f"{len(stored)} stored{'' if reported else ' before it'}, see 'stored'; "
        f"{len(members['failed'])} failed, see 'failed'"
        + (f"; {len(queued)} queued in jobs, see 'jobs' and 'queued'" if jobs else "")
        + (
            ""
            if _answered(exc) or changed is not None
            else f"; the {end - start} sent in the request that got no answer may or may not "
            "be stored: 'unknown' (uploading them again is safe)"
        )
        + f"; {len(not_sent)} not sent: 'not_sent')",
    )


def ingest_plan(
    collection: str,
    paths: str | Path | Sequence[str | Path],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Plan[dict[str, Any]]:
    """Files, and the files under folders, uploaded and ingested (:func:`upload_plan`: in
    as many requests as the server's limits need).

    A folder is walked as ``ragstore ingest`` walks it (:func:`ragstore.files.discover`:
    supported suffixes, no hidden files, no link leading out of it), each file named by its
    path below the folder. The answer gains ``skipped``: the links not followed.
    """
    # one path given bare is that path, as Store.ingest takes it, not its characters
    # ("notes.md" was "n", "o", ..., and "." the whole working directory)
    given = [paths] if isinstance(paths, (str, Path)) else paths
    files: list[Upload | tuple[str, StreamedFile]] = []
    skipped: list[dict[str, str]] = []
    for p in map(Path, given):
        # not Path.is_dir(): it raised OSError for a name too long, say (the upload below
        # reports such a file as one RagstoreError)
        if stat.S_ISDIR(stat_mode(p)):
            found = discover([p])
            for folder, exc in found.unlisted:  # before anything is sent, as for a file
                raise unlisted_error(folder, exc)
            top = p.resolve()
            files += [(str(f.relative_to(top)), StreamedFile(f)) for f in found.files]
            skipped += [
                {
                    "source": str(link),
                    "code": LINK_OUTSIDE_FOLDER,
                    "detail": link_outside_detail(str(link), str(target), "upload"),
                }
                for link, target in found.outside
            ]
            # a pipe, device or broken link with a supported suffix: not sent, said
            for entry in found.passed:
                why = not_ingestible(entry, str(entry))
                skipped.append({"source": str(entry), "code": why.code, "detail": why.message})
        else:
            files.append(p)
    answer = yield from upload_plan(collection, files, metadata=metadata)
    return {**answer, "skipped": skipped}


def list_documents(
    collection: str,
    *,
    cursor: str | None = None,
    limit: int = 50,
    format: str | None = None,
    source_prefix: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> Call[dict[str, Any]]:
    from ragstore.validation import page_limit

    params: dict[str, Any] = {"limit": page_limit(limit)}  # the Store's check
    if cursor:
        params["cursor"] = cursor
    # "" is a filter too (the Store's and the API's answer to it): left out, it was none
    if format is not None:
        params["format"] = format
    if source_prefix is not None:
        params["source_prefix"] = source_prefix
    if source is not None:
        params["source"] = source
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidFilterError('metadata filter must be a JSON object, e.g. {"team": "ops"}')
        params["metadata"] = json.dumps(
            _json_value(dict(metadata), "the metadata filter", InvalidFilterError)
        )
    return Call("GET", f"/v1/collections/{_n(collection)}/documents", _body, params=params)


def get_document(collection: str, document_id: int) -> Call[dict[str, Any]]:
    path = f"/v1/collections/{_n(collection)}/documents/{_id(document_id, 'document')}"
    return Call("GET", path, _body)


def delete_document(collection: str, document_id: int) -> Call[None]:
    path = f"/v1/collections/{_n(collection)}/documents/{_id(document_id, 'document')}"
    return Call("DELETE", path, _none)


# --- search ------------------------------------------------------------------------------


def search(
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
) -> Call[dict[str, Any]]:
    from ragstore.validation import check_context, finite_number, flag

    # a NumPy integer (``k=np.int64(2)``, from an array's argmax or len) is taken as the
    # Store takes it, as the int it is: refused here as not JSON-serialisable, the same
    # call worked on a Store and failed on a Client
    k, ef_search, fetch_k = _integer(k), _integer(ef_search), _integer(fetch_k)
    # the Store's check and words (a NumPy integer taken as the int it is): sent
    # unchecked, a bad context came back in the server schema's pydantic wording
    context = check_context(context)
    # and a NumPy float (``rrf_k=np.float32(20)``) as the float it is; NaN and infinity
    # refused as the Store refuses them (the Store's check: validation.finite_number)
    rrf_k, vector_weight, fulltext_weight, lambda_mult = (
        None if value is None else finite_number(value, name)
        for name, value in (
            ("rrf_k", rrf_k),
            ("vector_weight", vector_weight),
            ("fulltext_weight", fulltext_weight),
            ("lambda_mult", lambda_mult),
        )
    )
    body: dict[str, Any] = {"k": k, "explain": flag(explain, "explain")}
    if not flag(
        sections, "sections"
    ):  # only when asked, so that an older server is not sent an unknown field
        body["sections"] = False
    if flag(mmr, "mmr"):  # likewise
        body["mmr"] = True
    options: dict[str, Any] = {
        "query": query,
        "vector": None if vector is None else _floats(vector, "the query vector"),
        "mode": mode,
        "where": _where(where),
        "context": context,
        "ef_search": ef_search,
        "rrf_k": rrf_k,
        "vector_weight": vector_weight,
        "fulltext_weight": fulltext_weight,
        "fetch_k": fetch_k,
        "lambda_mult": lambda_mult,
    }
    body.update({key: value for key, value in options.items() if value is not None})
    # what the encoder would fail on (a lone surrogate in the query, a NaN weight, a
    # numpy float32 weight) named here: it raised httpx's bare UnicodeEncodeError, ValueError or
    # TypeError, which no ``except RagstoreError`` caught, where the Store names it
    _json_value(body, "the search request")
    return Call("POST", f"/v1/collections/{_n(collection)}/search", _body, json=body, kind="read")


# --- models ------------------------------------------------------------------------------


def list_models() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/models", _data)


def model_status(collection: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/collections/{_n(collection)}/model", _body)


def migrate_model(
    collection: str, to: str, *, batch_size: int = 256, switch: bool = True, sample_queries: int = 8
) -> Call[dict[str, Any]]:
    body = {
        "to": to,
        "batch_size": _integer(batch_size),
        "switch": switch,
        "sample_queries": _integer(sample_queries),
    }
    return Call("POST", f"/v1/collections/{_n(collection)}/model/migrate", _body, json=body)


def rollback_model(collection: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/collections/{_n(collection)}/model/rollback", _body)


# --- jobs --------------------------------------------------------------------------------


def get_job(job_id: int) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/jobs/{_id(job_id, 'job')}", _body)


def list_jobs(
    *,
    cursor: str | None = None,
    limit: int = 50,
    status: str | None = None,
    collection: str | None = None,
) -> Call[dict[str, Any]]:
    params: dict[str, Any] = {"limit": _integer(limit)}
    for key, value in (("cursor", cursor), ("status", status), ("collection", collection)):
        if value:
            params[key] = value
    return Call("GET", "/v1/jobs", _body, params=params)
