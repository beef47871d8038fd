"""The console in a real browser: headless Chromium (Debian's, via pytest-playwright)
against a real ``ragstore serve`` process on loopback with authentication on.

Each test signs in with a key, as a person would, and writes a screenshot of the page it
checked to ``.artifacts/console/`` (git-ignored; two of them are in docs/img/).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, Route, expect
from playwright.sync_api import Error as PlaywrightError

from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.jobs.worker import run_worker
from tests.api.conftest import running_server, with_

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "console"
expect.set_options(timeout=20_000)  # a page's requests on a busy 2-core CI machine
TARGET = "all-MiniLM-L6-v2-256d"
EVIL = (
    "Warning <script>window.__pwned = 1</script> and "
    '<img src="x" onerror="window.__pwned = 2"> should show as text.\n'
)
BAD_PDF = b"%PDF-1.7\nthis is not really a PDF\n"


def _handbook(topic: str, steps: list[str]) -> str:
    parts = [f"# {topic.title()} guide\n\nHow the team handles {topic}.\n"]
    for i, step in enumerate(steps, 1):
        parts.append(
            f"\n## Step {i}: {step}\n\nFor {topic}, {step} carefully and write "
            f"down what you did; a {topic} without notes cannot be repeated.\n"
        )
    return "".join(parts)


DOCS = {
    "rollback.md": _handbook(
        "rollback",
        [
            "stop the writers",
            "run ragstore db downgrade",
            "restore the backup",
            "check the search results",
        ],
    ),
    "backups.md": _handbook(
        "backups", ["take a base backup", "copy it off the host", "test a restore every month"]
    ),
    "onboarding.md": _handbook(
        "onboarding", ["create an API key", "read the handbook", "shadow an on-call shift"]
    ),
}


@dataclass(frozen=True)
class Server:
    url: str
    admin_key: str
    read_key: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    settings: Settings, keys: KeyStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``ragstore serve`` in its own process, auth on, on the module's database."""
    assert settings.database_url is not None
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
        "RAGSTORE_AUTH": "on",
        "RAGSTORE_API_HOST": "127.0.0.1",
        "RAGSTORE_API_PORT": str(port),
        "RAGSTORE_LOG_LEVEL": "info",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ragstore"), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "ragstore serve did not start"
            time.sleep(0.2)
        print(f"ragstore serve answered after {time.monotonic() - started:.1f} s")
        yield Server(
            url,
            keys.create("admin", name="console-admin").secret,
            keys.create("read", name="console-reader").secret,
            log,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def handbook(server: Server) -> str:
    """Collection ``handbook`` with three guides and a document holding markup."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "handbook"}).status_code == 201
        files = [("files", (name, text.encode())) for name, text in DOCS.items()]
        files.append(("files", ("markup.txt", EVIL.encode())))
        r = c.post("/v1/collections/handbook/documents/upload", files=files)
        assert r.status_code == 201, r.text
    return "handbook"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, server: Server, key: str | None = None) -> None:
    page.goto(f"{server.url}/ui/login")
    page.fill("#api-key", key or server.admin_key)
    page.click("#sign-in")
    expect(page).to_have_url(f"{server.url}/ui/collections")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def open_page(page: Page, server: Server, path: str) -> None:
    page.goto(server.url + path)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def drop_made_by_script(page: Page, files: list[tuple[str, str, str]]) -> None:
    """Drop ``(name, type, text)`` files on the drop zone in a DataTransfer a script made
    (it has no folder entries: the console takes its files as given)."""
    drop = page.evaluate_handle(
        """(files) => {
             const dt = new DataTransfer();
             for (const [name, type, text] of files) dt.items.add(new File([text], name, {type}));
             return dt;
           }""",
        [list(f) for f in files],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": drop})


def test_sign_in_keeps_the_key_in_the_tab_only(page: Page, server: Server) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{server.url}/ui/collections")
    # no key yet: sent to sign in, then back to the page asked for
    expect(page).to_have_url(f"{server.url}/ui/login?next=%2Fui%2Fcollections")
    page.fill("#api-key", "rsk_0123456789ab_" + "x" * 43)
    page.click("#sign-in")
    expect(page.locator("#login-error")).to_contain_text("is not valid")
    shot(page, "login")
    sign_in(page, server)
    expect(page.locator("#whoami")).to_contain_text("admin")
    expect(page.locator("#auth-off")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('ragstore.apiKey')") == server.admin_key
    assert page.context.cookies() == []
    secret = server.admin_key.split("_", 2)[2]
    assert urls and not any(secret in u for u in urls)
    page.click("#sign-out")
    expect(page).to_have_url(f"{server.url}/ui/login")
    assert page.evaluate("sessionStorage.getItem('ragstore.apiKey')") is None


def test_a_read_key_sees_no_write_or_admin_controls(
    page: Page, server: Server, handbook: str
) -> None:
    sign_in(page, server, server.read_key)
    expect(page.locator("#whoami")).to_contain_text("read")
    expect(page.locator("#create-section")).to_be_hidden()
    expect(page.locator("tr[data-collection=handbook] button.delete")).to_be_hidden()
    open_page(page, server, f"/ui/collections/{handbook}")
    expect(page.locator("#upload-section")).to_be_hidden()
    expect(page.locator("#documents-body")).to_contain_text("rollback.md")  # it can read
    open_page(page, server, "/ui/models")
    expect(page.locator("#migrate-start")).to_be_hidden()
    expect(page.locator("#rollback")).to_be_hidden()
    expect(page.locator("#active-model")).to_contain_text("all-MiniLM-L6-v2")
    open_page(page, server, f"/ui/collections/{handbook}/search")
    page.click("#fields-details summary")
    expect(page.locator('#fields-body button[data-field="size_bytes"]')).to_be_visible()
    expect(page.locator("#fields-body button.index-field")).to_have_count(0)


def test_create_a_collection_and_upload_two_files_by_drop(page: Page, server: Server) -> None:
    sign_in(page, server)
    creates: list[str] = []
    page.on(
        "request", lambda r: creates.append(r.method) if r.url.endswith("/v1/collections") else None
    )
    page.fill("#create-name", "inbox")
    page.dblclick("#create-form button[type=submit]")  # creates once, says no "exists"
    expect(page.locator("tr[data-collection=inbox]")).to_have_count(1)
    expect(page.locator("#create-error")).to_be_hidden()
    assert creates.count("POST") == 1
    page.click("tr[data-collection=inbox] a")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    # each file of each upload carries an Idempotency-Key of its own (a request the
    # server queues as a job, arriving twice, is then queued once)
    keys: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            keys.append(r.headers.get("idempotency-key"))
            if r.url.endswith("/documents/upload")
            else None
        ),
    )
    drop_made_by_script(
        page,
        [
            ("rollback.md", "text/markdown", DOCS["rollback.md"]),
            ("broken.pdf", "application/pdf", BAD_PDF.decode()),
        ],
    )
    good = page.locator("#upload-list li[data-file='rollback.md'] .outcome")
    bad = page.locator("#upload-list li[data-file='broken.pdf'] .outcome")
    expect(good).to_have_text(re.compile(r"^added: \d+ chunks$"), timeout=60_000)
    expect(bad).to_have_text(
        re.compile(r"^failed: broken\.pdf: not a readable PDF"), timeout=60_000
    )
    expect(bad).to_contain_text("(corrupt_document)")
    for name in ("rollback.md", "broken.pdf"):  # each file's own progress bar, full
        bar = page.locator(f"#upload-list li[data-file='{name}'] progress")
        assert bar.evaluate("b => b.value") == 1
    expect(page.locator("#documents-body tr")).to_have_count(1)
    expect(page.locator("#documents-body")).to_contain_text("rollback.md")
    expect(page.locator("#spaces-body")).to_contain_text("active")
    page.set_input_files(
        "#file-input",
        files=[
            {  # the drop zone's own file chooser
                "name": "rollback.md",
                "mimeType": "text/markdown",
                "buffer": DOCS["rollback.md"].encode(),
            }
        ],
    )
    again = page.locator("#upload-list li[data-file='rollback.md'] .outcome").nth(1)
    expect(again).to_have_text(re.compile(r"^unchanged: \d+ chunks$"), timeout=60_000)
    assert len(keys) == 3 and len(set(keys)) == 3, keys
    assert all(k and re.fullmatch(r"console-[0-9a-f]{32}", k) for k in keys), keys
    page.fill("#source-prefix", "nothing-here/")
    page.click("#filter-form button")
    expect(page.locator("#documents-body")).to_contain_text("No documents.")
    page.fill("#source-prefix", "roll")
    page.click("#filter-form button")
    expect(page.locator("#documents-body tr")).to_have_count(1)
    shot(page, "collection")


def _tree(root: Path) -> Path:
    """A folder as people have them: two README.md of different subfolders, a nested
    file, a hidden file and a kind ragstore does not read."""
    docs = root / "team-docs"
    for rel, text in {
        "guide/README.md": DOCS["rollback.md"],
        "notes/README.md": DOCS["backups.md"],
        "notes/deep/onboarding.md": DOCS["onboarding.md"],
        "notes/.draft.md": "# Draft\n\nNot for the collection.\n",
    }.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text, encoding="utf-8")
    (docs / "guide" / "diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return docs


UPLOADED = ("team-docs/guide/README.md", "team-docs/notes/README.md")


def _expect_tree_uploaded(page: Page, status: str) -> None:
    for name in (*UPLOADED, "team-docs/notes/deep/onboarding.md"):
        outcome = page.locator(f"#upload-list li[data-file='{name}'] .outcome").last
        expect(outcome).to_have_text(re.compile(rf"^{status}: \d+ chunks$"), timeout=60_000)
    expect(page.locator("#upload-list li.skipped").last).to_have_text(
        "skipped 2 hidden file(s) or file(s) of a kind ragstore does not read"
    )


def test_a_dropped_folder_is_walked_and_its_files_named_by_path(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """A real drop of a folder (Chromium's own drag data, through the DevTools protocol):
    each file is stored under its path in the folder, so the two README.md stay two
    documents, and the folder chooser names the same files the same way."""
    docs = _tree(tmp_path)
    sign_in(page, server)
    page.fill("#create-name", "folders")
    page.click("#create-form button[type=submit]")
    page.click("tr[data-collection=folders] a")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    box = page.locator("#drop-zone").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(docs)], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    _expect_tree_uploaded(page, "added")
    expect(page.locator("#documents-body tr")).to_have_count(3)
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    listed = httpx.get(
        f"{server.url}/v1/collections/folders/documents", headers=headers, timeout=30
    ).json()["data"]
    # an upload's source is its name (the server's own path is not answered)
    assert sorted(d["source"] for d in listed) == [
        "team-docs/guide/README.md",
        "team-docs/notes/README.md",
        "team-docs/notes/deep/onboarding.md",
    ]
    found = httpx.post(
        f"{server.url}/v1/collections/folders/search",
        headers=headers,
        json={"query": "copy the base backup off the host", "k": 1, "mode": "fulltext"},
        timeout=30,
    ).json()["data"]
    assert found[0]["source"].endswith("team-docs/notes/README.md")  # not replaced by guide's
    empty = tmp_path / "empty"
    empty.mkdir()
    data = {"items": [], "files": [str(empty)], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):  # said so, rather than nothing at all
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    expect(page.locator("#upload-list li.skipped").last).to_have_text(
        "nothing to upload: the dropped folder holds no files"
    )
    page.set_input_files("#folder-input", str(docs))  # the same folder, chosen
    _expect_tree_uploaded(page, "unchanged")
    expect(page.locator("#documents-body tr")).to_have_count(3)
    # two files of one name dropped as files: Chromium's own drop names the second
    # "README (1).md"; where the browser does not (here a DataTransfer a script made),
    # the first is stored and the second refused rather than stored over it
    drop_made_by_script(
        page,
        [
            ("README.md", "text/markdown", DOCS["rollback.md"]),
            ("README.md", "text/markdown", DOCS["backups.md"]),
        ],
    )
    same = page.locator("#upload-list li[data-file='README.md'] .outcome")
    expect(same.nth(0)).to_have_text(re.compile(r"^added: \d+ chunks$"), timeout=60_000)
    expect(same.nth(1)).to_have_text(re.compile(r"^failed: another file of this upload"))
    expect(page.locator("#documents-body tr")).to_have_count(4)


def test_a_document_with_script_and_img_is_shown_as_text(
    page: Page, server: Server, handbook: str
) -> None:
    sign_in(page, server)
    open_page(page, server, f"/ui/collections/{handbook}")
    page.click("#documents-body a:text('markup.txt')")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    chunk = page.locator("#chunks-list .chunk-text").first
    expect(chunk).to_contain_text("<script>window.__pwned = 1</script>")
    expect(chunk).to_contain_text('<img src="x" onerror="window.__pwned = 2">')
    assert page.locator("#chunks-list img, #chunks-list script").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "document")


def test_a_read_key_sees_an_uploads_name_not_the_servers_path(
    page: Page, server: Server, handbook: str, settings: Settings
) -> None:
    """The document page showed an upload's source, the server's own
    ``<data dir>/uploads/...`` path, to any read key (as Source and in Metadata)."""
    sign_in(page, server, server.read_key)
    open_page(page, server, f"/ui/collections/{handbook}")
    page.click("#documents-body a:text('markup.txt')")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    facts = page.locator("#document-facts")
    expect(facts.locator("dt:text('Source') + dd")).to_have_text("markup.txt")
    shown = facts.inner_text()
    assert str(settings.data_dir.resolve()) not in shown and "/uploads/" not in shown


# where a glyph of ``word`` (in some text node of ``selector``'s first match) is drawn
_GLYPHS_OF = """([selector, word]) => {
  const root = document.querySelector(selector);
  const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    const at = node.data.indexOf(word);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + word.length);
    const box = range.getBoundingClientRect();
    return [box.left, box.right];
  }
  return null;
}"""


def test_a_right_to_left_override_in_stored_text_stays_inside_it(
    page: Page, server: Server
) -> None:
    """A heading or metadata value holding U+202E turned the rest of the console's own
    line around ("12 tokens" drawn left of the heading, as "snekot 21"); now it ends
    with the stored text (the heading isolated, the override escaped in JSON)."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "bidi"}).status_code == 201
        r = c.post(
            "/v1/collections/bidi/documents",
            json={
                "name": "bidi.md",
                "text": "# Intro\u202eevil\n\nPlain words after the heading.\n",
                "metadata": {"a": "x\u202ey", "team": "ops"},
            },
        )
        assert r.status_code == 201, r.text
        doc = r.json()["id"]
    sign_in(page, server)
    open_page(page, server, f"/ui/collections/bidi/documents/{doc}")
    selector = "#chunks-list li:last-child .meta"
    expect(page.locator(selector)).to_contain_text("tokens")
    evil = page.evaluate(_GLYPHS_OF, [selector, "evil"])
    tokens = page.evaluate(_GLYPHS_OF, [selector, "tokens"])
    assert evil is not None and tokens is not None
    assert tokens[0] >= evil[1], (evil, tokens)  # read left to right, as the console wrote it
    expect(page.locator("#document-facts")).to_contain_text('"a":"x\\u202ey"')


@pytest.mark.parametrize("mode", ["hybrid", "vector", "fulltext"])
def test_search_in_each_mode_shows_ranks_context_and_plan(
    page: Page, server: Server, handbook: str, mode: str
) -> None:
    sign_in(page, server)
    open_page(page, server, f"/ui/collections/{handbook}/search")
    page.fill("#q", "restore the backup after a rollback")
    page.select_option("#mode", mode)
    page.click("#search-submit")
    rows = page.locator("#hits-body tr")
    expect(rows.first).to_be_visible(timeout=30_000)
    top = rows.first.locator("td")
    assert float(top.nth(1).inner_text()) != 0
    vector_rank, fulltext_rank = top.nth(2).inner_text(), top.nth(3).inner_text()
    if mode in ("hybrid", "vector"):
        assert vector_rank.split("\n")[0].isdigit()
    if mode in ("hybrid", "fulltext"):
        assert fulltext_rank.split("\n")[0].isdigit()
    if mode == "vector":
        assert fulltext_rank == "—"
    if mode == "fulltext":
        assert vector_rank == "—"
    context = rows.first.locator("details.context")
    context.locator("summary").click()
    expect(context.locator(".context-chunk.hit")).to_be_visible()
    page.locator("#plan-details summary").click()
    expect(page.locator("#plan")).to_contain_text(f'"mode": "{mode}"')
    if mode == "hybrid":
        expect(page.locator("#plan")).to_contain_text('"method": "rrf"')
        shot(page, "search")


def test_a_key_named_like_a_built_in_is_listed_as_the_filter_names_it(
    page: Page, server: Server
) -> None:
    """A document's own ``source`` key was listed bare, so a click built a filter on the
    built-in column (the document's name) and found nothing; it is listed as
    ``document.source``, a click filters on the key itself, and it gets no index button
    (POST /v1/field-indexes refuses a prefixed field), while a plain key does."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "crm"}).status_code == 201
        for name, source in (("a.md", "crm"), ("b.md", "web")):
            body = {
                "name": name,
                "text": f"# Lead {name}\n\nFrom the {source}.",
                "metadata": {"source": source, "rank": 1},
            }
            assert c.post("/v1/collections/crm/documents", json=body).status_code == 201
    sign_in(page, server)
    open_page(page, server, "/ui/collections/crm/search")
    page.click("#fields-details summary")
    listed = page.locator('#fields-body button[data-field="document.source"]')
    expect(listed).to_be_visible()
    row = page.locator("#fields-body tr", has=page.locator('button[data-field="document.source"]'))
    expect(row).to_contain_text("string")
    expect(row.locator("button.index-field")).to_have_count(0)
    rank = page.locator("#fields-body tr", has=page.locator('button[data-field="rank"]'))
    expect(rank.locator("button.index-field")).to_have_count(1)  # numbers
    listed.click()  # adds the first value listed: the latest document's
    expect(page.locator("#where")).to_have_value('{"document.source":"web"}')
    page.fill("#q", "lead")
    page.click("#search-submit")
    expect(page.locator("#hits-body tr")).to_have_count(1)
    expect(page.locator("#hits-body tr").first).to_contain_text("b.md")


def test_search_filters_show_errors_inline(page: Page, server: Server, handbook: str) -> None:
    sign_in(page, server)
    open_page(page, server, f"/ui/collections/{handbook}/search")
    page.fill("#q", "backup")
    page.fill("#where", "{not json")
    page.click("#search-submit")
    expect(page.locator("#where-error")).to_contain_text("Filters are not valid JSON")
    page.fill("#where", '{"chunk_type": {"$near": 1}}')
    page.click("#search-submit")
    expect(page.locator("#where-error")).to_contain_text("(invalid_filter)")
    page.fill("#where", '{"title": "Backups guide"}')
    page.click("#search-submit")
    expect(page.locator("#where-error")).to_be_hidden()
    expect(page.locator("#hits-body tr").first).to_contain_text("Backups guide")
    # what a filter can name, from GET .../fields; a click adds the field's first value
    page.click("#fields-details summary")
    expect(page.locator('#fields-body button[data-field="source"]')).to_be_visible()
    language = page.locator('#fields-body button[data-field="language"]')
    expect(language).to_be_visible()
    row = page.locator("#fields-body tr", has=page.locator('button[data-field="language"]'))
    expect(row).to_contain_text("4 documents")
    shot(page, "search-fields")
    language.click()
    expect(page.locator("#where")).to_have_value('{"title":"Backups guide","language":"English"}')
    page.click("#search-submit")
    expect(page.locator("#hits-body tr").first).to_contain_text("Backups guide")
    # an admin of every collection indexes a number field from the panel
    sizes = page.locator("#fields-body tr", has=page.locator('button[data-field="size_bytes"]'))
    sizes.locator('button.index-field[data-kind="number"]').click()
    expect(sizes.locator("td").nth(4)).to_have_text("number")  # no button left: indexed
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    listed = httpx.get(f"{server.url}/v1/field-indexes", headers=auth).json()["data"]
    assert listed == [{"field": "size_bytes", "type": "number"}]
    dropped = httpx.delete(
        f"{server.url}/v1/field-indexes",
        params={"field": "size_bytes", "type": "number"},
        headers=auth,
        timeout=60,
    )
    assert dropped.json()["changed"] is True


def test_migrate_to_the_256d_model_then_roll_back(
    page: Page, server: Server, handbook: str
) -> None:
    sign_in(page, server)
    open_page(page, server, "/ui/models")
    page.select_option("#migrate-collection", handbook)
    expect(page.locator("#active-model")).to_contain_text("all-MiniLM-L6-v2@")
    original = page.locator("#active-model").inner_text()
    events: list[tuple[str, str]] = []
    page.on("request", lambda r: events.append(("sent", r.url)))
    page.on("requestfinished", lambda r: events.append(("done", r.url)))
    page.fill("#migrate-to", TARGET)
    page.click("#migrate-start")
    expect(page.locator("#migrate-status")).to_contain_text(f"to {TARGET}")
    expect(page.locator("#migrate-status")).to_contain_text(
        f"Switched {handbook} to {TARGET}@", timeout=120_000
    )
    expect(page.locator("#active-model")).to_contain_text(f"{TARGET}@")
    migrate = f"{server.url}/v1/collections/{handbook}/model/migrate"
    during = events[events.index(("sent", migrate)) : events.index(("done", migrate))]
    assert ("sent", f"{server.url}/v1/collections/{handbook}/stats") in during  # watched
    spaces = page.locator("#model-spaces-body tr")
    expect(spaces).to_have_count(2)
    expect(page.locator("#model-spaces-body tr[data-status=active]")).to_contain_text(TARGET)
    expect(page.locator("#model-spaces-body tr[data-status=retired]")).to_contain_text(original)
    pinned = page.locator(f"#models-body tr[data-model='{TARGET}']")
    expect(pinned.locator(".checksum")).to_have_text(re.compile(r"^sha256:[0-9a-f]{64}$"))
    expect(pinned).to_contain_text(handbook)
    shot(page, "models")
    rollbacks: list[str] = []
    page.on("request", lambda r: rollbacks.append(r.url) if r.url.endswith("/rollback") else None)
    page.dblclick("#rollback")  # a double click rolls back once, not back and forth
    expect(page.locator("#migrate-status")).to_contain_text(f"{original} is active again")
    assert len(rollbacks) == 1
    expect(page.locator("#active-model")).to_have_text(original)
    expect(page.locator("#model-spaces-body tr[data-status=active]")).to_contain_text(original)


def test_collections_page_deletes_only_after_the_name_is_typed(
    page: Page, server: Server, handbook: str
) -> None:
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert (
        httpx.post(
            f"{server.url}/v1/collections", json={"name": "scratch"}, headers=auth
        ).status_code
        == 201
    )
    sign_in(page, server)
    row = page.locator("tr[data-collection=handbook]")
    expect(row.locator(".spaces")).to_contain_text("active")
    expect(row.locator(".last-ingest")).to_contain_text("UTC")
    expect(row.locator(".sizes")).to_contain_text("KiB")
    shot(page, "collections")
    page.click("tr[data-collection=scratch] button.delete")
    page.fill("#delete-confirm", "scratc")
    page.click("#delete-submit")
    expect(page.locator("#delete-error")).to_contain_text("Type the collection's name")
    page.fill("#delete-confirm", "scratch")
    page.click("#delete-submit")
    expect(page.locator("tr[data-collection=scratch]")).to_have_count(0)
    expect(page.locator("tr[data-collection=handbook]")).to_have_count(1)


def test_the_server_log_never_holds_a_key(server: Server, handbook: str) -> None:
    text = server.log.read_text()
    assert "/ui/" in text or "request" in text
    for key in (server.admin_key, server.read_key):
        assert key.split("_", 2)[2] not in text


def test_a_field_named_like_an_object_internal_is_added_to_the_filters(
    page: Page, server: Server
) -> None:
    """Metadata is free-form JSON, so a field may be named ``__proto__``: a click on it adds
    its clause to the filters box like any other (it was set as the object's prototype,
    and the box stayed as it was, silently)."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "odd-fields"}).status_code == 201
        r = c.post(
            "/v1/collections/odd-fields/documents",
            json={
                "name": "odd.md",
                "text": "# Odd\n\nA note whose metadata has odd field names.\n",
                "metadata": {"__proto__": "kept", "constructor": "also"},
            },
        )
        assert r.status_code == 201, r.text
        r = c.post(
            "/v1/collections/odd-fields/documents",
            json={"name": "plain.md", "text": "# Plain\n\nA note with odd words too.\n"},
        )
        assert r.status_code == 201, r.text
    sign_in(page, server)
    open_page(page, server, "/ui/collections/odd-fields/search")
    page.click("#fields-details summary")
    page.locator('#fields-body button[data-field="__proto__"]').click()
    expect(page.locator("#where")).to_have_value('{"__proto__":"kept"}')
    page.locator('#fields-body button[data-field="constructor"]').click()
    expect(page.locator("#where")).to_have_value('{"__proto__":"kept","constructor":"also"}')
    page.fill("#q", "odd note")
    page.select_option("#mode", "fulltext")
    page.click("#search-submit")
    expect(page.locator("#search-summary")).to_contain_text("1 hit(s)")
    expect(page.locator("#hits-body tr")).to_have_count(1)
    expect(page.locator("#hits-body")).to_contain_text("Odd")


def test_write_and_admin_controls_are_hidden_until_the_keys_scope_allows_them(
    browser: Browser, server: Server, handbook: str
) -> None:
    """The pages as served, before the script has learnt the key's scope (it has not run,
    or GET /v1/me failed): no write or admin control shows (the upload zone and the
    migrate and rollback buttons did)."""
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/ui/collections")
        expect(page.locator("#create-section")).to_be_hidden()
        expect(page.locator("#collections-table th.admin-only")).to_be_hidden()
        page.goto(f"{server.url}/ui/collections/{handbook}")
        expect(page.locator("#upload-section")).to_be_hidden()
        expect(page.locator("#drop-zone")).to_be_hidden()
        page.goto(f"{server.url}/ui/models")
        for control in ("#migrate-to", "label[for=migrate-to]", "#migrate-start", "#rollback"):
            expect(page.locator(control)).to_be_hidden()
    finally:
        context.close()
    page = browser.new_page()  # the admin's key shows them all
    try:
        sign_in(page, server)
        expect(page.locator("#create-section")).to_be_visible()
        open_page(page, server, f"/ui/collections/{handbook}")
        expect(page.locator("#upload-section")).to_be_visible()
        open_page(page, server, "/ui/models")
        for control in ("#migrate-to", "#migrate-start", "#rollback"):
            expect(page.locator(control)).to_be_visible()
    finally:
        page.close()


def test_an_upload_that_gets_no_answer_is_not_called_failed(page: Page, settings: Settings) -> None:
    """The server goes away before the upload: the console cannot know whether a file it
    got no answer for was stored, and says so (it said "failed", which may be false)."""
    with running_server(with_(settings, auth="off")) as url:
        assert httpx.post(f"{url}/v1/collections", json={"name": "cut-off"}).status_code == 201
        page.goto(f"{url}/ui/collections/cut-off")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.set_input_files(
        "#file-input",
        files=[{"name": "notes.md", "mimeType": "text/markdown", "buffer": b"# Notes\n\nHi.\n"}],
    )
    outcome = page.locator("#upload-list li[data-file='notes.md'] .outcome")
    expect(outcome).to_have_text(
        "no answer: the connection to the server broke, so whether the file was stored is "
        "unknown; reload the page to see"
    )
    expect(outcome).to_have_class(re.compile(r"\bstatus-unknown\b"))


def test_a_file_queued_as_a_job_says_how_the_job_ended(
    page: Page, server: Server, settings: Settings
) -> None:
    """A file over RAGSTORE_BACKGROUND_INGEST_BYTES is queued (202): its line follows the
    job to the end, so a file the job could not read says "failed" (it stayed "queued")."""
    sign_in(page, server)
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "queued"}, headers=auth
    ).status_code in (201, 409)
    open_page(page, server, "/ui/collections/queued")
    big_bad = BAD_PDF + b"%" * (300 * 1024)  # over the 256 KiB of a request's own ingest
    page.set_input_files(
        "#file-input",
        files=[{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": big_bad}],
    )
    line = page.locator("#upload-list li[data-file='scan.pdf'] .outcome")
    expect(line).to_have_text(re.compile(r"^queued as job \d+$"), timeout=60_000)
    # a `ragstore worker` runs the queue (in a thread: Playwright holds this one's loop)
    worker = threading.Thread(
        target=run_worker, args=(settings,), kwargs={"burst": True, "signals": False}
    )
    worker.start()
    worker.join(timeout=120)
    expect(line).to_have_text(
        re.compile(r"^failed in job \d+: scan\.pdf: not a readable PDF.*\(corrupt_document\)$"),
        timeout=60_000,
    )
    expect(line).to_have_class(re.compile(r"\bstatus-failed\b"))


def test_writes_that_get_no_answer_say_their_outcome_is_unknown(
    browser: Browser, settings: Settings
) -> None:
    """The server goes away under the pages: a create, delete, migration or rollback sent
    then showed the browser's "Failed to fetch", as if it had failed, though the server
    may have done it before the connection broke; each now says its outcome is unknown."""
    context = browser.new_context()
    try:
        collections, models = context.new_page(), context.new_page()
        with running_server(with_(settings, auth="off")) as url:
            assert httpx.post(f"{url}/v1/collections", json={"name": "gone"}).status_code == 201
            for page, path in ((collections, "/ui/collections"), (models, "/ui/models")):
                page.goto(url + path)
                expect(page.locator("body")).to_have_attribute("data-ready", "true")
        unknown = (
            "no answer: the connection to the server broke, so whether {} is unknown; the "
            "page shows what the server says now (reload the page to see)"
        )
        collections.fill("#create-name", "never-answered")
        collections.click("#create-form button[type=submit]")
        expect(collections.locator("#create-error")).to_have_text(
            unknown.format("collection never-answered was created")
        )
        collections.click("tr[data-collection=gone] button.delete")
        collections.fill("#delete-confirm", "gone")
        collections.click("#delete-submit")
        expect(collections.locator("#delete-error")).to_have_text(
            unknown.format("collection gone was deleted")
        )
        models.select_option("#migrate-collection", "gone")
        models.click("#rollback")
        expect(models.locator("#migrate-error")).to_have_text(
            unknown.format("gone was rolled back")
        )
        models.fill("#migrate-to", TARGET)
        models.click("#migrate-start")
        expect(models.locator("#migrate-error")).to_have_text(
            unknown.format(f"the migration of gone to {TARGET} started or finished")
        )
        expect(models.locator("#migrate-start")).to_be_enabled()
    finally:
        context.close()


def test_a_write_key_may_create_a_collection_as_the_api_allows(
    page: Page, server: Server, keys: KeyStore
) -> None:
    """``POST /v1/collections`` takes a write key (one limited to a collection: that name);
    the console offered "Create" to admin keys alone."""
    sign_in(page, server, keys.create("write", name="console-writer").secret)
    expect(page.locator("#create-section")).to_be_visible()
    expect(page.locator("tr[data-collection] button.delete").first).to_be_hidden()
    page.fill("#create-name", "by-writer")
    page.click("#create-form button[type=submit]")
    expect(page.locator("tr[data-collection=by-writer]")).to_have_count(1)
    expect(page.locator("#create-error")).to_be_hidden()
    page.click("#sign-out")
    sign_in(page, server, keys.create("write", "own-one", name="limited-writer").secret)
    expect(page.locator("#create-name")).to_have_value("own-one")
    expect(page.locator("#create-name")).to_have_attribute("readonly", "")
    page.click("#create-form button[type=submit]")
    expect(page.locator("tr[data-collection=own-one]")).to_have_count(1)
    expect(page.locator("#create-error")).to_be_hidden()
    expect(page.locator("#create-name")).to_have_value("own-one")
    # its write controls are shown on its own collection's page alone (the upload zone was
    # offered on another's, where every file was refused)
    page.goto(f"{server.url}/ui/collections/by-writer")
    expect(page.locator("#whoami")).to_contain_text("only own-one")  # the scope is applied
    expect(page.locator("#upload-section")).to_be_hidden()
    open_page(page, server, "/ui/collections/own-one")
    expect(page.locator("#upload-section")).to_be_visible()


def test_the_api_reference_loads_only_from_this_server(page: Page, server: Server) -> None:
    """/docs was FastAPI's Swagger UI, whose script and styles came from a CDN: a blank page
    without the network, and script from another party on this origin."""
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{server.url}/docs")
    expect(page.locator("h1")).to_contain_text("ragstore")
    expect(page.locator("#schema-SearchRequest")).to_be_visible()
    expect(page.get_by_text("POST /v1/collections/{name}/search", exact=True)).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert requests and all(u.startswith(server.url + "/") for u in requests), requests
    assert errors == []  # a resource the policy refused would be reported here
    assert "system-ui" in page.evaluate("getComputedStyle(document.body).fontFamily")
    shot(page, "api-docs")


def test_pages_of_documents_and_uploads_show_the_servers_true_answer(
    page: Page, settings: Settings
) -> None:
    """A double click on "More" listed its page twice (the same cursor sent twice); a
    proxy's 502 in the server's place said an upload "failed" though the server stored
    the file; a file over the upload limit says the 413's detail; long unbroken names and
    titles do not widen the page."""
    with running_server(with_(settings, auth="off", max_upload_bytes=64 * 1024)) as url:
        assert httpx.post(f"{url}/v1/collections", json={"name": "paged"}).status_code == 201
        files = [
            ("files", (f"doc-{i:03}.md", f"# Doc {i}\n\nText {i}.\n".encode())) for i in range(55)
        ]
        # the markup escaped in the Markdown: a heading's own tags are stripped from its
        # text (chunking v12), escaped ones are its text, shown as written
        long_title = "T" * 400 + html.escape("<b>bold</b>")
        files.append(("files", ("x" * 120 + ".md", f"# {long_title}\n\nLong.\n".encode())))
        r = httpx.post(f"{url}/v1/collections/paged/documents/upload", files=files, timeout=300)
        assert r.status_code == 201, r.text
        page.goto(f"{url}/ui/collections/paged")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#documents-body tr")).to_have_count(50)
        page.dblclick("#documents-more")
        expect(page.locator("#documents-more")).to_be_hidden()
        page.wait_for_timeout(500)  # a second page's answer, were one sent, is in by now
        ids = page.locator("#documents-body tr").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.document)"
        )
        assert len(ids) == 56 and len(set(ids)) == 56, ids
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")

        page.set_input_files(
            "#file-input",
            files=[{"name": "big.md", "mimeType": "text/markdown", "buffer": b"a" * 100_000}],
        )
        expect(page.locator("#upload-list li[data-file='big.md'] .outcome")).to_have_text(
            re.compile(
                r"^failed: the upload is \d+ bytes, over the limit of 65536 bytes.*"
                r"\(request_too_large\)$"
            )
        )

        def proxy_lost_the_answer(route: Route) -> None:
            route.fetch()  # the server gets and stores the file; its answer is lost
            route.fulfill(status=502, body="Bad gateway", content_type="text/html")

        page.route("**/documents/upload", proxy_lost_the_answer)
        page.set_input_files(
            "#file-input",
            files=[{"name": "gw.md", "mimeType": "text/markdown", "buffer": b"# gw\n\nStored.\n"}],
        )
        line = page.locator("#upload-list li[data-file='gw.md'] .outcome")
        expect(line).to_have_text(re.compile(r"whether the file was stored is unknown"))
        expect(line).to_have_class(re.compile(r"\bstatus-unknown\b"))
        stored = httpx.get(
            f"{url}/v1/collections/paged/documents", params={"source_prefix": "gw.md"}
        )
        assert stored.json()["count"] == 1, stored.text
        long_doc = httpx.get(
            f"{url}/v1/collections/paged/documents", params={"source_prefix": "xxx"}
        ).json()["data"][0]
        page.goto(f"{url}/ui/collections/paged/documents/{long_doc['id']}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#document-facts")).to_contain_text("<b>bold</b>")
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")


def test_leaving_the_page_during_an_upload_asks_first(page: Page, settings: Settings) -> None:
    """Navigating away while a file is on its way cut it off and dropped the files queued
    behind it, silently; the page now asks before it is left (and not once they are done)."""
    with running_server(with_(settings, auth="off")) as url:
        assert httpx.post(f"{url}/v1/collections", json={"name": "leaving"}).status_code == 201
        page.goto(f"{url}/ui/collections/leaving")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        held: list[Route] = []
        page.route("**/documents/upload", lambda route: held.append(route))  # held on its way
        dialogs: list[str] = []

        def stay(dialog: Dialog) -> None:
            dialogs.append(dialog.type)
            dialog.dismiss()

        page.on("dialog", stay)
        page.set_input_files(
            "#file-input",
            files=[{"name": "a.md", "mimeType": "text/markdown", "buffer": b"# A\n\nText.\n"}],
        )
        expect(page.locator("#upload-list li[data-file='a.md'] .outcome")).to_have_text(
            "uploading…"
        )
        page.click("#nav-search", no_wait_after=True)
        page.wait_for_timeout(500)
        assert dialogs == ["beforeunload"]
        assert page.url == f"{url}/ui/collections/leaving"
        held[0].continue_()
        page.unroute("**/documents/upload")
        expect(page.locator("#upload-list li[data-file='a.md'] .outcome")).to_have_text(
            re.compile(r"^added")
        )
        page.click("#nav-search")
        expect(page).to_have_url(f"{url}/ui/collections/leaving/search")
        assert dialogs == ["beforeunload"]


def test_a_key_refused_during_an_upload_keeps_its_outcomes_on_the_page(
    page: Page, server: Server, keys: KeyStore
) -> None:
    """The key is revoked after the first file of three: the console went to the login
    page at the 401, and the user never saw which files were stored and which were not.
    The page now stays: the first stored, the second refused, the third not sent. Its
    "Sign in again", and the sign-in a refused key sends a page without uploads to, come
    back to the page (both went to the bare login page, then the collections)."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "revoked"}, headers=auth
    ).status_code in (201, 409)
    writer = keys.create("write", name="revoked-mid-upload")
    sign_in(page, server, writer.secret)
    open_page(page, server, "/ui/collections/revoked")

    sent: list[str] = []

    def revoke_after_the_first(route: Route) -> None:
        sent.append(route.request.url)
        if len(sent) > 1:
            route.continue_()
            return
        response = route.fetch()
        keys.revoke(writer.key.key_id)
        route.fulfill(response=response)

    page.route("**/documents/upload", revoke_after_the_first)
    names = ("a.md", "b.md", "c.md")
    page.set_input_files(
        "#file-input",
        files=[
            {"name": n, "mimeType": "text/markdown", "buffer": f"# {n}\n\nText.\n".encode()}
            for n in names
        ],
    )
    line = {n: page.locator(f"#upload-list li[data-file='{n}'] .outcome") for n in names}
    expect(line["c.md"]).to_have_text(re.compile(r"^not sent: the server refused the key"))
    expect(line["a.md"]).to_have_text(re.compile(r"^added: \d+ chunks$"))
    expect(line["b.md"]).to_have_text(re.compile(r"^failed: .*revoked.*\(unauthorized\)$"))
    expect(page.locator("#page-error")).to_contain_text("refused this tab's API key")
    assert page.url == f"{server.url}/ui/collections/revoked"
    assert page.evaluate("sessionStorage.getItem('ragstore.apiKey')") is None
    stored = httpx.get(f"{server.url}/v1/collections/revoked/documents", headers=auth).json()
    assert [d["name"] for d in stored["data"]] == ["a.md"]
    assert len(sent) == 2  # c.md was not sent
    # signing in again goes back to the page (it went to the collections)
    page.click("#sign-in-again")
    expect(page).to_have_url(f"{server.url}/ui/login?next=%2Fui%2Fcollections%2Frevoked")
    again = keys.create("write", name="signed-in-again")
    page.fill("#api-key", again.secret)
    page.click("#sign-in")
    expect(page).to_have_url(f"{server.url}/ui/collections/revoked")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    # with no uploads on the page a refused key goes to sign in at once, and back here
    keys.revoke(again.key.key_id)
    page.reload()
    expect(page).to_have_url(f"{server.url}/ui/login?next=%2Fui%2Fcollections%2Frevoked")


def test_a_delete_s_error_is_shown_even_once_its_dialog_is_closed(
    page: Page, server: Server
) -> None:
    """The dialog closed (Cancel, Escape) while the delete was on its way: its error was
    written into the closed dialog and the user took the delete for done. Cancel is now
    disabled and Escape refused while it runs, and an error that arrives after the dialog
    was closed all the same is shown on the page."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "kept"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    held: list[Route] = []
    page.route("**/v1/collections/kept", lambda route: held.append(route))
    page.click("tr[data-collection=kept] button.delete")
    page.fill("#delete-confirm", "kept")
    page.click("#delete-submit")
    expect(page.locator("#delete-cancel")).to_be_disabled()
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    expect(page.locator("#delete-dialog")).to_have_attribute("open", "")
    # a browser may close it all the same (a page may refuse one Escape per user
    # activation; Chromium closes the dialog on a later one): the delete's answer must
    # then show on the page
    page.evaluate("document.getElementById('delete-dialog').close()")
    assert len(held) == 1
    held[0].fulfill(
        status=409,
        content_type="application/problem+json",
        body='{"title": "Conflict", "detail": "collection kept is being migrated", '
        '"code": "conflict"}',
    )
    expect(page.locator("#page-error")).to_have_text(
        "Collection kept was not deleted: collection kept is being migrated (conflict)"
    )
    expect(page.locator("tr[data-collection=kept]")).to_have_count(1)


NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def test_an_error_answer_that_is_not_json_says_its_status(page: Page, server: Server) -> None:
    """A proxy's HTML error page in the server's place was shown whole, markup and all,
    as the error's text (and an upload's line said only "failed: " where the answer had
    no status text, as over HTTP/2); each now says the status and where it came from."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "proxied"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    open_page(page, server, "/ui/collections/proxied")
    not_json = re.compile(
        r"^HTTP 413 \w.*\(an answer that is not the API's JSON: from a proxy in front of it\?\)$"
    )
    page.route(
        "**/documents/upload",
        lambda route: route.fulfill(status=413, body=NGINX_413, content_type="text/html"),
    )
    page.set_input_files(
        "#file-input",
        files=[{"name": "n.md", "mimeType": "text/markdown", "buffer": b"# N\n\nText.\n"}],
    )
    line = page.locator("#upload-list li[data-file='n.md'] .outcome")
    expect(line).to_have_text(re.compile("^failed: " + not_json.pattern[1:]))
    page.route(
        "**/documents?*",
        lambda route: route.fulfill(status=413, body=NGINX_413, content_type="text/html"),
    )
    page.click("#filter-form button")
    expect(page.locator("#page-error")).to_have_text(not_json)


STATS = re.compile(r".*/v1/collections/[^/?]+/stats$")
PROBLEM = "application/problem+json"


def test_the_collections_page_reads_stats_a_few_at_a_time_and_only_in_view(
    page: Page, server: Server
) -> None:
    """Every collection's stats were asked for at once: a page of hundreds sent hundreds of
    requests together, which spent the key's rate limit (each later request of the page
    then failed with 429). At most four are now on their way, for rows in view only."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    names = [f"many-{i:03d}" for i in range(70)]
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as c:
        for name in names:
            assert c.post("/v1/collections", json={"name": name}).status_code in (201, 409)
        listed = len(c.get("/v1/collections").json()["data"])
    try:
        held: list[Route] = []
        asked: list[str] = []

        def hold(route: Route) -> None:
            asked.append(route.request.url)
            held.append(route)

        page.route(STATS, hold)
        sign_in(page, server)
        most, quiet = 0, 0
        while quiet < 3:  # answer those on their way, a few at a time, until none is asked
            page.wait_for_timeout(400)
            most = max(most, len(held))
            quiet = 0 if held else quiet + 1
            while held:
                held.pop().continue_()
        assert most == 4, f"{most} stats requests were on their way at once"
        assert 4 < len(asked) < listed // 2, f"{len(asked)} of {listed} rows' stats were read"
        page.unroute(STATS)
        last = page.locator(f"tr[data-collection={names[-1]}]")
        expect(last.locator(".sizes")).to_have_text("…")  # not read: never in view
        last.scroll_into_view_if_needed()
        expect(last.locator(".sizes")).to_contain_text("space(s)")
    finally:
        with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
            for name in names:
                c.delete(f"/v1/collections/{name}")


def test_a_rate_limited_stats_request_says_when_it_is_read_again(
    page: Page, server: Server
) -> None:
    """A 429 said only the problem's detail, and the row was never read: it now says
    "rate limited, retry in Ns" (the Retry-After) and reads the row again then."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "limited"}, headers=auth
    ).status_code in (201, 409)
    refused: list[str] = []

    def limit(route: Route) -> None:
        if "/limited/" in route.request.url and not refused:
            refused.append(route.request.url)
            route.fulfill(
                status=429,
                headers={"Retry-After": "3"},
                content_type=PROBLEM,
                body='{"title": "Too many requests", "detail": "slow down", '
                '"code": "rate_limited"}',
            )
        else:
            route.continue_()

    page.route(STATS, limit)
    sign_in(page, server)
    row = page.locator("tr[data-collection=limited]")
    row.scroll_into_view_if_needed()
    expect(row.locator(".spaces")).to_have_text("rate limited, retry in 3s")
    expect(row.locator(".sizes")).to_contain_text("space(s)", timeout=30_000)
    expect(row.locator(".spaces")).to_contain_text("active")


def test_an_earlier_actions_error_is_cleared_by_a_later_one(
    page: Page, server: Server, handbook: str
) -> None:
    """An error shown by one action stayed on screen after a later action had succeeded
    (or another collection was chosen), and was read as that action's outcome."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "short-lived"}, headers=auth
    ).status_code in (201, 409)
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "other-one"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    # a failed create, then a delete that succeeds
    page.fill("#create-name", handbook)
    page.click("#create-form button[type=submit]")
    expect(page.locator("#create-error")).to_be_visible()
    page.click("tr[data-collection=short-lived] button.delete")
    page.fill("#delete-confirm", "short-lived")
    page.click("#delete-submit")
    expect(page.locator("tr[data-collection=short-lived]")).to_have_count(0)
    expect(page.locator("#create-error")).to_be_hidden()
    # a failed listing of documents, then one that succeeds
    open_page(page, server, f"/ui/collections/{handbook}")
    failing = "**/documents?*"
    page.route(
        failing,
        lambda route: route.fulfill(
            status=503, content_type=PROBLEM, body='{"title": "Unavailable", "code": "not_ready"}'
        ),
    )
    page.click("#filter-form button")
    expect(page.locator("#page-error")).to_contain_text("(not_ready)")
    page.unroute(failing)
    page.click("#filter-form button")
    expect(page.locator("#documents-body tr")).to_have_count(4)
    expect(page.locator("#page-error")).to_be_hidden()
    # the models page: an error said of the collection selected before
    open_page(page, server, "/ui/models")
    page.route(
        f"**/v1/collections/{handbook}/stats",
        lambda route: route.fulfill(
            status=503, content_type=PROBLEM, body='{"title": "Unavailable", "code": "not_ready"}'
        ),
    )
    page.select_option("#migrate-collection", handbook)
    expect(page.locator("#migrate-error")).to_contain_text("(not_ready)")
    page.select_option("#migrate-collection", "other-one")
    expect(page.locator("#model-spaces-body tr")).to_have_count(1)
    expect(page.locator("#migrate-error")).to_be_hidden()


def test_a_refresh_that_fails_after_an_upload_says_so(page: Page, server: Server) -> None:
    """The refresh after an upload (stats, jobs, documents) had no error handling: when it
    failed the page kept its old counts and listing, and the user was never told."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "unrefreshed"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    open_page(page, server, "/ui/collections/unrefreshed")
    expect(page.locator("#page-error")).to_be_hidden()
    page.route(
        STATS,
        lambda route: route.fulfill(
            status=503, content_type=PROBLEM, body='{"title": "Unavailable", "code": "not_ready"}'
        ),
    )
    page.set_input_files(
        "#file-input",
        files=[{"name": "r.md", "mimeType": "text/markdown", "buffer": b"# R\n\nRefresh me.\n"}],
    )
    expect(page.locator("#upload-list li[data-file='r.md'] .outcome")).to_have_text(
        re.compile("^added: ")
    )
    error = page.locator("#page-error")
    expect(error).to_contain_text("could not be refreshed")
    expect(error).to_contain_text("(not_ready)")
    shot(page, "upload-refresh-failed")


def test_a_refresh_that_fails_after_a_queued_file_s_job_ends_says_so(
    page: Page, server: Server, settings: Settings
) -> None:
    """The refresh after a queued file's job ended dropped its errors: when it failed the
    page kept the jobs, documents and counts of before the job, and the user was never told."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "job-unrefreshed"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    open_page(page, server, "/ui/collections/job-unrefreshed")
    big = b"# Big\n\n" + b"Words to embed later. " * (300 * 1024 // 22)  # over 256 KiB: a job
    page.set_input_files(
        "#file-input",
        files=[{"name": "big.md", "mimeType": "text/markdown", "buffer": big}],
    )
    line = page.locator("#upload-list li[data-file='big.md'] .outcome")
    expect(line).to_have_text(re.compile(r"^queued as job \d+$"), timeout=60_000)
    # the jobs listing fails from now on; the job's own state (/v1/jobs/<id>) is still read
    page.route(
        re.compile(r".*/v1/jobs\?.*"),
        lambda route: route.fulfill(
            status=503, content_type=PROBLEM, body='{"title": "Unavailable", "code": "not_ready"}'
        ),
    )
    worker = threading.Thread(
        target=run_worker, args=(settings,), kwargs={"burst": True, "signals": False}
    )
    worker.start()
    worker.join(timeout=120)
    expect(line).to_have_text(re.compile(r" in job \d+: \d+ chunks$"), timeout=60_000)
    error = page.locator("#page-error")
    expect(error).to_contain_text(re.compile(r"^job \d+ has ended .* could not be refreshed"))
    expect(error).to_contain_text("(not_ready)")


def test_only_the_latest_search_is_shown_and_a_failed_one_clears_the_results(
    page: Page, server: Server, handbook: str
) -> None:
    """A slow answer to an earlier search that arrived after a newer one's replaced the
    newer results; a failed search left the last results under its error."""
    sign_in(page, server)
    open_page(page, server, f"/ui/collections/{handbook}/search")
    held: list[Route] = []

    def hold_first(route: Route) -> None:
        if not held:
            held.append(route)  # the first search's answer comes late
        else:
            route.continue_()

    page.route("**/search", hold_first)
    page.fill("#q", "take a base backup and copy it off the host")
    page.click("#search-submit")
    page.fill("#q", "create an API key and shadow an on-call shift")
    page.click("#search-submit")
    first = page.locator("#hits-body tr").first
    expect(first).to_contain_text("Onboarding guide")
    assert len(held) == 1
    with contextlib.suppress(PlaywrightError):  # the page aborted it: it cannot arrive
        held[0].continue_()  # the first, superseded search's answer arrives now
    page.wait_for_timeout(1500)
    expect(first).to_contain_text("Onboarding guide")
    page.unroute("**/search")
    page.route(
        "**/search",
        lambda route: route.fulfill(
            status=503, content_type=PROBLEM, body='{"title": "Unavailable", "code": "not_ready"}'
        ),
    )
    page.click("#search-submit")
    expect(page.locator("#search-error")).to_contain_text("(not_ready)")
    expect(page.locator("#hits-table")).to_be_hidden()
    expect(page.locator("#search-summary")).to_have_text("")


# Markup a stored text may hold, each setting a flag (or alerting) should it ever be parsed
HOSTILE_TITLE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
HOSTILE_HEADING = '"><svg onload=alert(3)>'
HOSTILE_KEY = '"><svg onload=alert(4)>'
HOSTILE_VALUE = "</script><script>window.__pwned = 5</script>"
HOSTILE_ID = "javascript:alert(6)"
HOSTILE_FILE = "<img src=x onerror=alert(10)>.txt"
HOSTILE_KEY_NAME = "<svg onload=alert(11)>"
# records every Content-Security-Policy violation: the policy is the second wall, so an
# injected <img onerror> would run nothing and be seen only here (or as an element)
_CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""
_HTML_SINK = """() => {
  try { document.getElementById("page-error").innerHTML = "<b>made</b>"; return "parsed"; }
  catch (e) { return e.name; }
}"""
_INJECTED = (
    "main img, main svg, main script, main iframe, main object, main [onload], "
    "main [onerror], header img, header svg, a[href^='javascript' i]"
)


def test_hostile_titles_metadata_headings_and_ids_show_as_text_on_every_page(
    page: Page, server: Server, keys: KeyStore
) -> None:
    """Every text a document controls (title, heading, metadata key and value, a text's
    id as its source, an upload's file name echoed in its refusal), and an API key's name,
    on every page that
    shows it: shown literally, no element made of it, no script run, and nothing for the
    Content-Security-Policy to block (the policy would stop an injected handler from
    running, so a missed escape shows as an element or a violation, not as a script)."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        assert c.post("/v1/collections", json={"name": "hostile"}).status_code == 201
        r = c.post(
            "/v1/collections/hostile/documents",
            json={
                "name": "evil.md",
                # escaped: a Markdown heading's own tags are stripped from its text
                "text": f"# {html.escape(HOSTILE_TITLE)}\n\n## {HOSTILE_HEADING}\n\n"
                "Quarantine words in a paragraph [x](javascript:alert(7)).\n",
                "metadata": {HOSTILE_KEY: HOSTILE_VALUE, "url": "javascript:alert(8)"},
            },
        )
        assert r.status_code == 201, r.text
        doc = r.json()["id"]
        r = c.post(
            "/v1/collections/hostile/texts",
            json={"texts": ["Quarantine again."], "ids": [HOSTILE_ID]},
        )
        assert r.status_code in (200, 201), r.text
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    page.add_init_script(_CSP_WATCH)

    def nothing_ran() -> None:
        assert page.locator(_INJECTED).count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("window.__csp") == []
        assert dialogs == []

    sign_in(page, server, keys.create("admin", name=HOSTILE_KEY_NAME).secret)
    expect(page.locator("#whoami")).to_contain_text(HOSTILE_KEY_NAME)
    open_page(page, server, "/ui/collections/hostile")
    expect(page.locator("#documents-body")).to_contain_text(HOSTILE_TITLE)
    expect(page.locator("#documents-body")).to_contain_text(HOSTILE_ID)
    drop_made_by_script(page, [(HOSTILE_FILE, "text/plain", "Quarantine a third time.\n")])
    expect(page.locator("#upload-list")).to_contain_text(HOSTILE_FILE)
    # names allow no markup: the refusal echoes the name, as text
    expect(page.locator("#upload-list .outcome")).to_contain_text(
        f"invalid document name '{HOSTILE_FILE}'"
    )
    nothing_ran()
    # the third wall (Trusted Types): should a later change hand stored text to an HTML
    # sink, the browser throws instead of making the markup
    assert page.evaluate(_HTML_SINK) == "TypeError"
    open_page(page, server, f"/ui/collections/hostile/documents/{doc}")
    facts = page.locator("#document-facts")
    expect(facts).to_contain_text(HOSTILE_TITLE)
    expect(facts).to_contain_text(HOSTILE_KEY.replace('"', '\\"'))  # in the metadata's JSON
    expect(facts).to_contain_text(HOSTILE_VALUE)
    expect(page.locator("#chunks-list")).to_contain_text(HOSTILE_HEADING)
    expect(page.locator("#chunks-list")).to_contain_text("javascript:alert(7)")
    nothing_ran()
    open_page(page, server, "/ui/collections/hostile/search")
    page.fill("#q", "quarantine")
    page.select_option("#mode", "fulltext")
    page.click("#search-submit")
    expect(page.locator("#hits-body tr")).to_have_count(2)
    hits = page.locator("#hits-body")
    expect(hits).to_contain_text(HOSTILE_TITLE)
    expect(hits).to_contain_text(HOSTILE_HEADING)
    expect(hits).to_contain_text(HOSTILE_ID)
    page.click("#fields-details summary")
    expect(page.locator("#fields-body")).to_contain_text(HOSTILE_KEY)
    expect(page.locator("#fields-body")).to_contain_text(HOSTILE_VALUE)
    page.locator("#fields-body button.link", has_text=HOSTILE_KEY).click()
    expect(page.locator("#where")).to_have_value(
        json.dumps({HOSTILE_KEY: HOSTILE_VALUE}, separators=(",", ":"))
    )
    nothing_ran()


LISTING = re.compile(r".*/v1/collections\?limit=")
NOT_READY = '{"title": "Unavailable", "code": "not_ready"}'


def test_behind_a_root_path_every_request_stays_under_it(
    page: Page, settings: Settings, keys: KeyStore
) -> None:
    """Served under /rag by a proxy that strips the prefix (uvicorn's --root-path), the
    console wrote its links and API calls from the host's root: the pages failed, a
    sign-in left the prefix, and the key went to whatever answered /v1/me there. Every
    request now stays under /rag, and a sign-in goes back to the page that asked for it."""
    key = keys.create("admin", name="rooted-admin").secret
    outside: list[str] = []

    def proxy(route: Route) -> None:  # serves /rag/... from the server's /...
        parts = urlsplit(route.request.url)
        if parts.path == "/rag" or parts.path.startswith("/rag/"):
            route.continue_(url=urlunsplit(parts._replace(path=parts.path[4:] or "/")))
        else:  # another site at the host's root
            outside.append(f"{route.request.method} {route.request.url}")
            route.fulfill(status=404, content_type="text/html", body="<h1>not here</h1>")

    with running_server(with_(settings, auth="on"), root_path="/rag") as url:
        auth = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{url}/v1/collections", json={"name": "rooted"}, headers=auth)
        assert r.status_code in (201, 409), r.text
        page.route("**/*", proxy)
        rag = f"{url}/rag"
        page.goto(f"{rag}/ui/collections/rooted")
        expect(page).to_have_url(f"{rag}/ui/login?next={quote('/rag/ui/collections/rooted', '')}")
        page.fill("#api-key", key)
        page.click("#sign-in")
        expect(page).to_have_url(f"{rag}/ui/collections/rooted")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        page.set_input_files(
            "#file-input",
            files=[{"name": "r.md", "mimeType": "text/markdown", "buffer": b"# R\n\nRooted.\n"}],
        )
        expect(page.locator("#upload-list li[data-file='r.md'] .outcome")).to_have_text(
            re.compile("^added: ")
        )
        page.click("#documents-body a", timeout=20_000)
        expect(page).to_have_url(
            re.compile(rf"^{re.escape(rag)}/ui/collections/rooted/documents/\d+$")
        )
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#page-title")).to_have_text("r.md")
        page.click("#nav-models")  # (the redirect of /rag/ui: test_console_pages.py)
        expect(page).to_have_url(f"{rag}/ui/models")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        # a sign-in goes only to a console page of this origin, never to another site
        page.goto(f"{rag}/ui/login?next={quote('//evil.example/rag/ui/models', '')}")
        page.fill("#api-key", key)
        page.click("#sign-in")
        expect(page).to_have_url(f"{rag}/ui/collections")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert outside == []


def test_a_refresh_that_fails_after_a_create_or_delete_says_so(page: Page, server: Server) -> None:
    """The listing after a create or delete had no error handling: the new collection
    missing (creating it again said "already exists") or the deleted one still listed,
    and nothing said why."""
    sign_in(page, server)

    def refuse(route: Route) -> None:
        route.fulfill(status=503, content_type=PROBLEM, body=NOT_READY)

    page.route(LISTING, refuse)
    page.fill("#create-name", "refresh-me")
    page.click("#create-form button[type=submit]")
    error = page.locator("#page-error")
    expect(error).to_have_text(
        "collection refresh-me was created, but the list could not be refreshed: "
        "Unavailable (not_ready); reload the page"
    )
    page.unroute(LISTING)
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.click("tr[data-collection=refresh-me] button.delete")
    page.fill("#delete-confirm", "refresh-me")
    page.route(LISTING, refuse)
    page.click("#delete-submit")
    expect(error).to_have_text(
        "collection refresh-me was deleted, but the list could not be refreshed: "
        "Unavailable (not_ready); reload the page"
    )


def test_a_read_with_no_answer_or_an_answer_not_json_says_so(page: Page, server: Server) -> None:
    """A read that got no answer showed the browser's "Failed to fetch", and a 200 that
    was not JSON (a captive portal's or a proxy's page) "Unexpected token '<'"."""
    sign_in(page, server)
    page.route(
        "**/v1/me",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>Portal</h1>"),
    )
    page.reload()
    error = page.locator("#page-error")
    expect(error).to_have_text(
        re.compile(
            r"^HTTP 200\b.*\(an answer that is not the API's JSON: from a proxy in front of it\?\)$"
        )
    )
    page.unroute("**/v1/me")
    page.route("**/v1/me", lambda route: route.abort())
    page.reload()
    expect(error).to_have_text(
        "no answer from the server (it is down or unreachable); reload to retry"
    )


def test_the_models_form_needs_a_collection_and_a_model(page: Page, server: Server) -> None:
    """With no collection the migrate and rollback buttons were offered and posted to
    /v1/collections//model/...; an empty model box migrated to the box's greyed example."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    assert httpx.post(
        f"{server.url}/v1/collections", json={"name": "to-migrate"}, headers=auth
    ).status_code in (201, 409)
    sign_in(page, server)
    open_page(page, server, "/ui/models")
    asked: list[object] = []

    def stub(route: Route) -> None:  # answered here: nothing is migrated
        asked.append(route.request.post_data_json)
        route.fulfill(
            status=409, content_type=PROBLEM, body='{"title": "Conflict", "detail": "stub"}'
        )

    page.route("**/model/migrate", stub)
    page.select_option("#migrate-collection", "to-migrate")
    page.click("#migrate-start")  # the box empty: not sent
    page.fill("#migrate-to", TARGET)
    page.click("#migrate-start")
    expect(page.locator("#migrate-error")).to_have_text("stub")
    assert asked == [{"to": TARGET}]
    page.route(
        LISTING,
        lambda route: route.fulfill(
            status=200, content_type="application/json", body='{"data": [], "next_cursor": null}'
        ),
    )
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#migrate-none")).to_be_visible()
    for control in ("#migrate-collection", "#migrate-start", "#rollback"):
        expect(page.locator(control)).to_be_hidden()
