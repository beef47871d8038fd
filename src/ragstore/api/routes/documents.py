"""/v1/collections/{name}/documents: add (JSON text or multipart upload), list, get, delete.

Small additions are ingested during the request (201); large ones, or any with
``background``, become a job for ``ragstore worker`` and answer 202 with the job.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    Header,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import WithJsonSchema
from starlette.datastructures import FormData

from ragstore.api import forms
from ragstore.api.deps import CollectionName, Principal, ReadAccess, RowId, Rt, State, WriteAccess
from ragstore.api.errors import public_detail
from ragstore.api.errors_doc import responses
from ragstore.db import catalog
from ragstore.db.errors import translated
from ragstore.errors import (
    DatabaseUnavailableError,
    EmptyDocumentError,
    FileTooLargeError,
    InputError,
    InvalidFilterError,
    RagstoreError,
)
from ragstore.ingest.documents import NewDocument, add_documents
from ragstore.ingest.service import created_for_this_write, stops_ingest
from ragstore.jobs import JobFile, submit_ingest
from ragstore.jobs.reading import job_public
from ragstore.paging import decode_cursor, encode_cursor, split_page
from ragstore.runtime import Runtime
from ragstore.schemas import DocumentCreate, DocumentPublic, DocumentsPublic, JobPublic
from ragstore.uploads import names, staging
from ragstore.validation import (
    MAX_FORMAT_CHARS,
    MAX_SOURCE_CHARS,
    check_value,
    document_filters,
    loads_json,
)

router = APIRouter(
    prefix="/v1/collections/{name}/documents", tags=["documents"], responses=responses(404)
)

_ADD_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobPublic, "description": "Accepted: ingested by a background job"},
    **responses(404, 409, 413, 415),
}


def _public(
    rt: Runtime, collection: str, doc: dict[str, Any], outcome: str | None = None
) -> DocumentPublic:
    """A document as the API answers it: an upload's ``source`` and its metadata's
    ``path`` are its name, as ``name`` is (:func:`ragstore.uploads.names.answered`, the
    rule the Store and search hits follow too); a file ingested from disk and a text keep
    their own."""
    name = names.source_name(rt.settings, collection, doc["source"])
    source, meta = names.answered(doc["source"], name, doc["metadata"])
    return DocumentPublic.model_validate(
        {
            **doc,
            "collection": collection,
            "status": outcome,
            "name": name,
            "source": source,
            "metadata": meta,
        }
    )


def _ingest_now(rt: Runtime, collection: str, docs: list[NewDocument]) -> list[DocumentPublic]:
    """Ingest during the request (the upload's chunks share encode batches). Answers are
    built from the rows this request's own transactions wrote.

    Each document is stored whole or not at all, so when one fails the others are in:
    the first failure is raised then (its status and code, as for a one-file upload);
    for several files, its problem body holds every file's fate, ``stored`` (those
    documents, as a success would list them) and ``failed`` (name, code, detail each),
    and its detail says when others were stored. An error status alone reads as "nothing
    happened", and a client retrying the upload on that reading would be told the stored
    ones were unchanged (the CLI reported them so).
    """
    outcomes = add_documents(rt, collection, docs)
    stored = [
        _public(rt, collection, o.document, o.status) for o in outcomes if o.document is not None
    ]
    failed = [(o, o.error) for o in outcomes if o.error is not None]
    if not failed:
        return stored
    # an ingest stopped by an error that fails every write (the database's disk full, the
    # database gone) leaves the files after it ``not_attempted``: the error raised is the
    # one that stopped it, those files are listed in 'failed' and in 'not_attempted'
    unattempted = [o.name for o in outcomes if o.status == "not_attempted"]
    met = [err for o, err in failed if o.status != "not_attempted"]
    # stopped: the error that stopped it, not a parse error of another file; also where the
    # stop came at the last file (none left unattempted): another file's 4xx raised then,
    # and a split upload's Client, not told the ingest stopped, sent its next request
    stopper = next((err for err in met if stops_ingest(err)), None)
    first = stopper or (met or [failed[0][1]])[0]
    if len(outcomes) == 1:
        raise first
    first.problem_members = {
        "stored": jsonable_encoder(stored),
        "failed": [
            {"name": o.name, "code": err.code, "detail": _failure_detail(o.name, err)}
            for o, err in failed
        ],
    }
    if stored:
        first.message += (
            f" ({len(stored)} other file(s) of this upload were stored: see 'stored'; "
            f"{len(failed)} failed: see 'failed')"
        )
    if unattempted:
        first.problem_members["not_attempted"] = unattempted
        first.message += (
            f" (the ingest stopped at this error: {len(unattempted)} file(s) not attempted, "
            "see 'not_attempted'; sending them again resumes)"
        )
    raise first


def _failure_detail(name: str, err: RagstoreError) -> str:
    """A failed file's detail in an upload's problem: for an unreachable database its
    public reason (as the problem's own ``detail`` is), not the message, which holds the
    database's address."""
    if isinstance(err, DatabaseUnavailableError):
        return f"{name}: not stored: {public_detail(err)}"
    return err.message


# list_documents' text filters, their caps in the OpenAPI schema (``maxLength``, as a
# client generated from it checks) but checked by ``validation.document_filters``, the
# Store's check, whose problem names the filter, its length and the cap (pydantic's
# ``max_length`` answered first, in other words). The schema lost them when the check moved.
FormatFilter = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_FORMAT_CHARS})]
SourceFilter = Annotated[str, WithJsonSchema({"type": "string", "maxLength": MAX_SOURCE_CHARS})]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A fresh value (a UUID) per upload, the same when the request is sent "
        "again: a request queued as a job (202) is answered with the job the first one "
        "queued, not queued twice. The Python client sends one.",
    ),
]


def _scoped_key(caller: Principal, key: str | None) -> str | None:
    """``key`` (the ``Idempotency-Key`` header) as stored with the job it queues: a digest
    of it with the caller's API key id, so that two keys' clients choosing the same value
    never share a job."""
    if key is None:
        return None
    owner = caller.key.key_id if caller.key is not None else ""
    return hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


def _accept(
    state: State, collection: str, files: list[JobFile], idempotency_key: str | None
) -> JSONResponse:
    """Queue ``files`` as a job and answer 202 with it; a request sent again under the
    same ``idempotency_key`` is answered with the job the first one queued
    (:func:`ragstore.jobs.service.submit_ingest`)."""
    job = submit_ingest(
        state.runtime, state.queue, collection, files, idempotency_key=idempotency_key
    )
    return JSONResponse(
        jsonable_encoder(job_public(job)),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentPublic,
    summary="Add a document given as text",
    responses=_ADD_RESPONSES,
)
def add_document(
    name: CollectionName,
    body: DocumentCreate,
    state: State,
    caller: WriteAccess,
    idempotency_key: IdempotencyKey = None,
) -> DocumentPublic | JSONResponse:
    caller.require("write", name)
    rt = state.runtime
    names.new_name(body.name)
    check_value(body.metadata, "metadata", paths=True)  # the schema's check walks no paths
    if not body.text.strip():  # refused before the collection is made, as a bad name is
        raise EmptyDocumentError(f"{body.name}: the text is empty; nothing to ingest")
    coll, created = rt.open_or_create(name)  # as `ragstore ingest` does
    content = body.text.encode("utf-8")
    if body.background or len(content) > rt.settings.background_ingest_bytes:
        files = [JobFile(body.name, content, body.metadata)]
        return _accept(state, name, files, _scoped_key(caller, idempotency_key))
    # made here and nothing stored (the text failed): not left behind
    with staging.staging_area(rt.settings) as area, created_for_this_write(rt, coll, created):
        doc = NewDocument(body.name, area.write(content), body.metadata)
        return _ingest_now(rt, name, [doc])[0]


def _save(src: BinaryIO, dest: Path, limit: int, name: str) -> int:
    """Copy an upload to its staging file a block at a time; 413 past ``limit`` bytes."""
    size = 0
    with dest.open("wb") as out:
        while block := src.read(1 << 20):
            size += len(block)
            if size > limit:
                raise FileTooLargeError(
                    f"{name}: over the per-file limit of {limit} bytes (RAGSTORE_MAX_FILE_BYTES)"
                )
            out.write(block)
    return size


def _upload(
    state: State,
    name: str,
    files: list[UploadFile],
    meta: dict[str, Any],
    background: bool,
    idempotency_key: str | None,
) -> DocumentsPublic | JSONResponse:
    """Stream each file to a private staging file, then ingest now or queue a job.

    Every file is named, sized and staged before a missing collection is created: created
    first, an upload refused for a bad or repeated name or a file over the limit left a
    new, empty collection behind its 4xx (the JSON route and ``Store.add_document`` check
    first too)."""
    rt = state.runtime
    with staging.staging_area(rt.settings) as area:
        docs: list[NewDocument] = []
        total = 0
        for upload in files:
            fname = upload.filename or ""
            names.new_name(fname)  # checked in _checked_form, naming its part
            path = area.new_file()
            with area.room():
                total += _save(upload.file, path, rt.settings.max_file_bytes, fname)
            docs.append(NewDocument(fname, path, meta))
        names.unique_names([d.name for d in docs])
        coll, created = rt.open_or_create(name)  # as `ragstore ingest` does
        if background or total > rt.settings.background_ingest_bytes:
            # a queued job's collection stays, whatever the job's fate: the 202 named it,
            # and the job checks that it writes into the collection it was queued for
            return _accept(
                state,
                name,
                [JobFile(d.name, d.staged.read_bytes(), meta) for d in docs],
                idempotency_key,
            )
        with created_for_this_write(rt, coll, created):  # none stored: not left behind
            out = _ingest_now(rt, name, docs)
    return DocumentsPublic(data=out, count=len(out), next_cursor=None)


_UPLOAD_FIELDS = frozenset({"files", "metadata", "background"})


async def _checked_form(request: Request, name: CollectionName, caller: WriteAccess) -> FormData:
    """The upload's form (as FastAPI parsed it for the parameters: Starlette keeps it),
    checked before FastAPI validates its parameters, for a caller allowed to write there.

    One 422 naming a form field the upload does not take, a setting given twice, or a
    ``files`` part without a file name. FastAPI reads only the fields it is told of and, of
    one given twice, keeps the last: an upload whose metadata was misspelt (``meta``) or
    sent twice was stored without it, or with the last only, and answered 201 (the JSON
    route refuses an unknown field). A ``files`` part with no ``filename`` was refused
    with pydantic's "Expected UploadFile, received: <class 'str'>".

    A file name is checked as its part sent it (:func:`ragstore.api.forms.sent_filename`)
    and as a new document's name (:func:`names.new_name`), and a field value or file name
    in bytes that are not the upload's charset is refused (:func:`ragstore.api.forms.
    undecoded_fields`, :class:`ragstore.api.forms.Undecoded`): ``C:\\x.md`` was stored as
    ``x.md``, and latin-1 bytes garbled."""
    caller.require("write", name)
    form = await request.form()
    for key, count in Counter(key for key, _ in form.multi_items()).items():
        if key not in _UPLOAD_FIELDS:
            raise InputError(
                f"unknown form field {key[:100]!r} in the upload: its fields are 'files' "
                "(one part per file), 'metadata' (a JSON object) and 'background' (true or "
                "false); nothing was stored"
            )
        if key != "files" and count > 1:
            raise InputError(
                f"form field {key!r} is given {count} times in the upload; send it once: "
                "nothing was stored"
            )
    # the codec the form parser decoded the upload's text in, named for a message
    charset = forms.form_charset(request.headers.get("content-type", "")).upper()
    for key, value in forms.undecoded_fields(request)[:1]:
        raise InputError(
            f"form field {key!r} of the upload is not {charset} text (read as "
            f"{value[:60]!r}); send it as {charset}: nothing was stored"
        )
    starred = forms.named_by_filename_star(request, "files")
    for i, part in enumerate(form.getlist("files")):
        where = f"part {i} of field 'files' (counting from 0)"
        if isinstance(part, str) and i < len(starred) and starred[i]:
            raise InputError(
                f"{where} names its file only in filename*, which multipart/form-data does "
                "not use (RFC 7578 section 4.2): send the name in filename=, as UTF-8 "
                '(Content-Disposition: form-data; name="files"; filename="café.md"); '
                "nothing was stored"
            )
        if isinstance(part, str):
            raise InputError(
                f"{where} has no file name: send each "
                'file with one (Content-Disposition: form-data; name="files"; '
                'filename="notes/a.md"); nothing was stored'
            )
        # as sent: the parser cut a Windows path (C:\x.md) to its last part unsaid
        sent = forms.sent_filename(part, charset) or part.filename or ""
        if isinstance(sent, forms.Undecoded):
            raise InputError(
                f"{where}: its file name is not {charset} text (read as {sent[:60]!r}); "
                f"send the name as {charset}: nothing was stored"
            )
        try:
            names.new_name(sent)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}; nothing was stored") from None
        part.filename = sent
    return form


@router.post(
    "/upload",
    status_code=status.HTTP_201_CREATED,
    response_model=DocumentsPublic,
    summary="Upload files (multipart)",
    responses=_ADD_RESPONSES,
    dependencies=[Depends(_checked_form)],
)
def upload_documents(
    name: CollectionName,
    state: State,
    caller: WriteAccess,
    files: Annotated[list[UploadFile], File(description="One or more documents.")],
    metadata: Annotated[str, Form(description="JSON object added to every document.")] = "{}",
    background: Annotated[bool, Form()] = False,
    idempotency_key: IdempotencyKey = None,
) -> DocumentsPublic | JSONResponse:
    caller.require("write", name)
    try:
        meta = loads_json(metadata)
    except json.JSONDecodeError as exc:
        raise InputError(f"metadata is not valid JSON: {exc.msg}") from None
    if not isinstance(meta, dict):
        raise InputError("metadata must be a JSON object")
    check_value(meta, "metadata", paths=True)
    if not files:
        raise InputError("no files in the upload; send them as multipart field 'files'")
    return _upload(state, name, files, meta, background, _scoped_key(caller, idempotency_key))


@router.get("", response_model=DocumentsPublic, summary="List documents, a page at a time")
def list_documents(
    name: CollectionName,
    rt: Rt,
    caller: ReadAccess,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    format: Annotated[
        FormatFilter | None,
        Query(
            examples=["markdown"],
            description=f"At most {MAX_FORMAT_CHARS} characters.",
        ),
    ] = None,
    source_prefix: Annotated[
        SourceFilter | None,
        Query(description=f"At most {MAX_SOURCE_CHARS:,} characters."),
    ] = None,
    metadata: Annotated[
        str | None,
        Query(description="JSON object the metadata contains", examples=['{"team": "ops"}']),
    ] = None,
    source: Annotated[
        SourceFilter | None,
        Query(
            description="The one document of this exact source: an absolute path is a "
            "source as stored (a file ingested from the server's disk), a relative one the "
            "name a file was uploaded under (compared in Unicode NFC). A name no upload "
            "can have matches nothing. `ragstore documents show/delete NAME` use it. "
            f"At most {MAX_SOURCE_CHARS:,} characters.",
            examples=["notes/tea.md"],
        ),
    ] = None,
) -> DocumentsPublic:
    caller.require("read", name)
    # the Store's check (its caps too: the Store answered an empty page for a longer one)
    document_filters(format, source_prefix, source, InvalidFilterError)
    check_value({"metadata": metadata}, "the query", InvalidFilterError)
    meta: dict[str, Any] | None = None
    if metadata is not None:
        try:
            meta = loads_json(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidFilterError(f"metadata filter is not valid JSON: {exc.msg}") from None
        if not isinstance(meta, dict):
            raise InvalidFilterError('metadata filter must be a JSON object, e.g. {"team": "ops"}')
        check_value(meta, "the metadata filter", InvalidFilterError)
    coll = rt.collection(name)
    after = decode_cursor(cursor, coll.id)  # refused for another collection of the name
    prefix = names.source_prefix(rt.settings, name, source_prefix)
    exact = names.exact_source(rt.settings, name, source) if source is not None else None
    rows: list[dict[str, Any]] = []
    more = False
    if source is None or exact is not None:  # else a name no upload can have: none
        with rt.db.connection() as conn, translated(f"listing documents of {name!r}"):
            rows, more = split_page(
                catalog.documents_page(
                    conn,
                    coll.id,
                    after=after,
                    limit=limit + 1,
                    fmt=format,
                    source_prefix=prefix,
                    metadata=meta,
                    source=exact,
                ),
                limit,
            )
    data = [_public(rt, name, r) for r in rows]
    nxt = encode_cursor(rows[-1]["id"], coll.id) if more else None
    return DocumentsPublic(data=data, count=len(data), next_cursor=nxt)


@router.get("/{document_id}", response_model=DocumentPublic, summary="Get a document")
def get_document(
    name: CollectionName, document_id: RowId, rt: Rt, caller: ReadAccess
) -> DocumentPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading document {document_id}"):
        return _public(rt, name, catalog.document(conn, coll, document_id))


@router.delete(
    "/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a document with its chunks",
)
def delete_document(
    name: CollectionName, document_id: RowId, rt: Rt, caller: WriteAccess
) -> Response:
    caller.require("write", name)
    coll = rt.collection(name)
    # the document only: a file it was read from stays. Uploads were once kept under
    # <data dir>/uploads/<collection>, and this route removed the file of any source
    # there, a file of the user's own ingested from that folder included; nothing is
    # written there now (uploads are staged per request), and the Store's and the CLI's
    # delete never touched files
    with rt.db.connection() as conn, translated(f"deleting document {document_id}"):
        catalog.delete_document(conn, coll, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
