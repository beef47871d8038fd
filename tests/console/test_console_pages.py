"""The /ui console without a browser: security headers, escaping, what each page says about
authentication, and the read-only JSON API the console is built on (/v1/me, collection
stats, a document's chunks, the search plan). Real servers on loopback, real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ragstore.api import create_app
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.console.routes import root_path
from ragstore.console.security import CONTENT_SECURITY_POLICY
from tests.api.conftest import running_server, with_

PAGES = (
    "/ui/login",
    "/ui/collections",
    "/ui/collections/notes",
    "/ui/collections/notes/search",
    "/ui/collections/notes/documents/1",
    "/ui/models",
)
STATIC = Path(__file__).resolve().parents[2] / "src" / "ragstore" / "console" / "static"
EVIL = (
    "# Evil\n\nHello <script>window.__pwned=1</script> and "
    '<img src=x onerror="window.__pwned=2">.\n\n'
    "## Rollback\n\nRun the downgrade to roll back.\n"
)


@pytest.fixture(scope="module")
def open_url(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="off")) as url:
        yield url


@pytest.fixture(scope="module")
def secure_url(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="on")) as url:
        yield url


@pytest.fixture(scope="module")
def notes(open_url: str) -> dict[str, int]:
    """Collection ``notes`` with one markdown document holding HTML; its id by name."""
    assert httpx.post(f"{open_url}/v1/collections", json={"name": "notes"}).status_code == 201
    r = httpx.post(
        f"{open_url}/v1/collections/notes/documents/upload",
        files=[("files", ("evil.md", EVIL.encode()))],
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return {"evil.md": r.json()["data"][0]["id"]}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(
    open_url: str, path: str
) -> None:
    r = httpx.get(open_url + path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    # Trusted Types: an HTML sink refuses strings (the browser test sees it throw)
    assert "require-trusted-types-for 'script'" in CONTENT_SECURITY_POLICY
    assert "trusted-types 'none'" in CONTENT_SECURITY_POLICY
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in r.headers
    html = r.text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all(" src=" in s for s in scripts)
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # no inline script body
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers


@pytest.mark.parametrize("path", PAGES)
def test_with_auth_off_every_page_says_so(open_url: str, path: str) -> None:
    html = httpx.get(open_url + path).text
    assert 'id="auth-off"' in html and "Authentication is off" in html
    assert 'data-auth="off"' in html


@pytest.mark.parametrize("path", PAGES)
def test_with_auth_on_no_page_says_it_is_off_and_pages_hold_no_data(
    secure_url: str, notes: dict[str, int], path: str
) -> None:
    r = httpx.get(secure_url + path)  # no key: the shell only, every fact comes by the API
    assert r.status_code == 200
    assert 'id="auth-off"' not in r.text and 'data-auth="on"' in r.text
    assert "evil.md" not in r.text and "Evil" not in r.text and "emb_" not in r.text


def test_static_files_carry_the_policy_too(open_url: str) -> None:
    r = httpx.get(f"{open_url}/ui/static/console.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"


HTML_PAGES = (*PAGES, "/docs")
# every URL an HTML page can make a browser load or follow
URL_ATTRIBUTE = re.compile(r"""\s(?:src|href|action|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)""")


def _same_origin(url: str) -> bool:
    """A path on the page's own origin (not ``//host``, ``http:``, ``data:``, ...)."""
    return (url.startswith("/") and not url.startswith("//")) or url.startswith("#")


@pytest.mark.parametrize("path", HTML_PAGES)
def test_no_html_page_loads_anything_from_another_origin(
    open_url: str, secure_url: str, path: str
) -> None:
    for base in (open_url, secure_url):
        r = httpx.get(base + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        urls = URL_ATTRIBUTE.findall(r.text)
        assert urls and all(_same_origin(u) for u in urls), [u for u in urls if not _same_origin(u)]
        # nothing that fetches by other means either: no inline script or style, and no
        # absolute resource URL anywhere in the markup
        assert re.search(r"<script\b(?![^>]*\ssrc=\"/)", r.text) is None
        assert "<style" not in r.text and "@import" not in r.text
        assert re.search(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", r.text) is None


@pytest.mark.parametrize("path", HTML_PAGES)
def test_every_html_page_forbids_framing_and_sniffing(open_url: str, path: str) -> None:
    r = httpx.get(open_url + path)
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_the_stylesheet_and_script_load_nothing_from_another_origin() -> None:
    for name in ("console.css", "console.js"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "@import" not in text, name
        assert re.search(r"url\(\s*[\"']?(?!/|#)", text) is None, name


def test_the_api_reference_documents_every_operation_and_schema(
    open_url: str, secure_url: str
) -> None:
    spec = httpx.get(f"{open_url}/openapi.json").json()
    html = httpx.get(f"{secure_url}/docs").text  # no key needed, as before
    for path, item in spec["paths"].items():
        for method in item:
            shown = f"<code>{method.upper()} {path}</code>"
            assert shown in html, shown
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    assert "Every error is RFC 9457" in html and 'href="/openapi.json"' in html
    assert "/docs" not in spec["paths"]  # the page is not part of the API it documents


@pytest.mark.parametrize("path", ("/redoc", "/docs/oauth2-redirect"))
def test_the_cdn_backed_doc_pages_are_gone(open_url: str, path: str) -> None:
    r = httpx.get(open_url + path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "/docs" in r.json()["detail"]  # where the API is described


@pytest.mark.parametrize(
    "path", ("/healthz", "/openapi.json", "/v1/collections", "/nope<script>alert(1)</script>")
)
def test_json_answers_are_not_sniffed_nor_framed(open_url: str, path: str) -> None:
    r = httpx.get(open_url + path)
    assert r.headers["content-type"] in ("application/json", "application/problem+json")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "cache-control" not in r.headers  # the API's caching is left as it was


def test_every_answer_keeps_other_sites_from_loading_it(open_url: str) -> None:
    # Cross-Origin-Resource-Policy: another site's <script src> or <img src> aimed at this
    # server (on loopback, no key needed) is not handed the answer; nothing of the console
    # or the API reference is loaded from another origin (checked above)
    for path in ("/healthz", "/v1/collections", "/ui/collections", "/docs", "/nope"):
        r = httpx.get(open_url + path)
        assert r.headers["cross-origin-resource-policy"] == "same-origin", path


def test_a_refused_method_says_which_are_allowed(open_url: str) -> None:
    # a 405 must name the methods the resource takes (RFC 9110 15.5.6): the problem
    # handler dropped Starlette's Allow header
    r = httpx.request("OPTIONS", f"{open_url}/v1/collections")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}
    r = httpx.delete(f"{open_url}/v1/collections/x/search")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


class _Crash(Exception):
    """A failure no handler knows, raised by the test routes below."""


@pytest.fixture(scope="module")
def crashing_url(settings: Settings) -> Iterator[str]:
    """A server whose app has two routes that crash: one of the API, one of the console."""
    off = with_(settings, auth="off")
    app = create_app(off)

    async def boom() -> None:
        raise _Crash("/srv/secret/path is gone")

    app.add_api_route("/v1/boom", boom, methods=["GET"])
    app.add_api_route("/ui/boom", boom, methods=["GET"])
    with running_server(off, app=app) as url:
        yield url


@pytest.mark.parametrize("path", ("/v1/boom", "/ui/boom"))
def test_a_crash_is_a_problem_with_the_security_headers(crashing_url: str, path: str) -> None:
    # an exception no handler took was answered by Starlette's outermost middleware,
    # outside the app's own: the 500 went out without the security headers
    r = httpx.get(crashing_url + path, headers={"X-Request-ID": "crash-1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == "internal_error" and problem["request_id"] == "crash-1"
    assert "/srv/secret" not in r.text
    assert r.headers["x-request-id"] == "crash-1"
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cross-origin-resource-policy"] == "same-origin"
    if path.startswith("/ui"):
        assert r.headers["cache-control"] == "no-store"


@pytest.fixture(scope="module")
def rooted_crashing_url(settings: Settings) -> Iterator[str]:
    """A server under the root path ``/rag`` whose outermost middleware crashes on any
    path ending in ``/boom``: Starlette's own last handler answers it, outside every
    middleware of the app (the security headers' included)."""
    off = with_(settings, auth="off")
    app = create_app(off)

    def crash_outside(inner: ASGIApp) -> ASGIApp:
        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].endswith("/boom"):
                raise _Crash("/srv/secret/path is gone")
            await inner(scope, receive, send)

        return asgi

    app.add_middleware(crash_outside)  # added last: outermost
    with running_server(off, app=app, root_path="/rag") as url:
        yield url


@pytest.mark.parametrize("path", ("/ui/boom", "/v1/boom"))
def test_a_crash_behind_a_root_path_gets_the_headers_of_its_route(
    rooted_crashing_url: str, path: str
) -> None:
    # the crash's headers were chosen by the path with the root path in it: no console
    # page was taken for one, and its 500 went out without Cache-Control: no-store
    # sent as the proxy forwards it, the prefix stripped (the server puts it back in)
    r = httpx.get(rooted_crashing_url + path, headers={"X-Request-ID": "crash-2"})
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert "/srv/secret" not in r.text
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers.get("cache-control") == ("no-store" if path.startswith("/ui") else None)


def test_behind_a_root_path_the_pages_link_and_redirect_under_it(rooted_crashing_url: str) -> None:
    # sent as the proxy forwards them, the prefix stripped: every link, the form's action,
    # the redirect and the script's prefix (data-root) are under /rag (they were at the
    # host's root, outside the console)
    r = httpx.get(rooted_crashing_url + "/ui")
    assert r.status_code == 303 and r.headers["location"] == "/rag/ui/collections"
    r = httpx.get(rooted_crashing_url + "/ui/collections/team")
    assert r.status_code == 200
    assert 'data-root="/rag"' in r.text
    hrefs = re.findall(r'(?:href|src|action)="([^"#]+)"', r.text)
    assert hrefs and all(h.startswith("/rag/ui/") for h in hrefs), hrefs
    r = httpx.get(rooted_crashing_url + "/docs")
    assert 'href="/rag/openapi.json"' in r.text and 'href="/openapi.json"' not in r.text


@pytest.mark.parametrize(
    ("given", "root"), (("", ""), ("/rag", "/rag"), ("/rag/", "/rag"), ("//evil.example", ""))
)
def test_the_root_path_is_a_path_of_this_host(given: str, root: str) -> None:
    # a root path such as //host would send every call of the console to another host
    scope = {"type": "http", "method": "GET", "path": "/ui", "headers": [], "root_path": given}
    assert root_path(Request(scope)) == root


def test_console_script_never_parses_text_as_html() -> None:
    js = (STATIC / "console.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "document.cookie",
    ):
        assert sink not in js, sink
    assert "sessionStorage" in js and "textContent" in js


def test_a_name_in_the_url_that_could_carry_markup_is_refused(open_url: str) -> None:
    r = httpx.get(f"{open_url}/ui/collections/%3Cscript%3E")
    assert r.status_code == 422
    # the path comes back only inside problem+json, which nosniff keeps from being HTML
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_root_redirects_to_the_collections(open_url: str) -> None:
    r = httpx.get(f"{open_url}/ui")
    assert r.status_code == 303 and r.headers["location"] == "/ui/collections"


def test_me_with_auth_off_is_an_anonymous_admin(open_url: str) -> None:
    assert httpx.get(f"{open_url}/v1/me").json() == {
        "auth": False,
        "key_id": None,
        "name": None,
        "scope": "admin",
        "collection": None,
    }


def test_me_reports_the_keys_scope_and_collection(secure_url: str, keys: KeyStore) -> None:
    assert httpx.get(f"{secure_url}/v1/me").status_code == 401
    key = keys.create("read", "notes", name="viewer")
    r = httpx.get(f"{secure_url}/v1/me", headers={"Authorization": f"Bearer {key.secret}"})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "auth": True,
        "key_id": key.secret.split("_")[1],
        "name": "viewer",
        "scope": "read",
        "collection": "notes",
    }


def test_stats_show_counts_sizes_spaces_and_last_ingest(
    open_url: str, notes: dict[str, int]
) -> None:
    s = httpx.get(f"{open_url}/v1/collections/notes/stats").json()
    assert s["documents"] == 1 and s["chunks"] >= 3
    assert s["last_ingest"] is not None
    [space] = s["spaces"]
    assert space["status"] == "active" and space["active"] is True
    assert space["progress"] == 1.0 and 0 < space["embedded"] <= s["chunks"]
    assert space["table_bytes"] > 0 and space["index_bytes"] > 0
    assert {t["table"] for t in s["shared_tables"]} == {"documents", "chunks"}
    assert httpx.get(f"{open_url}/v1/collections/nope/stats").status_code == 404


def test_chunks_come_in_order_with_type_section_and_page(
    open_url: str, notes: dict[str, int]
) -> None:
    doc = notes["evil.md"]
    r = httpx.get(f"{open_url}/v1/collections/notes/documents/{doc}/chunks").json()
    stored = httpx.get(f"{open_url}/v1/collections/notes/documents/{doc}").json()["chunks"]
    ordinals = [c["ordinal"] for c in r["data"]]
    assert ordinals == list(range(stored)) and stored >= 2 and r["next_after"] is None
    assert r["count"] == stored
    assert {c["chunk_type"] for c in r["data"]} <= {"heading", "paragraph"}
    assert any("<script>window.__pwned=1</script>" in c["text"] for c in r["data"])
    assert all(c["section_path"][:1] == ["Evil"] for c in r["data"] if c["section_path"])
    assert any(c["section_path"] for c in r["data"])
    assert all(c["page"] is None for c in r["data"])  # markdown has no pages
    first = httpx.get(
        f"{open_url}/v1/collections/notes/documents/{doc}/chunks", params={"limit": 1}
    ).json()
    assert first["count"] == 1 and first["next_after"] == 0
    rest = httpx.get(
        f"{open_url}/v1/collections/notes/documents/{doc}/chunks", params={"after": 0}
    ).json()
    assert [c["ordinal"] for c in rest["data"]] == ordinals[1:]
    # a page exactly full is the last when no chunk follows (it said next_after all the same)
    url = f"{open_url}/v1/collections/notes/documents/{doc}/chunks"
    full = httpx.get(url, params={"limit": stored}).json()
    assert (full["count"], full["next_after"]) == (stored, None)
    short = httpx.get(url, params={"limit": stored - 1}).json()
    assert short["next_after"] == ordinals[-2]
    last = httpx.get(url, params={"limit": stored - 1, "after": short["next_after"]}).json()
    assert [c["ordinal"] for c in last["data"]] == ordinals[-1:] and last["next_after"] is None
    missing = httpx.get(f"{open_url}/v1/collections/notes/documents/999999/chunks")
    assert missing.status_code == 404 and missing.json()["code"] == "document_not_found"


def test_search_explain_gives_both_ranks_and_the_plan(open_url: str, notes: dict[str, int]) -> None:
    r = httpx.post(
        f"{open_url}/v1/collections/notes/search",
        timeout=60,
        json={
            "query": "roll back the downgrade",
            "mode": "hybrid",
            "explain": True,
            "context": "section",
        },
    ).json()
    top = r["data"][0]
    assert top["explain"]["vector"]["rank"] >= 1 and top["explain"]["fulltext"]["rank"] >= 1
    assert top["context_mode"] == "section" and top["context"]
    plan = r["plan"]
    assert plan["mode"] == "hybrid" and [x["list"] for x in plan["lists"]] == ["vector", "fulltext"]
    assert plan["fusion"]["method"] == "rrf" and plan["lists"][0]["table"].startswith("emb_")
    vector_only = httpx.post(
        f"{open_url}/v1/collections/notes/search",
        timeout=60,
        json={"query": "roll back", "mode": "vector", "explain": True},
    )
    body = vector_only.json()
    assert [x["list"] for x in body["plan"]["lists"]] == ["vector"]
    assert body["plan"]["fusion"] is None
    plain = httpx.post(
        f"{open_url}/v1/collections/notes/search", timeout=60, json={"query": "roll back"}
    ).json()
    assert plain["plan"] is None


def test_the_key_is_never_in_the_access_log(
    secure_url: str, keys: KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    secret = keys.create("read").secret
    caplog.set_level("DEBUG")
    r = httpx.get(f"{secure_url}/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200
    assert any(
        "/v1/me" in rec.getMessage() or "/v1/me" in str(rec.__dict__) for rec in caplog.records
    )
    assert all(
        secret not in str(rec.__dict__) and secret.split("_", 2)[2] not in rec.getMessage()
        for rec in caplog.records
    )
