"""What route functions receive, as ``Annotated`` aliases so their signatures read as prose.

``Rt`` is the process's Runtime; ``ReadAccess`` / ``WriteAccess`` / ``AdminAccess`` are the
caller, already authenticated, rate-limited and holding at least that scope (with auth off,
an anonymous caller with every right).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

import procrastinate
from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from ragstore.api.shed import before_work, if_shed
from ragstore.auth import SCOPES, ApiKey, KeyStore, RateLimiter
from ragstore.errors import InputError
from ragstore.http.bearer import bearer_token
from ragstore.runtime import Runtime
from ragstore.schemas import NAME_PATTERN


@dataclass
class ApiState:
    """Everything the app builds in its lifespan, kept on ``app.state.ragstore``."""

    runtime: Runtime
    keys: KeyStore | None  # None: auth is off
    limiter: RateLimiter
    queue: procrastinate.App


async def get_state(request: Request) -> ApiState:
    """The app's state. ``async``, as :func:`get_runtime`: FastAPI runs a plain ``def``
    dependency on a worker thread, so every request, /healthz and /readyz too, waited
    behind the busy threads for these two lookups (api/shed.py)."""
    state: ApiState = request.app.state.ragstore
    return state


State = Annotated[ApiState, Depends(get_state)]


async def get_runtime(state: State) -> Runtime:
    return state.runtime


Rt = Annotated[Runtime, Depends(get_runtime)]


CollectionName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        examples=["handbook"],
        description="Collection name",
    ),
]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@dataclass(frozen=True)
class Principal:
    """Who is asking: an API key, or nobody in particular when auth is off."""

    key: ApiKey | None

    def require(self, scope: str, collection: str | None = None) -> None:
        if self.key is not None:
            self.key.require(scope, collection)

    def require_scope(self, scope: str) -> None:
        if self.key is not None:
            self.key.require_scope(scope)

    def sees(self, collection: str) -> bool:
        return self.key is None or self.key.collection in (None, collection)


_bearer = HTTPBearer(auto_error=False, description="An API key from `ragstore keys create`.")


def authenticate(
    keys: KeyStore, limiter: RateLimiter, presented: str | None, client: str
) -> Principal:
    """The caller behind the bearer token ``presented``, its request counted against the
    key's rate limit. Runs once a request: in :class:`~ragstore.api.middleware.
    AuthBeforeBodyMiddleware` for every ``/v1`` request (before its body and its read
    routing), else in the routes' dependency.
    A request then shed before its work ran (api/shed.py) has the count given back."""
    key = keys.authenticate(presented, client)
    taken = limiter.hit(key.key_id)
    if taken is not None:
        if_shed(lambda: limiter.give_back(taken))
    return Principal(key)


async def _caller(
    state: State,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if state.keys is None:
        return Principal(None)
    early = getattr(request.state, "principal", None)
    if isinstance(early, Principal):
        return early  # authenticated before the body was read
    client = request.client.host if request.client else ""
    del credentials  # declared for the OpenAPI document; read as the middleware reads it
    token = bearer_token(request.scope.get("headers", ()))
    # the key check may hash and reads the database: off the event loop
    caller = await before_work(authenticate, state.keys, state.limiter, token, client)
    request.state.principal = caller  # errors.py words a 404 for what it may see
    return caller


# each scope dependency of :func:`_scoped` -> the scope it requires (read by
# :func:`route_scope`, so a request's scope can be checked before its body is read)
_SCOPE_OF: dict[Callable[..., Any], str] = {}


def _scoped(scope: str):  # type: ignore[no-untyped-def]
    async def dependency(caller: Annotated[Principal, Depends(_caller)]) -> Principal:
        caller.require_scope(scope)
        return caller

    dependency.__name__ = f"require_{scope}"
    _SCOPE_OF[dependency] = scope
    return dependency


def route_path(scope: Scope) -> str:
    """The path of an ASGI request as the app's routes see it: without the root path.

    Under a root path (uvicorn's ``--root-path``, serving behind a proxy under a prefix)
    the server puts the prefix in ``scope["path"]`` too (``/rag/v1/...``), as the ASGI
    spec says, and the router strips it before matching. A check on ``scope["path"]``
    itself (``startswith("/v1/")``) so missed every API request there: the API-key check
    made before a body is read was skipped, and a key without write scope had the server
    take in a whole upload before it was refused. Starlette's own rule (its
    ``get_route_path``), restated here rather than imported from a private module."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def route_scope(routes: Iterable[BaseRoute], scope: Scope) -> tuple[str | None, str | None]:
    """The scope the route of ``routes`` that ``scope`` (an ASGI request) reaches requires,
    and the collection its path names (``{name}``): ``(None, None)`` when no API route
    matches or it requires none.

    FastAPI reads and parses a request's body (an upload is spooled to disk) before the
    route's dependencies run, so a key without the scope was refused 403 only after the
    server had taken in its whole body; :class:`~ragstore.api.middleware.
    AuthBeforeBodyMiddleware` checks this first, from the headers."""
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        match, child = route.matches(scope)
        if match != Match.FULL:
            continue
        needed = _needed_scope(route)
        name = child.get("path_params", {}).get("name")
        return needed, name if isinstance(name, str) and needed is not None else None
    return None, None


def _needed_scope(route: APIRoute) -> str | None:
    """The widest scope the dependencies of ``route`` require (None: it requires none)."""
    needed: str | None = None
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        found = _SCOPE_OF.get(dependant.call) if dependant.call else None
        if found is not None and (needed is None or SCOPES.index(found) > SCOPES.index(needed)):
            needed = found
    return needed


ReadAccess = Annotated[Principal, Depends(_scoped("read"))]
WriteAccess = Annotated[Principal, Depends(_scoped("write"))]
AdminAccess = Annotated[Principal, Depends(_scoped("admin"))]


def _takes_many(field: Any) -> bool:
    """Whether a query parameter is declared as a list (``list[str] | None``), so that
    FastAPI reads each of its repeats."""
    pending = [field.field_info.annotation]
    while pending:
        annotation = pending.pop()
        origin = get_origin(annotation)
        if origin in (list, set, frozenset, tuple) or annotation in (list, set, tuple):
            return True
        pending.extend(get_args(annotation) if origin is not None else ())
    return False


async def refuse_unknown_query(state: State, request: Request) -> None:
    """InputError (422) for a query parameter the matched route does not take, or one it
    takes once given more than once.

    Every route read the parameters it declares and ignored any other, so a misspelt one
    (``GET /v1/collections?limt=5``, ``?colection=x`` on /v1/jobs) was answered as if not
    sent, a whole list instead of the page or the filter asked for; a JSON body's unknown
    field was refused all along (schemas.py ``Strict``). Installed on every /v1 router
    (app.py), so every route refuses them alike.

    The caller is checked first, as :class:`~ragstore.api.middleware.
    AuthBeforeBodyMiddleware` checks it before a body: a router's dependencies run before
    the route's own, so a request with no key, or a key without the route's scope or
    collection, was answered 422 naming the parameters the route takes, not 401 or 403.

    A parameter given twice (``?limit=1&limit=500``) was read as its last value and the
    first silently dropped, as a JSON key given twice was before it was refused
    (:class:`~ragstore.api.middleware.DuplicateKeyMiddleware`); one declared as a list
    (:func:`_takes_many`) may be repeated."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known: set[str] = set()
    once: set[str] = set()
    pending = [route.dependant]  # the route's own and its dependencies', as route_scope walks
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        known.update(field.alias for field in dependant.query_params)
        once.update(f.alias for f in dependant.query_params if not _takes_many(f))
    unknown = sorted({k for k in request.query_params if k not in known})
    repeated = sorted(k for k in once if len(request.query_params.getlist(k)) > 1)
    if unknown or repeated:
        needed = _needed_scope(route)
        if needed is not None:
            # kept on the request: the route's own dependency takes it, not a second check
            caller = await _caller(state, request, None)
            name = request.path_params.get("name")
            if isinstance(name, str):
                caller.require(needed, name)
            elif "collection" in known:
                # a collection named in the query string (``GET /v1/jobs?collection=B``)
                # is checked as one named in the path, as the route itself checks it (a
                # key limited to one collection names it): checked for the scope alone,
                # a key limited to A was answered 422 for B, not 403. The last value, as
                # the route reads a repeated parameter.
                caller.require(needed, request.query_params.get("collection"))
            else:
                caller.require_scope(needed)
        if not unknown:
            key = repeated[0]
            count = len(request.query_params.getlist(key))
            raise InputError(
                f"query parameter {key!r} is given {count} times for {request.method} "
                f"{route.path}; send it once (only one of its values would be used)"
            )
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise InputError(
            f"unknown query parameter {unknown[0][:100]!r} for {request.method} "
            f"{route.path}; {takes}"
        )
