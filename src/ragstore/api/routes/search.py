"""/v1/collections/{name}/search: query, k, mode, where-filter, context, explain.

The search service grows (modes, filters, explain, context); options are passed to it by
keyword, and an option this server's search does not take is refused as invalid input
rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ragstore import search as search_service
from ragstore.api.deps import CollectionName, ReadAccess, Rt
from ragstore.api.errors_doc import responses
from ragstore.api.schemas import HitPublic, SearchRequest, SearchResponse
from ragstore.errors import InputError
from ragstore.search.context import parse_context, with_context
from ragstore.search.plan import search_plan

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"],
                   responses=responses(400, 404, 409))

_OPTIONAL = ("mode", "where", "explain", "ef_search")


def _accepted() -> set[str]:
    return set(inspect.signature(search_service.search).parameters)


def _hit(hit: Any) -> HitPublic:
    if dataclasses.is_dataclass(hit) and not isinstance(hit, type):
        data = dataclasses.asdict(hit)
    else:
        data = dict(hit)
    known = set(HitPublic.model_fields)
    return HitPublic(**{k: v for k, v in data.items() if k in known})


@router.post("/search", response_model=SearchResponse, summary="Search a collection")
async def search(name: CollectionName, body: SearchRequest, rt: Rt,
                 caller: ReadAccess) -> SearchResponse:
    caller.require("read", name)
    accepted = _accepted()
    options: dict[str, Any] = {}
    for option in _OPTIONAL:
        value = getattr(body, option)
        if value is None or (option == "explain" and value is False):
            continue
        if option not in accepted:
            raise InputError(f"this server's search does not support {option!r} yet")
        options[option] = value
    t0 = time.perf_counter()
    hits: list[Any] = await run_in_threadpool(search_service.search, rt, body.query,
                                              collection=name, k=body.k, **options)
    if body.context is not None:
        mode = parse_context(str(body.context))
        hits = list(await run_in_threadpool(with_context, rt, hits, mode))
    took = (time.perf_counter() - t0) * 1000
    data = [_hit(h) for h in hits]
    plan = None
    if body.explain:
        plan = await run_in_threadpool(
            lambda: search_plan(rt, body.query, name, k=body.k, where=body.where,
                                ef_search=body.ef_search, **({"mode": body.mode}
                                                            if body.mode else {})))
    return SearchResponse(collection=name, query=body.query, data=data, count=len(data),
                          took_ms=round(took, 3), plan=plan)
