"""Every API route asked, with a key limited to collection ``alpha`` or of a low scope,
for what belongs to collection ``beta`` or needs more: refused, or answered as if ``beta``
held nothing there, and never with ``beta``'s name, contents or size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from ragstore import Client
from ragstore.auth import KeyStore
from ragstore.config import Settings
from tests.api.conftest import running_server, with_


@pytest.fixture(scope="module")
def world(settings: Settings, keys: KeyStore) -> Iterator[dict[str, Any]]:
    with (
        running_server(with_(settings, auth="on")) as url,
        Client(url, api_key=keys.create("admin").secret) as admin,
    ):
        a = admin.add_document("alpha", "a.md", "# Alpha\n\nalpha notes about rollback")
        b = admin.add_document("beta", "secret.md", "# Beta\n\nbeta payroll figures")
        admin.add_texts("beta", ["beta text"], ids=["beta-1"])
        job = admin.add_document("beta", "bg.md", "# Bg\n\nqueued", background=True)
        yield {"url": url, "a": a["id"], "b": b["id"], "job": job["id"]}


def _key(keys: KeyStore, scope: str, collection: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.create(scope, collection).secret}"}


def test_a_collection_key_reads_nothing_of_another_collection(
    world: dict[str, Any], keys: KeyStore
) -> None:
    url, b_doc = world["url"], world["b"]
    alpha = _key(keys, "admin", "alpha")
    with httpx.Client(base_url=url, headers=alpha, timeout=60) as http:
        # beta by name: 403 on every route whose path names a collection
        for method, path, body in (
            ("GET", "/v1/collections/beta", None),
            ("GET", "/v1/collections/beta/fields", None),
            ("GET", "/v1/collections/beta/stats", None),
            ("GET", "/v1/collections/beta/model", None),
            ("GET", "/v1/collections/beta/documents", None),
            ("GET", f"/v1/collections/beta/documents/{b_doc}", None),
            ("GET", f"/v1/collections/beta/documents/{b_doc}/chunks", None),
            ("DELETE", f"/v1/collections/beta/documents/{b_doc}", None),
            ("POST", "/v1/collections/beta/search", {"query": "payroll"}),
            ("POST", "/v1/collections/beta/texts/get", {"ids": ["beta-1"]}),
            ("POST", "/v1/collections/beta/texts/query", {}),
            ("POST", "/v1/collections/beta/texts/delete", {"ids": ["beta-1"]}),
            ("POST", "/v1/collections/beta/texts/delete-where", {}),
            ("POST", "/v1/collections/beta/texts", {"texts": ["x"]}),
            ("POST", "/v1/collections/beta/documents", {"name": "x.md", "text": "x"}),
            ("POST", "/v1/collections/beta/model/rollback", None),
            ("POST", "/v1/collections/beta/model/migrate", {"to": "x"}),
            ("DELETE", "/v1/collections/beta", None),
            ("POST", "/v1/collections", {"name": "beta"}),
            ("GET", "/v1/jobs?collection=beta", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/field-indexes", {"field": "year", "type": "number"}),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
        # beta's ids through alpha's URL: missing, never beta's name or contents
        for method, path, body in (
            ("GET", f"/v1/collections/alpha/documents/{b_doc}", None),
            ("GET", f"/v1/collections/alpha/documents/{b_doc}/chunks", None),
            ("DELETE", f"/v1/collections/alpha/documents/{b_doc}", None),
            ("GET", f"/v1/jobs/{world['job']}", None),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert "beta" not in r.text and "secret" not in r.text, r.text
        for method, path, body in (
            ("POST", "/v1/collections/alpha/texts/get", {"ids": ["beta-1"]}),
            ("POST", "/v1/collections/alpha/texts/query", {"ids": ["beta-1"]}),
            ("POST", "/v1/collections/alpha/texts/delete", {"ids": ["beta-1"]}),
            ("POST", "/v1/collections/alpha/search", {"query": "notes figures", "context": 3}),
            ("GET", "/v1/collections/alpha/documents?cursor=aWQ6MA", None),  # id:0
            ("GET", "/v1/collections", None),
            ("GET", "/v1/models", None),
            ("GET", "/v1/jobs?collection=alpha", None),
        ):
            r = http.request(method, path, json=body)
            assert r.status_code == 200, (method, path, r.text)
            assert "beta" not in r.text and "payroll" not in r.text, (path, r.text)
        assert (
            http.post("/v1/collections/alpha/texts/get", json={"ids": ["beta-1"]}).json()["count"]
            == 0
        )

    with Client(url, api_key=keys.create("admin").secret) as admin:
        assert admin.get_document("beta", b_doc)["id"] == b_doc  # nothing of beta went


def test_a_collection_keys_statistics_tell_nothing_of_the_others(
    world: dict[str, Any], keys: KeyStore
) -> None:
    """``GET .../stats`` answered the sizes of the documents and chunks tables, which every
    collection shares: a key limited to one collection read the other collections' total
    size there, and watched it grow with each of their ingests. Such a key is shown no
    shared table now; a key of every collection still is."""
    url = world["url"]
    scoped = httpx.get(f"{url}/v1/collections/alpha/stats", headers=_key(keys, "read", "alpha"))
    assert scoped.status_code == 200, scoped.text
    assert scoped.json()["shared_tables"] == [] and scoped.json()["documents"] == 1
    whole = httpx.get(f"{url}/v1/collections/alpha/stats", headers=_key(keys, "read"))
    assert {t["table"] for t in whole.json()["shared_tables"]} == {"documents", "chunks"}


def test_low_scope_keys_do_only_what_their_scope_allows(
    world: dict[str, Any], keys: KeyStore, settings: Settings
) -> None:
    """Every /v1 route and method, asked by a key of each scope below the one the route
    needs (a metrics key: every route): 403 naming the key's scope, and nothing done."""
    from ragstore.api import create_app
    from ragstore.api.deps import route_scope
    from ragstore.auth import SCOPES

    url, a_doc = world["url"], world["a"]
    app = create_app(with_(settings, auth="on"))
    routes = [r for r in app.state.api_routes if r.path.startswith("/v1")]
    headers = {s: _key(keys, s, None if s == "metrics" else "alpha") for s in SCOPES[:-1]}
    tried = 0
    for route in routes:
        assert isinstance(route, APIRoute)
        path = route.path.replace("{name}", "alpha").replace("{document_id}", str(a_doc))
        path = path.replace("{job_id}", str(world["job"]))
        for method in sorted(route.methods - {"HEAD"}):
            asgi = {"type": "http", "method": method, "path": path, "root_path": ""}
            needed, _ = route_scope(routes, asgi)
            assert needed is not None, (method, route.path)
            kw: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            for scope in SCOPES[: SCOPES.index(needed)]:
                r = httpx.request(method, f"{url}{path}", headers=headers[scope], **kw)
                assert r.status_code == 403, (scope, method, path, r.text)
                assert f"has scope {scope!r}" in r.json()["detail"], (scope, method, path)
                tried += 1
    assert tried >= 40  # the sweep reached the routes (45 refusals when written)
    with Client(url, api_key=keys.create("admin").secret) as admin:
        assert admin.get_document("alpha", a_doc)["id"] == a_doc
        assert admin.get_collection("alpha")["documents"] == 1
