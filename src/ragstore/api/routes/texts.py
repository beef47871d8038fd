"""/v1/collections/{name}/texts: add texts by id in batches, read and delete them by id.

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
from ragstore.api.schemas import (
    TextIds,
    TextPublic,
    TextsAdded,
    TextsCreate,
    TextsDeleted,
    TextsPublic,
)
from ragstore.store import Store

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
