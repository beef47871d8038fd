"""/v1/collections: create with a model and settings, list, get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from ragstore.api.deps import AdminAccess, CollectionName, ReadAccess, Rt, WriteAccess
from ragstore.api.errors_doc import responses
from ragstore.db import catalog, repository
from ragstore.db.errors import translated
from ragstore.errors import CollectionNotFoundError
from ragstore.paging import decode_name_cursor, encode_name_cursor, split_page
from ragstore.schemas import (
    CollectionCreate,
    CollectionPublic,
    CollectionsPublic,
    FieldsPublic,
)
from ragstore.store import Store

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=responses())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionPublic,
    summary="Create a collection bound to an embedding model",
    responses=responses(409, 404),
)
def create_collection(body: CollectionCreate, rt: Rt, caller: WriteAccess) -> CollectionPublic:
    caller.require("write", body.name)
    return CollectionPublic(
        **Store.from_runtime(rt).create_collection(
            body.name,
            model=body.model,
            settings=body.settings,
            dimension=body.dimension,
            distance=body.distance,
        )
    )


MAX_PAGE = 1000


@router.get("", response_model=CollectionsPublic, summary="List collections, a page at a time")
def list_collections(
    rt: Rt,
    caller: ReadAccess,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> CollectionsPublic:
    """In name order, ``limit`` at a time (keyset on name, like the other lists' ids): the
    whole list in one answer grew with every collection. ``next_cursor`` is null on the
    last page, so a client that ignores it still gets every collection of a short list."""
    after = decode_name_cursor(cursor)
    only = caller.key.collection if caller.key is not None else None
    data: list[CollectionPublic] = []
    more = True
    with rt.db.connection() as conn, translated("listing collections"):
        # a collection deleted between its name being read and its details is no longer
        # listed, and the names after it are read in its place: a page whose every
        # collection went so came back empty with a cursor, and a client that stops at
        # an empty page missed the collections after it
        while more and len(data) < limit:
            want = limit - len(data)
            names, more = split_page(
                catalog.collection_names(conn, after=after, limit=want + 1, only=only), want
            )
            for name in names:
                try:
                    coll = repository.get_collection(conn, name)
                    data.append(CollectionPublic(**catalog.collection_detail(conn, coll)))
                except CollectionNotFoundError:
                    continue  # deleted since the names were read: no longer listed
            if names:
                after = names[-1]
    nxt = encode_name_cursor(after) if more and after is not None else None
    return CollectionsPublic(data=data, count=len(data), next_cursor=nxt)


@router.get(
    "/{name}", response_model=CollectionPublic, summary="Get a collection", responses=responses(404)
)
def get_collection(name: CollectionName, rt: Rt, caller: ReadAccess) -> CollectionPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading collection {name!r}"):
        return CollectionPublic(**catalog.collection_detail(conn, coll))


@router.get(
    "/{name}/fields",
    response_model=FieldsPublic,
    summary="The fields a search filter can name: built-ins and sampled metadata paths",
    responses=responses(404),
)
def collection_fields(name: CollectionName, rt: Rt, caller: ReadAccess) -> FieldsPublic:
    from ragstore.search.fields import describe_fields

    caller.require("read", name)
    return FieldsPublic(**describe_fields(rt, rt.collection(name)))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a collection with its documents and embeddings",
    responses=responses(404),
)
def delete_collection(name: CollectionName, rt: Rt, caller: AdminAccess) -> Response:
    caller.require("admin", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"deleting collection {name!r}"):
        catalog.delete_collection(conn, coll)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
