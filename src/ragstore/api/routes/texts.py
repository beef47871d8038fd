"""/v1/collections/{name}/texts: add texts by id in batches, read and delete them by id,
list and delete those a ``where`` filter keeps.

The vector-store verbs (Chroma's add/get/delete, LangChain's add_texts/get_by_ids/delete)
over HTTP; ``Store`` offers the same under the same names. Adding creates the collection
with the server's default model when it is missing, as ``ragstore ingest`` does.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from ragstore.api.answers import json_answer
from ragstore.api.deps import CollectionName, ReadAccess, Rt, WriteAccess
from ragstore.api.errors_doc import responses
from ragstore.schemas import (
    TextIds,
    TextIdsPage,
    TextPublic,
    TextsAdded,
    TextsCreate,
    TextsDeleted,
    TextsPublic,
    TextsQuery,
    TextsWhereDelete,
    TextsWhereDeleted,
)
from ragstore.store import Store, text_ids_page

router = APIRouter(prefix="/v1/collections/{name}/texts", tags=["texts"], responses=responses(404))


def _store(rt: Rt) -> Store:
    return Store.from_runtime(rt)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TextsAdded,
    summary="Add or update texts by id",
    responses=responses(404, 413),
)
async def add_texts(
    name: CollectionName, body: TextsCreate, rt: Rt, caller: WriteAccess
) -> TextsAdded:
    caller.require("write", name)
    out = await run_in_threadpool(
        lambda: _store(rt).add_texts(
            name, body.texts, body.metadatas, body.ids, vectors=body.vectors
        )
    )
    return TextsAdded(**out)


@router.post("/get", response_model=TextsPublic, summary="Read texts by id")
def get_texts(name: CollectionName, body: TextIds, rt: Rt, caller: ReadAccess) -> Response:
    caller.require("read", name)
    data = [TextPublic(**t) for t in _store(rt).get_texts(name, body.ids)]
    # up to 10,000 texts: their JSON is written here, on the worker thread (api/answers.py)
    return json_answer(TextsPublic(data=data, count=len(data)))


@router.post("/delete", response_model=TextsDeleted, summary="Delete texts by id")
def delete_texts(name: CollectionName, body: TextIds, rt: Rt, caller: WriteAccess) -> TextsDeleted:
    caller.require("write", name)
    return TextsDeleted(deleted=_store(rt).delete_texts(name, body.ids))


@router.post(
    "/query",
    response_model=TextIdsPage,
    summary="List the ids of the texts a filter keeps, a page at a time",
    responses=responses(400, 404, 409),
)
def query_texts(name: CollectionName, body: TextsQuery, rt: Rt, caller: ReadAccess) -> Response:
    """``Store.text_ids``: in id order, ``limit`` at a time (keyset on the id, as the other
    lists page); ``next_cursor`` is null on the last page, and refused (409
    ``cursor_stale``) for another collection of the name."""
    caller.require("read", name)
    ids, nxt = text_ids_page(
        rt, name, where=body.where, ids=body.ids, cursor=body.cursor, limit=body.limit
    )
    return json_answer(TextIdsPage(data=ids, count=len(ids), next_cursor=nxt))


@router.post(
    "/delete-where",
    response_model=TextsWhereDeleted,
    summary="Delete the texts a filter keeps, in one transaction",
    responses=responses(400, 404, 409),
)
def delete_texts_where(
    name: CollectionName, body: TextsWhereDelete, rt: Rt, caller: WriteAccess
) -> Response:
    """``Store.delete_texts_where``: the texts ``where`` keeps, among ``ids`` when given
    (neither: every text; the collection stays), all or none. Answered with the ids
    deleted, so a caller knows exactly what went."""
    caller.require("write", name)
    gone = _store(rt).delete_texts_where(name, where=body.where, ids=body.ids)
    return json_answer(TextsWhereDeleted(deleted=len(gone), ids=gone))
