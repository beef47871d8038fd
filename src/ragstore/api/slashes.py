"""A path that misses a route only by its trailing slash is redirected with a relative
``Location`` (``/v1/collections``), never one built from the request's ``Host``.

Starlette's own ``redirect_slashes`` answered ``/v1/collections/`` with ``Location:
http://<Host>/v1/collections``: the scheme and host the request claimed, not the ones
the client used. Behind a reverse proxy that does not pass ``Host`` on (or over TLS it
ends) the redirect pointed at the backend's own address or scheme, and a client that
named another host (a forged ``Host``, or ``*.localhost`` names that the loopback guard
lets through) was sent wherever that header said. A relative reference is resolved by
every client (curl ``-L``, browsers, httpx) against the URL it actually asked for
(RFC 9110 section 10.2.2), so the same redirects keep working wherever the server stands.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from ragstore.api.deps import route_path as routed_path


def _other_slash(routes: list[BaseRoute], scope: Scope) -> str | None:
    """The path (with the request's query) that a route takes where this one, with its
    trailing slash added or dropped, took none; None when no route takes either."""
    route_path = routed_path(scope)
    if route_path == "/":
        return None
    path: str = scope["path"]
    other = dict(scope)
    other["path"] = path.rstrip("/") if route_path.endswith("/") else path + "/"
    # "//host/x" and "/\host/x" are read by browsers as another host (scheme-relative):
    # never a Location of ours, whatever route might take such a path
    if not other["path"].startswith("/") or other["path"][1:2] in ("/", "\\"):
        return None
    for route in routes:
        match, _ = route.matches(other)
        if match is not Match.NONE:
            query = scope.get("query_string", b"").decode("latin-1")
            location: str = other["path"]
            return location + (f"?{query}" if query else "")
    return None


def install_relative_slash_redirects(app: FastAPI) -> None:
    """Replace Starlette's trailing-slash redirect (the app is made with
    ``redirect_slashes=False``) by one whose ``Location`` is a path: tried only where no
    route took the request, as Starlette's was, before the 404."""
    router = app.router
    router.redirect_slashes = False
    not_found = router.default

    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            location = _other_slash(list(router.routes), scope)
            if location is not None:
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = redirect_or_not_found
