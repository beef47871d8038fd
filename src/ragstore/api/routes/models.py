"""/v1/models and /v1/collections/{name}/model: pinned models and each collection's spaces."""

from __future__ import annotations

from fastapi import APIRouter

from ragstore.api import catalog
from ragstore.api.deps import CollectionName, ReadAccess, Rt
from ragstore.api.errors_doc import responses
from ragstore.api.schemas import ModelPublic, ModelsPublic, ModelStatusPublic, SpacePublic
from ragstore.db.errors import translated

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


@router.get("/v1/collections/{name}/model", response_model=ModelStatusPublic,
            summary="A collection's active model and its embedding spaces")
def model_status(name: CollectionName, rt: Rt, caller: ReadAccess) -> ModelStatusPublic:
    caller.require("read", name)
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"reading the model of {name!r}"):
        spaces = [SpacePublic(**s) for s in catalog.spaces(conn, coll.id)]
    return ModelStatusPublic(collection=name, active_model=coll.model.key, spaces=spaces)
