"""/v1/collections/{name}/documents: add (JSON text or multipart upload), list, get, delete.

Small additions are ingested during the request (201); large ones, or any with
``background``, become a job for ``ragstore worker`` and answer 202 with the job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from ragstore.api import catalog
from ragstore.api.deps import (
    CollectionName,
    ReadAccess,
    RowId,
    Rt,
    State,
    WriteAccess,
    decode_cursor,
    encode_cursor,
)
from ragstore.api.errors import error_class_for_code
from ragstore.api.errors_doc import responses
from ragstore.api.routes.jobs import job_public
from ragstore.api.schemas import DocumentCreate, DocumentPublic, DocumentsPublic, JobPublic
from ragstore.db.errors import translated
from ragstore.errors import FileTooLargeError, InputError, InvalidFilterError
from ragstore.ingest import FileOutcome, ingest_paths
from ragstore.jobs import JobFile, staging, submit_ingest
from ragstore.runtime import Runtime
from ragstore.validation import check_value

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"],
                   responses=responses(404))

_ADD_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobPublic, "description": "Accepted: ingested by a background job"},
    **responses(404, 413, 415),
}


def _public(rt: Runtime, collection: str, doc: dict[str, Any],
            outcome: str | None = None) -> DocumentPublic:
    return DocumentPublic(collection=collection,
                          name=staging.source_name(rt.settings, collection, doc["source"]),
                          status=outcome, **doc)  # type: ignore[arg-type]


def _ingest_now(rt: Runtime, collection: str, files: list[JobFile]) -> list[DocumentPublic]:
    """Ingest during the request: one ingest call per metadata (so the model encodes the
    upload's chunks in shared batches); the first failure is raised after the rest are in."""
    coll = rt.collection(collection)
    paths = [staging.stage(rt.settings, collection, f.name, f.content) for f in files]
    outcomes: dict[str, FileOutcome] = {}
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(json.dumps(f.metadata, sort_keys=True), []).append(i)
    for meta, members in groups.items():
        report = ingest_paths(rt, [paths[i] for i in members], collection=collection,
                              metadata=json.loads(meta))
        outcomes.update({o.source: o for o in report.outcomes})
    out = []
    for f, path in zip(files, paths, strict=True):
        outcome = outcomes[str(path.resolve())]
        if outcome.status == "failed":
            cls = error_class_for_code(outcome.code or "")
            raise cls(f"{f.name}: {_strip_path(outcome.error or 'ingest failed', path)}")
        with rt.db.connection() as conn, translated(f"reading document {f.name!r}"):
            doc = catalog.document_by_source(conn, coll.id, outcome.source)
        out.append(_public(rt, collection, doc, outcome.status))
    return out


def _strip_path(message: str, path: Path) -> str:
    """Ingest messages name the staged path; the client knows the document by its name."""
    return message.replace(f"{path.resolve()}: ", "").replace(str(path.resolve()), "")


def _accept(state: State, collection: str, files: list[JobFile]) -> JSONResponse:
    job = submit_ingest(state.runtime, state.queue, collection, files)
    return JSONResponse(jsonable_encoder(job_public(job)), status_code=status.HTTP_202_ACCEPTED,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DocumentPublic,
             summary="Add a document given as text", responses=_ADD_RESPONSES)
def add_document(name: CollectionName, body: DocumentCreate, state: State, caller: WriteAccess
                 ) -> DocumentPublic | JSONResponse:
    caller.require("write", name)
    rt = state.runtime
    staging.safe_name(body.name)
    rt.collection(name)
    file = JobFile(body.name, body.text.encode("utf-8"), body.metadata)
    if body.background or len(file.content) > rt.settings.background_ingest_bytes:
        return _accept(state, name, [file])
    return _ingest_now(rt, name, [file])[0]


@router.post("/upload", status_code=status.HTTP_201_CREATED, response_model=DocumentsPublic,
             summary="Upload files (multipart)", responses=_ADD_RESPONSES)
async def upload_documents(
    name: CollectionName, state: State, caller: WriteAccess,
    files: Annotated[list[UploadFile], File(description="One or more documents.")],
    metadata: Annotated[str, Form(description="JSON object added to every document.")] = "{}",
    background: Annotated[bool, Form()] = False,
) -> DocumentsPublic | JSONResponse:
    caller.require("write", name)
    rt = state.runtime
    try:
        meta = json.loads(metadata)
    except json.JSONDecodeError as exc:
        raise InputError(f"metadata is not valid JSON: {exc.msg}") from None
    if not isinstance(meta, dict):
        raise InputError("metadata must be a JSON object")
    check_value(meta, "metadata")
    if not files:
        raise InputError("no files in the upload; send them as multipart field 'files'")
    batch: list[JobFile] = []
    for upload in files:
        fname = upload.filename or ""
        staging.safe_name(fname)
        content = await upload.read()
        if len(content) > rt.settings.max_file_bytes:
            raise FileTooLargeError(
                f"{fname}: {len(content)} bytes is over the per-file limit of "
                f"{rt.settings.max_file_bytes} bytes (RAGSTORE_MAX_FILE_BYTES)")
        batch.append(JobFile(fname, content, meta))
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(rt.collection, name)
    total = sum(len(f.content) for f in batch)
    if background or total > rt.settings.background_ingest_bytes:
        return await run_in_threadpool(_accept, state, name, batch)
    docs = await run_in_threadpool(_ingest_now, rt, name, batch)
    return DocumentsPublic(data=docs, count=len(docs), next_cursor=None)


@router.get("", response_model=DocumentsPublic, summary="List documents, a page at a time")
def list_documents(
    name: CollectionName, rt: Rt, caller: ReadAccess,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    format: Annotated[str | None, Query(max_length=50, examples=["markdown"])] = None,
    source_prefix: Annotated[str | None, Query(max_length=1000)] = None,
    metadata: Annotated[str | None, Query(description="JSON object the metadata contains",
                                          examples=['{"team": "ops"}'])] = None,
) -> DocumentsPublic:
    caller.require("read", name)
    check_value({"format": format, "source_prefix": source_prefix, "metadata": metadata},
                "the query", InvalidFilterError)
    after = decode_cursor(cursor)
    meta: dict[str, Any] | None = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise InvalidFilterError(f"metadata filter is not valid JSON: {exc.msg}") from None
        if not isinstance(meta, dict):
            raise InvalidFilterError(
                'metadata filter must be a JSON object, e.g. {"team": "ops"}')
        check_value(meta, "the metadata filter", InvalidFilterError)
    coll = rt.collection(name)
    prefix = source_prefix
    if prefix is not None and not prefix.startswith("/"):
        prefix = str(staging.upload_root(rt.settings, name).resolve() / prefix)
    with rt.db.connection() as conn, translated(f"listing documents of {name!r}"):
        rows = catalog.documents_page(conn, coll.id, after=after, limit=limit, fmt=format,
                                      source_prefix=prefix, metadata=meta)
    data = [_public(rt, name, r) for r in rows]
    nxt = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return DocumentsPublic(data=data, count=len(data), next_cursor=nxt)


@router.get("/{document_id}", response_model=DocumentPublic, summary="Get a document")
def get_document(name: CollectionName, document_id: RowId, rt: Rt,
                 caller: ReadAccess) -> DocumentPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading document {document_id}"):
        return _public(rt, name, catalog.document(conn, coll.id, document_id))


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, summary="Delete a document with its chunks")
def delete_document(name: CollectionName, document_id: RowId, rt: Rt,
                    caller: WriteAccess) -> Response:
    caller.require("write", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"deleting document {document_id}"):
        source = catalog.delete_document(conn, coll.id, document_id)
    root = staging.upload_root(rt.settings, name).resolve()
    staged = Path(source)
    if staged.is_relative_to(root):
        staged.unlink(missing_ok=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
