"""JSON answers made on the worker thread that built them.

FastAPI serialises a route's ``response_model`` on the event loop, for ``def`` routes too
(only their validation runs on the thread pool): a search with ``k=1000, context=50``
(about 7.6 MB of JSON) held the loop for about a second, and every other request of the
process (``/healthz`` included) waited. Routes whose answers can be that large build
their JSON where their work runs, with :func:`json_answer`, and keep ``response_model``
for the OpenAPI schema; FastAPI passes a :class:`Response` through untouched.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response


def json_answer(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as FastAPI would have written it for ``response_model=type(model)``
    (by alias, ``None`` kept as ``null``), serialised here rather than on the event loop."""
    return Response(
        content=model.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
    )
