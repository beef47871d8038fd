"""The console's pages: one route per page, each rendering a data-free template.

Everything a page shows comes from the JSON API, fetched by ``static/console.js`` with the
tab's key; the server only fills in what it knows without a key: the page, the names in
the URL, whether authentication is on, and the built-in model names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ragstore import __version__
from ragstore.console.security import CONSOLE_PREFIX
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL
from ragstore.formats import supported_suffixes
from ragstore.schemas import NAME_PATTERN

HERE = Path(__file__).resolve().parent
BUILTIN_MODELS = (DEFAULT_MODEL, TRUNCATED_MODEL)

Name = Annotated[str, PathParam(pattern=NAME_PATTERN)]
DocId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its suffix
        undefined=jinja2.StrictUndefined,
    )
    return Jinja2Templates(env=env)


def root_path(request: Request) -> str:
    """The prefix the server is served under (uvicorn's ``--root-path``, behind a proxy
    that serves it at ``/rag``), without a trailing slash; ``""`` when none.

    Every link, redirect and API call of the console starts with it: they were written
    from the host's root (``/ui/...``, ``/v1/...``), so behind such a proxy the pages
    failed, a sign-in left the prefix, and the tab's key was sent as a bearer header to
    whatever answered ``/v1/me`` at the host's root. Only a path is taken (one slash, then
    no second): a value such as ``//host`` would make every call go to another host."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    if root and (not root.startswith("/") or root.startswith("//") or "\\" in root):
        return ""
    return root


def build_router(auth: bool) -> APIRouter:
    """The page routes; ``auth`` is whether the API needs a key (said on every page)."""
    templates = _templates()
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)

    def page(
        request: Request, template: str, name: str, title: str, **context: Any
    ) -> HTMLResponse:
        values: dict[str, Any] = {
            "page": name,
            "root": root_path(request),
            "title": title,
            "auth": auth,
            "version": __version__,
            "collection": "",
            "document_id": "",
            "builtin_models": BUILTIN_MODELS,
        }
        values.update(context)
        return templates.TemplateResponse(request, template, values)

    @router.get("", response_class=RedirectResponse)
    @router.get("/", response_class=RedirectResponse)
    def home(request: Request) -> Response:
        return RedirectResponse(
            f"{root_path(request)}{CONSOLE_PREFIX}/collections", status_code=303
        )

    @router.get("/login", response_class=HTMLResponse)
    def login(request: Request) -> HTMLResponse:
        return page(request, "login.html", "login", "Sign in")

    @router.get("/collections", response_class=HTMLResponse)
    def collections(request: Request) -> HTMLResponse:
        return page(request, "collections.html", "collections", "Collections")

    @router.get("/collections/{name}", response_class=HTMLResponse)
    def collection(request: Request, name: Name) -> HTMLResponse:
        suffixes = " ".join(sorted(supported_suffixes()))  # what a dropped folder's walk takes
        return page(
            request, "collection.html", "collection", name, collection=name, suffixes=suffixes
        )

    @router.get("/collections/{name}/documents/{document_id}", response_class=HTMLResponse)
    def document(request: Request, name: Name, document_id: DocId) -> HTMLResponse:
        return page(
            request,
            "document.html",
            "document",
            f"{name}: document {document_id}",
            collection=name,
            document_id=document_id,
        )

    @router.get("/collections/{name}/search", response_class=HTMLResponse)
    def search(request: Request, name: Name) -> HTMLResponse:
        return page(request, "search.html", "search", f"{name}: search", collection=name)

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        return page(request, "models.html", "models", "Models")

    return router


def install_console(app: FastAPI, *, auth: bool) -> None:
    """Mount the pages and the static files under ``/ui`` (the security headers are
    middleware: :class:`~ragstore.console.security.SecurityHeadersMiddleware`)."""
    app.include_router(build_router(auth))
    app.mount(
        f"{CONSOLE_PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static"
    )
