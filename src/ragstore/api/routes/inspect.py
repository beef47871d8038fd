"""Read-only views for people looking inside a deployment (the ``/ui`` console uses them):
who am I, a collection's sizes and spaces, a document's chunks in order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ragstore.api.answers import json_answer
from ragstore.api.deps import CollectionName, ReadAccess, RowId, Rt
from ragstore.api.errors_doc import responses
from ragstore.db import inspection
from ragstore.db.errors import translated
from ragstore.paging import split_page
from ragstore.schemas import (
    ChunkPublic,
    ChunksPublic,
    CollectionStatsPublic,
    MePublic,
    SpaceStats,
    TableSize,
)

router = APIRouter(tags=["inspect"], responses=responses())


@router.get("/v1/me", response_model=MePublic, summary="The caller's key: scope and collection")
def me(caller: ReadAccess) -> MePublic:
    """What the presented key may do, so a client can show only what it can use."""
    key = caller.key
    if key is None:
        return MePublic(auth=False, key_id=None, name=None, scope="admin", collection=None)
    return MePublic(
        auth=True,
        key_id=key.key_id,
        name=key.name or None,
        scope=key.scope,  # type: ignore[arg-type]
        collection=key.collection,
    )


@router.get(
    "/v1/collections/{name}/stats",
    response_model=CollectionStatsPublic,
    summary="Counts, table and index sizes, spaces with progress, last ingest",
    responses=responses(404),
)
def collection_stats(name: CollectionName, rt: Rt, caller: ReadAccess) -> CollectionStatsPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading statistics of {name!r}"):
        stats = inspection.collection_stats(conn, coll.id)
        spaces = inspection.space_stats(conn, coll.id)
    # not every chunk is embedded (headings are not): progress is measured against the
    # active space, which is what a migration copies
    total = next((s["embedded"] for s in spaces if s["active"]), 0)
    # the documents and chunks tables hold every collection: their sizes told a key
    # limited to this one how much the others hold, and each of their ingests
    whole = caller.key is None or caller.key.collection is None
    shared = stats["shared_tables"] if whole else []
    return CollectionStatsPublic(
        collection=name,
        model=coll.model.key,
        dimension=coll.model.dimension,
        distance=coll.model.distance,
        documents=stats["documents"],
        chunks=stats["chunks"],
        created_at=stats["created_at"],
        last_ingest=stats["last_ingest"],
        spaces=[
            SpaceStats(progress=min(1.0, s["embedded"] / total) if total else 1.0, **s)
            for s in spaces
        ],
        shared_tables=[TableSize(**t) for t in shared],
    )


@router.get(
    "/v1/collections/{name}/documents/{document_id}/chunks",
    response_model=ChunksPublic,
    summary="A document's chunks in reading order",
    responses=responses(404),
)
def document_chunks(
    name: CollectionName,
    document_id: RowId,
    rt: Rt,
    caller: ReadAccess,
    after: Annotated[
        int | None, Query(ge=-1, le=2**31 - 1, description="next_after of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=inspection.MAX_CHUNKS_PAGE)] = 1000,
) -> Response:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading the chunks of document {document_id}"):
        rows, more = split_page(
            inspection.document_chunks(conn, coll, document_id, after=after, limit=limit + 1),
            limit,
        )
    data = [ChunkPublic(**r) for r in rows]
    # up to 5000 chunks: their JSON is written here, on the worker thread (api/answers.py)
    return json_answer(
        ChunksPublic(
            collection=name,
            document_id=document_id,
            data=data,
            count=len(data),
            next_after=data[-1].ordinal if more else None,
        )
    )
