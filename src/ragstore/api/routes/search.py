"""/v1/collections/{name}/search: query or vector, k, mode, where-filter, context, explain
(with the search plan), the fusion knobs (rrf_k, vector_weight, fulltext_weight) and
maximal marginal relevance (mmr, fetch_k, lambda_mult).

The route runs the same function as ``Store.search``
(:func:`ragstore.store.search_response`), so the HTTP API and the in-process API cannot
drift apart.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ragstore.api.answers import json_answer
from ragstore.api.deps import CollectionName, ReadAccess, Rt
from ragstore.api.disconnect import unless_disconnected
from ragstore.api.errors_doc import responses
from ragstore.schemas import SearchRequest, SearchResponse
from ragstore.store import search_response

router = APIRouter(
    prefix="/v1/collections/{name}", tags=["search"], responses=responses(400, 404, 409, 504)
)


@router.post("/search", response_model=SearchResponse, summary="Search a collection")
async def search(
    name: CollectionName, body: SearchRequest, rt: Rt, caller: ReadAccess, request: Request
) -> Response:
    caller.require("read", name)
    # a search whose client goes away is cancelled in PostgreSQL (api/disconnect.py); its
    # JSON is written on the worker thread too, not on the event loop (api/answers.py)
    return await unless_disconnected(
        request,
        lambda: json_answer(
            search_response(
                rt,
                name,
                body.query,
                vector=body.vector,
                k=body.k,
                mode=body.mode,
                where=body.where,
                context=body.context,
                explain=body.explain,
                ef_search=body.ef_search,
                rrf_k=body.rrf_k,
                vector_weight=body.vector_weight,
                fulltext_weight=body.fulltext_weight,
                sections=body.sections,
                mmr=body.mmr,
                fetch_k=body.fetch_k,
                lambda_mult=body.lambda_mult,
            )
        ),
    )
