"""The API reference at ``/docs``: the OpenAPI document rendered on the server, no script.

FastAPI's own ``/docs`` (Swagger UI) and ``/redoc`` pages load their script, styles and
fonts from public CDNs (cdn.jsdelivr.net, fonts.googleapis.com) when a browser opens them:
behind a firewall they were blank pages, and whoever served those files could run script
on the API's origin, where the console keeps its key. They are turned off in
:func:`ragstore.api.app.create_app`; this page takes ``/docs``' place. It is one
autoescaped Jinja template filled from ``app.openapi()`` (every operation with its
parameters, body and answers, then every schema), styled by the console's own stylesheet,
and served under the same strict Content-Security-Policy as the console
(:mod:`ragstore.console.security`). ``/openapi.json`` stays for tools and viewers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ragstore import __version__
from ragstore.console.routes import _templates, root_path
from ragstore.console.security import DOCS_PATH

METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


@dataclass(frozen=True)
class Row:
    """One line of a table: a name, where or what it is, whether required, its text."""

    name: str
    kind: str
    required: bool
    description: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    description: str
    parameters: list[Row] = field(default_factory=list)
    body: list[Row] = field(default_factory=list)  # name: media type; kind: its schema
    responses: list[Row] = field(default_factory=list)  # name: status; kind: its schema


@dataclass(frozen=True)
class Schema:
    name: str
    description: str
    properties: list[Row]


def type_text(schema: dict[str, Any]) -> str:
    """A short human rendering of a JSON schema: ``Name``, ``array of X``, ``A | null``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(type_text(s) for s in schema[key])
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array":
        return f"array of {type_text(schema.get('items', {}))}"
    return str(kind)


def _described(schema: dict[str, Any]) -> str:
    return str(schema.get("description", "") or schema.get("title", ""))


def operations(spec: dict[str, Any]) -> list[tuple[str, list[Operation]]]:
    """The spec's operations grouped by their first tag, in the spec's order."""
    groups: dict[str, list[Operation]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [
                Row(
                    p["name"],
                    f"{p.get('in', '')}: {type_text(p.get('schema', {}))}",
                    bool(p.get("required")),
                    str(p.get("description", "")),
                )
                for p in op.get("parameters", [])
            ]
            request = op.get("requestBody", {})
            body = [
                Row(media, type_text(c.get("schema", {})), bool(request.get("required")), "")
                for media, c in request.get("content", {}).items()
            ]
            answers = [
                Row(
                    status,
                    ", ".join(
                        f"{media}: {type_text(c.get('schema', {}))}"
                        for media, c in r.get("content", {}).items()
                    ),
                    False,
                    str(r.get("description", "")),
                )
                for status, r in op.get("responses", {}).items()
            ]
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(str(tag), []).append(
                Operation(
                    method.upper(),
                    path,
                    str(op.get("summary", "")),
                    str(op.get("description", "")),
                    params,
                    body,
                    answers,
                )
            )
    return list(groups.items())


def schemas(spec: dict[str, Any]) -> list[Schema]:
    found = spec.get("components", {}).get("schemas", {})
    out = []
    for name, schema in found.items():
        required = set(schema.get("required", []))
        rows = [
            Row(prop, type_text(s), prop in required, _described(s))
            for prop, s in schema.get("properties", {}).items()
        ]
        out.append(Schema(name, str(schema.get("description", "")), rows))
    return out


def install_api_docs(app: FastAPI) -> None:
    """Serve :data:`DOCS_PATH` (create the app with ``docs_url=None, redoc_url=None``)."""
    templates = _templates()

    @app.get(DOCS_PATH, include_in_schema=False, response_class=HTMLResponse)
    def api_docs(request: Request) -> HTMLResponse:
        spec = app.openapi()
        info = spec.get("info", {})
        return templates.TemplateResponse(
            request,
            "apidocs.html",
            {
                "info": info,
                "root": root_path(request),
                "version": __version__,
                "groups": operations(spec),
                "schemas": schemas(spec),
            },
        )
