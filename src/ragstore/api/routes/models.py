"""/v1/models and /v1/collections/{name}/model: pinned models and each collection's spaces."""

from __future__ import annotations

from fastapi import APIRouter

from ragstore.api.deps import AdminAccess, CollectionName, ReadAccess, Rt
from ragstore.api.errors_doc import responses
from ragstore.db import catalog
from ragstore.db.errors import translated
from ragstore.modelops.migrate import migrate as migrate_collection
from ragstore.modelops.migrate import rollback as rollback_collection
from ragstore.schemas import (
    MigrateRequest,
    MigrationPublic,
    ModelPublic,
    ModelsPublic,
    ModelStatusPublic,
    RollbackPublic,
    SpacePublic,
)

router = APIRouter(tags=["models"], responses=responses(404))


@router.get("/v1/models", response_model=ModelsPublic, summary="List pinned embedding models")
def list_models(rt: Rt, caller: ReadAccess) -> ModelsPublic:
    with rt.db.connection() as conn, translated("listing models"):
        rows = catalog.models(conn)
    data = []
    for r in rows:
        r["collections"] = [c for c in r["collections"] if caller.sees(c)]
        data.append(ModelPublic(**r))
    return ModelsPublic(data=data, count=len(data))


@router.get(
    "/v1/collections/{name}/model",
    response_model=ModelStatusPublic,
    summary="A collection's active model and its embedding spaces",
)
def model_status(name: CollectionName, rt: Rt, caller: ReadAccess) -> ModelStatusPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading the model of {name!r}"):
        spaces = [SpacePublic(**s) for s in catalog.spaces(conn, coll.id)]
    return ModelStatusPublic(collection=name, active_model=coll.model.key, spaces=spaces)


@router.post(
    "/v1/collections/{name}/model/migrate",
    response_model=MigrationPublic,
    summary="Re-embed a collection with another model, then switch",
    responses=responses(404, 409),
)
def migrate_model(
    name: CollectionName, body: MigrateRequest, rt: Rt, caller: AdminAccess
) -> MigrationPublic:
    """Runs the whole (resumable) backfill in the request; searches keep using the old
    model until the switch. Long migrations are better run with `ragstore models migrate`."""
    caller.require("admin", name)
    report = migrate_collection(
        rt,
        name,
        body.to,
        batch_size=body.batch_size,
        switch=body.switch,
        sample_queries=body.sample_queries,
    )
    return MigrationPublic(
        collection=report.collection,
        source=report.source,
        target=report.target,
        total=report.total,
        resumed_from=report.resumed_from,
        embedded=report.embedded,
        seconds=report.seconds,
        sample_queries=report.sample_queries,
        sample_self_recall=report.sample_self_recall,
        switched=report.switched,
        remaining=report.remaining,
        ingested=report.ingested,
        notes=list(report.notes),
    )


@router.post(
    "/v1/collections/{name}/model/rollback",
    response_model=RollbackPublic,
    summary="Switch back to the previous model at once",
    responses=responses(404, 409),
)
def rollback_model(name: CollectionName, rt: Rt, caller: AdminAccess) -> RollbackPublic:
    caller.require("admin", name)
    previous, active = rollback_collection(rt, name)
    return RollbackPublic(collection=name, previous=previous, active=active)
