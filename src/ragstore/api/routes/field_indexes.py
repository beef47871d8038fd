"""/v1/field-indexes: the metadata fields indexed for range filters, in every collection.

What ``ragstore db index-field`` and ``ragstore db index-fields`` do, for a deployment
administered over HTTP. An index covers every collection (both the documents' and the
chunks' values), so adding or dropping one needs an admin key that is not limited to one
collection. The build runs in the request: concurrent, so writers go on, but it waits for
every transaction older than it (a bulk ingest holds one to its end); a client that gives
up does not stop it, and asking again answers ``changed: false`` once it is built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from ragstore.api.deps import AdminAccess, ReadAccess, Rt
from ragstore.api.errors_doc import responses
from ragstore.db import field_indexes
from ragstore.schemas import (
    FieldIndexPublic,
    FieldIndexRequest,
    IndexedFieldPublic,
    IndexedFieldsPublic,
)

router = APIRouter(tags=["field indexes"], responses=responses())


@router.get(
    "/v1/field-indexes",
    response_model=IndexedFieldsPublic,
    summary="The metadata fields indexed for range filters",
)
def list_field_indexes(rt: Rt, caller: ReadAccess) -> IndexedFieldsPublic:
    caller.require_scope("read")
    found = field_indexes.listed(rt.db)
    data = [IndexedFieldPublic(field=i.field, type=i.kind) for i in found]
    return IndexedFieldsPublic(data=data, count=len(data))


@router.post(
    "/v1/field-indexes",
    response_model=FieldIndexPublic,
    status_code=201,
    summary="Index a metadata field for range filters ($gt, $gte, $lt, $lte)",
    responses={**responses(422), 200: {"description": "Already indexed: nothing changed."}},
)
def add_field_index(
    body: FieldIndexRequest, rt: Rt, caller: AdminAccess, response: Response
) -> FieldIndexPublic:
    """A selective range on an indexed field is then ranked exactly among the chunks that
    pass. 201 when the indexes were built, 200 when they already were."""
    caller.require("admin")
    changed = field_indexes.declare(
        rt.db, body.field, body.type, wait_s=field_indexes.REQUEST_WAIT_S
    )
    if not changed:
        response.status_code = 200
    return FieldIndexPublic(field=body.field, type=body.type, indexed=True, changed=changed)


@router.delete(
    "/v1/field-indexes",
    response_model=FieldIndexPublic,
    summary="Drop a metadata field's range-filter indexes",
)
def drop_field_index(
    field: Annotated[str, Query(min_length=1, max_length=256, examples=["year"])],
    type: Annotated[Literal["number", "string"], Query()],
    rt: Rt,
    caller: AdminAccess,
) -> FieldIndexPublic:
    """``changed: false`` when the field was not indexed for that type."""
    caller.require("admin")
    changed = field_indexes.declare(
        rt.db, field, type, drop=True, wait_s=field_indexes.REQUEST_WAIT_S
    )
    return FieldIndexPublic(field=field, type=type, indexed=False, changed=changed)
