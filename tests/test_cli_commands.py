"""The CLI's verbs end to end: ingest and search through a real ``ragstore serve`` on
loopback (``RAGSTORE_URL``) without loading the model in the CLI, then ``collections``,
``documents``, ``--json`` and whole keys on the same database."""

from __future__ import annotations

import io
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from ragstore.auth import KeyStore
from ragstore.cli.output import ProgressLine
from ragstore.db.database import Database
from ragstore.db.inspection import orders_bytes
from tests.conftest import run_cli
from tests.sigterm import sigterm_when

CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def env(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    return {
        **base,
        "RAGSTORE_DATABASE_URL": database_url,
        "RAGSTORE_PROFILE": "test",
        "RAGSTORE_DATA_DIR": str(tmp_path_factory.mktemp("clidata")),
    }


@contextmanager
def _serving(env: dict[str, str]) -> Iterator[str]:
    """``ragstore serve`` in its own process on a free loopback port; its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"ragstore serve did not start: {proc.stderr.read()}"
                    if proc.stderr
                    else "ragstore serve did not start"
                )
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[str]:
    """``ragstore serve`` in its own process on a free loopback port; its base URL."""
    with _serving(env) as url:
        yield url


@pytest.fixture(scope="module")
def rate_limited(env: dict[str, str]) -> Iterator[str]:
    """A server with auth on, 4 requests a minute for each key and uploads of at most
    2048 bytes; its base URL. Shared: each test that uses it makes its own key, so that
    the one's requests take nothing from the other's budget (a server costs a model
    load)."""
    limited = {
        **env,
        "RAGSTORE_AUTH": "on",
        "RAGSTORE_RATE_LIMIT_PER_MINUTE": "4",
        "RAGSTORE_MAX_UPLOAD_BYTES": "2048",
    }
    with _serving(limited) as url:
        yield url


@pytest.fixture(scope="module")
def remote_env(server: str, env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment to go through the server, with an admin key for it."""
    key = KeyStore(Database(env["RAGSTORE_DATABASE_URL"])).create("admin", name="cli-test")
    return {**env, "RAGSTORE_URL": server, "RAGSTORE_API_KEY": key.secret}


@pytest.fixture(scope="module")
def ingested(
    remote_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """Two documents ingested through the server by a CLI process that, with the search
    after it, never imports torch: the server's model did the embedding."""
    folder = tmp_path_factory.mktemp("corpus") / "notes"
    folder.mkdir()
    (folder / "cats.md").write_text("# Cats\n\nCats sleep for most of the day.\n")
    (folder / "tea.md").write_text("# Tea\n\nGreen tea is steeped at 80 degrees.\n")
    code = (
        "import sys\n"
        "from ragstore.cli import main\n"
        f"main(['ingest', {str(folder)!r}, '-c', 'remote', '--json'])\n"
        "print('---')\n"
        "main(['search', 'how long do cats sleep', '-c', 'remote', '--json', '-k', '1'])\n"
        "heavy = [m for m in ('torch', 'sentence_transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=remote_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    report, hits = proc.stdout.split("---\n")
    return {"report": json.loads(report), "hits": json.loads(hits), "stderr": proc.stderr}


def through_server(monkeypatch: pytest.MonkeyPatch, remote_env: dict[str, str]) -> None:
    """The CLI from here on talks to the test server (RAGSTORE_URL and its key)."""
    for key in ("RAGSTORE_URL", "RAGSTORE_API_KEY"):
        monkeypatch.setenv(key, remote_env[key])


@pytest.fixture()
def local(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        if key.startswith("RAGSTORE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAGSTORE_URL", raising=False)
    monkeypatch.delenv("RAGSTORE_API_KEY", raising=False)


def test_ingest_and_search_through_the_server_load_no_model(ingested: dict[str, object]) -> None:
    report = ingested["report"]
    assert isinstance(report, dict)
    assert report["counts"] == {"added": 2} and report["failed"] == []
    hits = ingested["hits"]
    assert isinstance(hits, list)
    assert hits[0]["text"] == "Cats sleep for most of the day."
    assert "collection 'remote' via http://127.0.0.1:" in str(ingested["stderr"])
    assert "HEAVY []" in str(ingested["stderr"])


def test_remote_search_of_an_unknown_collection_is_one_line(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    through_server(monkeypatch, remote_env)
    assert run_cli("search", "x", "-c", "nope", "--mode", "fulltext") == 66
    assert capsys.readouterr().err.strip() == (
        "error[collection_not_found]: collection 'nope' does not exist (collections: "
        "remote); ingest into it to create it"
    )


def test_a_hybrid_option_out_of_range_through_the_server_is_a_usage_error_the_api_a_422(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through a server the server's 422 for ``--rrf-k -3`` (or a weight out of range)
    exited 65; the CLI refuses it before asking, exit 64 as here, and the API itself
    still answers what it answered for the same values."""
    through_server(monkeypatch, remote_env)
    bad = [
        ("--rrf-k", "rrf_k", "-3"),
        ("--rrf-k", "rrf_k", "Infinity"),
        ("--vector-weight", "vector_weight", "-1"),
        ("--fulltext-weight", "fulltext_weight", "NaN"),
        ("--fulltext-weight", "fulltext_weight", "101"),
    ]
    search = f"{remote_env['RAGSTORE_URL']}/v1/collections/remote/search"
    auth = {"Authorization": f"Bearer {remote_env['RAGSTORE_API_KEY']}"}
    for option, field, value in bad:
        typed = value.lower().replace("infinity", "inf")
        assert run_cli("search", "cats", "-c", "remote", option, typed) == 64, option
        err = capsys.readouterr().err
        assert err.startswith(f"error[usage]: Invalid value for '{option}': "), err
        body = f'{{"query": "cats", "{field}": {value}}}'.encode()
        answer = httpx.post(
            search, content=body, headers={**auth, "Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (field, value, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    both = ["--vector-weight", "0", "--fulltext-weight", "0"]
    assert run_cli("search", "cats", "-c", "remote", *both) == 64
    assert "cannot both be 0" in capsys.readouterr().err
    zero = {"query": "cats", "vector_weight": 0, "fulltext_weight": 0}
    assert httpx.post(search, json=zero, headers=auth).status_code == 422


def test_collections_list_show_create_delete(
    ingested: dict[str, object],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli("collections", "list", "--json") == 0
    listed = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert listed["remote"]["documents"] == 2 and listed["remote"]["chunks"] == 4
    assert (
        run_cli(
            "collections", "create", "scratch", "--settings", '{"ts_config": "simple"}', "--json"
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["name"] == "scratch" and created["settings"] == {"ts_config": "simple"}
    assert run_cli("collections", "show", "scratch") == 0
    assert "ts_config" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert run_cli("collections", "delete", "scratch") == 1
    assert capsys.readouterr().err.endswith("[y/N]: \naborted: nothing was changed\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run_cli("collections", "delete", "scratch") == 0
    assert "deleted collection 'scratch' (0 documents)" in capsys.readouterr().err
    assert run_cli("collections", "show", "scratch") == 66


def test_collections_create_refuses_a_model_with_an_empty_revision(
    local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model NAME@`` was read as NAME, the default revision, which was not named."""
    assert run_cli("collections", "create", "no-revision", "--model", "all-MiniLM-L6-v2@") == 65
    assert "model 'all-MiniLM-L6-v2@' has an empty revision after '@'" in capsys.readouterr().err
    assert run_cli("collections", "show", "no-revision") == 66


def test_collections_fields_locally_and_through_the_server(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore collections fields``: a table here, the same JSON here and through the
    server, and a missing collection exits 66."""
    assert run_cli("collections", "fields", "remote") == 0
    out, err = capsys.readouterr()
    assert "created_at" in out and "timestamp" in out and "carried by" in out
    assert "metadata read from 2 documents" in err
    assert run_cli("collections", "fields", "remote", "--json") == 0
    here = json.loads(capsys.readouterr().out)
    assert here["sampled"]["documents"] == 2 and here["metadata"], here
    through_server(monkeypatch, remote_env)
    assert run_cli("collections", "fields", "remote", "--json") == 0
    assert json.loads(capsys.readouterr().out) == here
    assert run_cli("collections", "fields", "nope") == 66


def test_collections_fields_says_which_paths_no_filter_can_name(
    local: None, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A metadata key no filter can name (an empty one) is in no row of the table, and
    only ``--json`` said so: the table's summary now counts it, with an example and why.
    A key with a dot, once left out the same way, is listed by its escaped field. Writes
    refuse an empty key now, so the test stores it as data written before that rule."""
    doc = tmp_path / "release.md"
    doc.write_text("# Release\n\nThe release notes of version one point two.\n")
    assert run_cli("ingest", str(doc), "-c", "dotted-keys", "--meta", "v1.2=yes") == 0
    with psycopg.connect(env["RAGSTORE_DATABASE_URL"]) as conn:
        conn.execute(
            'UPDATE documents d SET metadata = d.metadata || \'{"odd": {"": 1}}\'::jsonb'
            " FROM collections c WHERE d.collection_id = c.id AND c.name = 'dotted-keys'"
        )
    capsys.readouterr()
    assert run_cli("collections", "fields", "dotted-keys") == 0
    out, err = capsys.readouterr()
    assert "v1\\.2" in out and "odd." not in out
    assert '1 metadata path left out, which no filter can name (e.g. "odd.")' in err, err
    assert "rename the metadata key" in err


def test_collections_fields_lists_a_path_only_chunks_carry(
    local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Markdown table's chunk carries metadata of its own (rows, columns) that its
    document does not: the table lists those paths as carried by the chunk alone, with
    their kind and value, and ``--json`` counts them on chunks, none on documents."""
    doc = tmp_path / "hours.md"
    doc.write_text(
        "# Hours\n\nHow long each cat sleeps.\n\n| cat | hours |\n|---|---|\n| tabby | 16 |\n"
    )
    assert run_cli("ingest", str(doc), "-c", "chunk-fields") == 0
    capsys.readouterr()
    assert run_cli("collections", "fields", "chunk-fields", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {m["field"]: m for m in data["metadata"]}
    assert {k: by_name["rows"][k] for k in ("field", "types", "documents", "chunks")} == {
        "field": "rows",
        "types": ["number"],
        "documents": 0,
        "chunks": 1,
    }
    assert by_name["columns"]["examples"] == [2] and by_name["columns"]["documents"] == 0
    assert by_name["filename"]["documents"] == 1 and by_name["filename"]["chunks"] == 0
    assert data["unfilterable"]["count"] == 0
    assert run_cli("collections", "fields", "chunk-fields") == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
    assert rows["columns"] == ["number", "1", "chunk", "2"], out
    assert rows["filename"][:3] == ["string", "1", "document"], out
    assert err == "metadata read from 1 document and 3 chunks\n", err


def _sources(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return sorted(Path(h["source"]).name for h in json.loads(capsys.readouterr().out))


def test_meta_json_stores_typed_values_a_range_finds_here_and_through_the_server(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--meta year=2024`` stores the string "2024", which a numeric range never finds;
    ``--meta-json year=2024`` stores the number (and ``draft=true`` the boolean), here
    and through the server."""
    for name in ("typed", "text", "remote"):
        (tmp_path / f"{name}.md").write_text(f"# Report {name}\n\nThe yearly report.\n")
    typed = ["--meta-json", "year=2024", "--meta-json", "draft=true", "--meta", "team=a"]
    assert run_cli("ingest", str(tmp_path / "typed.md"), "-c", "typed-meta", *typed) == 0
    assert (
        run_cli("ingest", str(tmp_path / "text.md"), "-c", "typed-meta", "--meta", "year=2023") == 0
    )
    capsys.readouterr()
    assert (
        run_cli("documents", "show", str(tmp_path / "typed.md"), "-c", "typed-meta", "--json") == 0
    )
    meta = json.loads(capsys.readouterr().out)["metadata"]
    assert (meta["year"], meta["draft"], meta["team"]) == (2024, True, "a")
    search = ["search", "yearly report", "-c", "typed-meta", "--json", "--mode", "fulltext"]
    assert run_cli(*search, "--where", '{"year": {"$gte": 2020}}') == 0
    assert _sources(capsys) == ["typed.md"]
    assert run_cli(*search, "--where", '{"draft": true}') == 0
    assert _sources(capsys) == ["typed.md"]
    assert run_cli(*search, "--where", '{"year": "2023"}') == 0
    assert _sources(capsys) == ["text.md"]

    through_server(monkeypatch, remote_env)
    remote = ["--meta-json", "year=2025"]
    assert run_cli("ingest", str(tmp_path / "remote.md"), "-c", "typed-meta", *remote) == 0
    capsys.readouterr()
    assert run_cli(*search, "--where", '{"year": {"$gt": 2024}}') == 0
    assert _sources(capsys) == ["remote.md"]


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (["--meta-json", "year=20x4"], "the value of 'year' is not JSON (Extra data at"),
        (["--meta-json", "n=NaN"], "the value of 'n' holds a non-finite number (nan)"),
        (["--meta", "year=1", "--meta-json", "year=2"], "the key 'year' is given by --meta too"),
        # ``--meta`` alike: a repeated key kept the last value silently, an item without
        # ``=`` was exit 65 (invalid_input) where ``--meta-json``'s was a usage error
        (["--meta", "team=a", "--meta", "team =b"], "the key 'team' is given twice"),
        (["--meta", "team"], "'team' is not KEY=VALUE (e.g. --meta team=search)"),
    ],
)
def test_meta_json_that_is_not_json_is_one_usage_line_and_stores_nothing(
    flags: list[str],
    why: str,
    local: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nSome text.\n")
    assert run_cli("ingest", str(doc), "-c", "bad-meta-json", *flags) == 64
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    option = "--meta-json" if "--meta-json" in flags else "--meta"
    assert err.startswith(f"error[usage]: Invalid value for '{option}': {why}"), err
    assert run_cli("collections", "show", "bad-meta-json") == 66


def test_a_metadata_key_no_filter_can_name_is_one_usage_line_and_stores_nothing(
    local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key longer than a filter path may be was stored (one of 1 MB too)."""
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nSome text.\n")
    assert run_cli("ingest", str(doc), "-c", "long-key", "--meta", "k" * 300 + "=x") == 64
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert "the metadata holds a key of 300 characters ('kkk" in err, err
    assert "at most 256 characters, the longest a search filter can name" in err
    assert run_cli("collections", "show", "long-key") == 66
    capsys.readouterr()
    # keys of 200 and 100 characters: their path (301 joined by dots) no filter can name
    meta = "a" * 200 + "=" + json.dumps({"b" * 100: 1})
    assert run_cli("ingest", str(doc), "-c", "long-key", "--meta-json", meta) == 64
    err = capsys.readouterr().err
    assert "the metadata holds a key path of 301 characters ('aaa" in err, err
    assert run_cli("collections", "show", "long-key") == 66


def test_an_empty_or_escaped_long_metadata_key_is_one_usage_line_and_stores_nothing(
    local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--meta-json 'a={"": 1}'`` stored a key no filter can name (a filter refuses an
    empty key), and so did ``--meta`` with a key of a dot and 200 more, measured unescaped
    (201 characters) where a filter names it escaped (401)."""
    doc = tmp_path / "a.md"
    doc.write_text("# A\n\nSome text.\n")
    cases = {
        "an empty key at 'a'; a search filter cannot name an empty key": [
            "--meta-json",
            'a={"": 1}',
        ],
        "a key path of 401 characters ('v\\\\.": ["--meta", "v" + "." * 200 + "=x"],
    }
    for says, flags in cases.items():
        assert run_cli("ingest", str(doc), "-c", "odd-key", *flags) == 64
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert f"the metadata holds {says}" in err, err
        assert run_cli("collections", "show", "odd-key") == 66
        capsys.readouterr()


def test_search_with_context_through_the_server_prints_it(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    through_server(monkeypatch, remote_env)
    assert run_cli("search", "green tea", "-c", "remote", "-k", "1", "--context", "1") == 0
    out = capsys.readouterr().out
    assert "tea.md" in out and "context of hit 1 (1):" in out
    assert ">> [" in out and "Green tea is steeped at 80 degrees." in out


def test_search_json_has_the_same_keys_here_and_through_the_server(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Locally ``--json`` printed the hits' dataclass fields: three keys fewer than the
    API's (context, context_mode, merged_hits), null through a server."""
    searches = [
        ["search", "green tea", "-c", "remote", "-k", "2", "--mode", "fulltext", "--json"],
        ["search", "green tea", "-c", "remote", "-k", "1", "--json", "--context", "1"],
    ]
    here = []
    for args in searches:
        assert run_cli(*args) == 0
        here.append(json.loads(capsys.readouterr().out))
    through_server(monkeypatch, remote_env)
    for args, printed in zip(searches, here, strict=True):
        assert run_cli(*args) == 0
        there = json.loads(capsys.readouterr().out)
        assert [list(h) for h in there] == [list(h) for h in printed], args
        assert [h["chunk_id"] for h in there] == [h["chunk_id"] for h in printed]
        assert [h["context"] for h in there] == [h["context"] for h in printed]
    assert here[0][0]["context"] is None and here[1][0]["context"]


def test_collections_list_through_the_server(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    through_server(monkeypatch, remote_env)
    assert run_cli("collections", "list", "--json") == 0
    assert "remote" in {c["name"] for c in json.loads(capsys.readouterr().out)}


def test_documents_list_next_page_hint_keeps_the_filter_and_page_size(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``more:`` line of a full page is the command for the next page of the same
    listing: it said only ``--after ID``, so run as printed it went on with every
    document, not those under ``--source-prefix``, in pages of 100. It is printed only
    when a document follows: a page exactly full printed one that listed nothing."""
    assert run_cli("documents", "list", "-c", "remote", "--json") == 0
    cats = next(d for d in json.loads(capsys.readouterr().out) if d["source"].endswith("cats.md"))
    folder = cats["source"].removesuffix("cats.md")  # both documents, cats.md first
    listing = ("documents", "list", "-c", "remote", "--source-prefix", folder)
    assert run_cli(*listing, "--limit", "1") == 0
    captured = capsys.readouterr()
    assert "cats.md" in captured.out
    hint = captured.err.strip()
    assert hint.startswith("more: ragstore documents list "), hint
    args = shlex.split(hint.removeprefix("more: ragstore "))
    assert args[args.index("--limit") + 1] == "1"
    assert args[args.index("--source-prefix") + 1] == folder
    assert run_cli(*args) == 0
    captured = capsys.readouterr()  # the one document left, and no line to an empty page
    assert "tea.md" in captured.out and "cats.md" not in captured.out
    assert "more:" not in captured.err
    assert run_cli(*listing, "--limit", "2") == 0
    captured = capsys.readouterr()
    assert "tea.md" in captured.out and "more:" not in captured.err


def _next_page(capsys: pytest.CaptureFixture[str]) -> tuple[list[int], list[str] | None]:
    """The ids a ``documents list --json`` printed and its ``more:`` line's arguments."""
    captured = capsys.readouterr()
    hint = captured.err.strip()
    assert not hint or hint.startswith("more: ragstore documents list "), hint
    more = shlex.split(hint.removeprefix("more: ragstore ")) if hint else None
    return [d["id"] for d in json.loads(captured.out)], more


def test_documents_list_cursor_is_refused_for_a_collection_made_again(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ``more:`` line said ``--after LAST_ID``: run after the collection was deleted
    and made again under its name, it went on into the new collection's documents (their
    ids follow the old ones') as if they followed. It gives the page's ``--cursor`` now,
    which carries the collection's id; ``--after ID`` stays a plain id."""
    from ragstore import Client

    def fill(prefix: str) -> None:
        with Client(remote_env["RAGSTORE_URL"], api_key=remote_env["RAGSTORE_API_KEY"]) as c:
            for i in range(3):
                c.add_document("paged-remade", f"{prefix}{i}.txt", f"{prefix} note {i}")

    fill("old")
    listing = ("documents", "list", "-c", "paged-remade", "--limit", "1")
    assert run_cli(*listing, "--json") == 0  # each page once, by the more: lines
    seen, more = _next_page(capsys)
    stale = more
    while more is not None:
        assert "--cursor" in more and "--after" not in more, more
        assert run_cli(*more, "--json") == 0
        ids, more = _next_page(capsys)
        seen += ids
    assert run_cli("documents", "list", "-c", "paged-remade", "--json") == 0
    assert seen == _next_page(capsys)[0] and len(seen) == 3
    assert stale is not None
    run_cli("collections", "delete", "paged-remade", "--yes")
    fill("new")
    capsys.readouterr()
    for remote in (False, True):
        if remote:
            through_server(monkeypatch, remote_env)
        assert run_cli(*stale) == 65, remote
        err = capsys.readouterr().err
        assert err.startswith("error[cursor_stale]: ") and err.count("\n") == 1, err
        assert "list again from the first page" in err
    # --after is a plain id, unchecked: the ids above it in the collection the name holds
    assert run_cli(*listing, "--after", str(seen[0]), "--json") == 0
    ids, _ = _next_page(capsys)
    assert ids and all(i > seen[0] for i in ids), ids
    token = stale[stale.index("--cursor") + 1]
    assert run_cli(*listing, "--after", "1", "--cursor", token) == 64
    assert "give one" in capsys.readouterr().err
    assert run_cli(*listing, "--cursor", "not-a-cursor") == 64
    err = capsys.readouterr().err
    assert err.startswith("error[usage]: Invalid value for '--cursor'"), err
    run_cli("collections", "delete", "paged-remade", "--yes")


def test_documents_list_show_delete(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("documents", "list", "-c", "remote", "--json") == 0
    docs = json.loads(capsys.readouterr().out)
    assert [Path(d["source"]).name for d in docs] == ["cats.md", "tea.md"]
    assert run_cli("documents", "show", "notes/tea.md", "-c", "remote", "--json") == 0
    tea = json.loads(capsys.readouterr().out)
    assert tea["id"] == docs[1]["id"] and tea["title"] == "Tea"
    capsys.readouterr()
    args = ["documents", "delete", str(tea["id"]), "-c", "remote", "--yes", "--json"]
    assert run_cli(*args) == 0
    # the upload's name, as through a server (it printed the server's own path here)
    deleted = {"deleted": tea["id"], "source": "notes/tea.md", "collection": "remote"}
    assert json.loads(capsys.readouterr().out) == deleted
    assert run_cli("documents", "list", "-c", "remote") == 0
    out = capsys.readouterr().out
    assert "cats.md" in out and "tea.md" not in out
    assert run_cli("documents", "show", "missing.md", "-c", "remote") == 66
    assert capsys.readouterr().err.startswith(
        "error[document_not_found]: document 'missing.md' is not in collection 'remote'"
    )


def test_documents_show_and_delete_take_a_name_or_source_through_the_server(
    ingested: dict[str, object],
    env: dict[str, str],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README: ``ragstore documents show|delete ID-or-PATH``. Locally a path named the
    document; through ``RAGSTORE_URL`` only an id did ("named by its id, not ..."), so a
    script that worked here broke against a server. Now a relative path is the name it
    was uploaded under (NFC, as stored), an absolute one its source, there as here; and
    the Client finds a document by name as the Store does."""
    from ragstore import Client
    from ragstore.errors import DocumentNotFoundError
    from ragstore.store import Store

    local_file = tmp_path / "local.md"
    local_file.write_text("# Local\n\nIngested from this disk.\n")
    assert run_cli("ingest", str(local_file), "-c", "byname") == 0  # its absolute path
    folder = tmp_path / "byname"
    folder.mkdir()
    (folder / "caf\u00e9.md").write_text("# Cafe\n\nBeans are roasted.\n")
    (folder / "tea.md").write_text("# Tea\n\nGreen tea is steeped.\n")
    (folder / "milk.md").write_text("# Milk\n\nMilk is poured.\n")
    through_server(monkeypatch, remote_env)
    assert run_cli("ingest", str(folder), "-c", "byname") == 0  # uploaded: byname/...
    capsys.readouterr()

    def show(document: str) -> dict[str, object]:
        assert run_cli("documents", "show", document, "-c", "byname", "--json") == 0, document
        return dict(json.loads(capsys.readouterr().out))

    tea = show("byname/tea.md")
    assert tea["name"] == "byname/tea.md" and tea["title"] == "Tea"
    assert show("byname/cafe\u0301.md")["name"] == "byname/caf\u00e9.md"  # typed NFD
    source = os.path.realpath(local_file)
    mine = show(source)
    assert mine["source"] == source and mine["title"] == "Local"
    assert show(str(tea["id"])) == tea
    assert run_cli("documents", "show", "byname/missing.md", "-c", "byname") == 66
    err = capsys.readouterr().err
    assert (
        err.startswith(
            "error[document_not_found]: document 'byname/missing.md' is not in collection 'byname'"
        )
        and err.count("\n") == 1
    ), err
    # a file ingested from disk, named relative to the current folder as works locally:
    # through the server that is an upload's name, and the error says so
    monkeypatch.chdir(tmp_path)
    assert run_cli("documents", "show", "local.md", "-c", "byname") == 66
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error[document_not_found]: document 'local.md' is not in "), err
    assert "through a server (RAGSTORE_URL) a relative path names an upload" in err, err
    assert "by its absolute path or its id" in err, err
    assert run_cli("documents", "delete", "../etc/passwd", "-c", "byname", "--yes") == 66
    assert "document '../etc/passwd' is not in" in capsys.readouterr().err

    # the Client and the Store find the same documents by the same names
    with Client(remote_env["RAGSTORE_URL"], api_key=remote_env["RAGSTORE_API_KEY"]) as client:
        assert client.find_document("byname", "byname/tea.md") == tea
        assert client.find_document("byname", source)["id"] == mine["id"]
        with pytest.raises(DocumentNotFoundError, match=r"'byname/none\.md' is not in"):
            client.find_document("byname", "byname/none.md")
    with Store(env["RAGSTORE_DATABASE_URL"], data_dir=env["RAGSTORE_DATA_DIR"]) as store:
        assert store.find_document("byname", "byname/tea.md")["id"] == tea["id"]
        assert store.find_document("byname", source)["id"] == mine["id"]
        with pytest.raises(DocumentNotFoundError, match=r"'byname/none\.md' is not in"):
            store.find_document("byname", "byname/none.md")

    milk = show("byname/milk.md")
    for document in ("byname/tea.md", source, str(milk["id"])):
        assert run_cli("documents", "delete", document, "-c", "byname", "--yes", "--json") == 0
        assert "deleted" in json.loads(capsys.readouterr().out)
    assert run_cli("documents", "show", "byname/tea.md", "-c", "byname") == 66
    capsys.readouterr()
    assert run_cli("documents", "list", "-c", "byname", "--json") == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["byname/caf\u00e9.md"]


def test_documents_list_says_a_relative_source_prefix_names_uploads_here(
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore ingest docs/`` stores each file under its absolute path, and a relative
    ``--source-prefix`` names uploaded documents, so ``documents list --source-prefix
    docs/api/`` (the README's example) answered a bare "no documents in 'notes'", as if
    the collection were empty. It now says what the prefix was matched against and the
    command that lists the files ingested from there."""
    (tmp_path / "docs" / "api").mkdir(parents=True)
    (tmp_path / "docs" / "api" / "guide.md").write_text("# Guide\n\nThe API guide.\n")
    monkeypatch.chdir(tmp_path)
    assert run_cli("ingest", "docs/", "-c", "prefixes") == 0
    capsys.readouterr()
    assert run_cli("documents", "list", "-c", "prefixes", "--source-prefix", "docs/api/") == 0
    captured = capsys.readouterr()
    assert captured.out == "no documents in 'prefixes' whose source starts with 'docs/api/'\n"
    absolute = f"{os.path.realpath(tmp_path)}/docs/api/"
    assert captured.err.startswith("a relative --source-prefix names uploaded documents")
    hint = captured.err.rstrip("\n").split(": ", 1)[1]
    assert hint == shlex.join(
        ["ragstore", "documents", "list", "-c", "prefixes", "--source-prefix", absolute]
    )
    # the command it names finds the file
    assert run_cli(*shlex.split(hint)[1:]) == 0
    assert "guide.md" in capsys.readouterr().out


def test_documents_named_oddly_are_one_line(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Non-ASCII digits are no id ('²' raised a traceback, '٣' named document 3), a path
    that is not UTF-8 is no stored source (a traceback from the driver), and --limit and
    --after stay within what the API takes, locally as through a server."""
    for name in ("\u00b2", "\u0663", os.fsdecode(b"/tmp/\xffname.md")):
        for args in (["show"], ["delete", "--yes"]):
            capsys.readouterr()
            assert run_cli("documents", *args, name, "-c", "remote") == 66, name
            err = capsys.readouterr().err
            assert (
                err.startswith("error[document_not_found]: document ") and err.count("\n") == 1
            ), err
    assert run_cli("documents", "list", "-c", "remote", "--limit", "501") == 64
    assert "error[usage]: Invalid value for '--limit'" in capsys.readouterr().err
    assert run_cli("documents", "list", "-c", "remote", "--after", str(10**18)) == 64
    assert "error[usage]: Invalid value for '--after'" in capsys.readouterr().err


def test_documents_and_collections_print_the_same_json_here_and_through_the_server(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Locally these printed the catalog's rows: no ``name``, ``collection`` or
    ``status``, and dates as ``2026-12-05 13:20:31+00:00``; through a server the API's."""
    assert run_cli("documents", "list", "-c", "remote", "--json") == 0
    first = json.loads(capsys.readouterr().out)[0]["id"]
    commands = [
        ["documents", "list", "-c", "remote", "--json"],
        ["documents", "show", str(first), "-c", "remote", "--json"],
        ["collections", "show", "remote", "--json"],
        ["documents", "list", "-c", "remote"],
    ]
    here = []
    for args in commands:
        assert run_cli(*args) == 0
        here.append(capsys.readouterr().out)
    through_server(monkeypatch, remote_env)
    for args, printed in zip(commands, here, strict=True):
        assert run_cli(*args) == 0
        assert capsys.readouterr().out == printed, args
    # an upload's source and metadata path are its name on both (the Store answered the
    # server's own <data dir>/uploads/... path, the server the name)
    shown = json.loads(here[1])
    assert shown["name"] == shown["source"] == shown["metadata"]["path"] == "notes/cats.md"
    assert "notes/cats.md" in here[3]


def test_models_list_prints_whole_keys_and_checksums(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("models", "list", "--json") == 0
    models = json.loads(capsys.readouterr().out)
    assert run_cli("models", "list") == 0
    table = capsys.readouterr().out
    for m in models:
        assert m["key"] in table and m["checksum"] in table


def test_an_ingest_through_the_server_of_only_missing_paths_exits_66(
    ingested: dict[str, object],
    remote_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As locally: ``path_not_found``'s 66 when every path given is missing (it was 1)."""
    through_server(monkeypatch, remote_env)
    assert run_cli("ingest", str(tmp_path / "missing-dir"), "-c", "remote") == 66
    assert "[path_not_found]" in capsys.readouterr().err


def test_models_status_names_its_chunk_set_column(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The column holding ``live`` or ``own`` was headed ``chunks``, read as a count."""
    assert run_cli("models", "status", "-c", "remote") == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "chunk set" in header and " chunks " not in f" {header} ", header
    assert row.split()[4] == "live", row


def test_documents_show_prints_a_missing_value_as_a_dash(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value that is not there printed as Python's ``None`` (``status None``)."""
    assert run_cli("documents", "show", "notes/cats.md", "-c", "remote", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    empty = [k for k, v in shown.items() if v is None]
    assert empty, shown  # else the test could not fail
    assert run_cli("documents", "show", "notes/cats.md", "-c", "remote") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "None" not in " ".join(lines)
    for key in empty:
        assert [line.split() for line in lines if line.split()[0] == key] == [[key, "-"]]


def test_models_status_takes_c_and_still_the_positional_with_a_deprecation(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("models", "status", "-c", "remote", "--json") == 0
    spaces = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in spaces] == ["active"]
    assert run_cli("models", "status", "remote", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == spaces
    assert captured.err == (
        "deprecated: `ragstore models status remote` still works but "
        "will be removed; use `ragstore models status -c remote`\n"
    )


def test_json_on_db_status_and_keys(
    ingested: dict[str, object], local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("db", "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "current" and status["current"] == status["head"]
    # the embedded server collates in C: string ranges order bytes (docs/operations/install.md)
    assert (status["collation"], status["collation_byte_order"]) == ("C", True)
    assert run_cli("keys", "create", "--scope", "read", "--name", "ci", "--json") == 0
    key = json.loads(capsys.readouterr().out)
    assert key["scope"] == "read" and key["secret"].startswith("rsk_")
    assert run_cli("keys", "list", "--json") == 0
    assert key["id"] in [k["id"] for k in json.loads(capsys.readouterr().out)]
    assert run_cli("keys", "revoke", key["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["revoked"] is True


def test_keys_refuse_to_act_on_the_local_database_with_a_server_url(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With RAGSTORE_URL set, ``keys create`` wrote whatever database the local settings
    named and printed a key the server at that URL did not know; now it says so."""
    through_server(monkeypatch, remote_env)
    db = Database(remote_env["RAGSTORE_DATABASE_URL"])
    try:
        listed = KeyStore(db).list()
        before = [k.key_id for k in listed]
        for args in (
            ["keys", "create", "--scope", "admin", "--name", "remote?"],
            ["keys", "list"],
            ["keys", "revoke", before[0]],
        ):
            assert run_cli(*args) == 78, args
            out, err = capsys.readouterr()
            assert out == "" and "RAGSTORE_URL is set" in err, args
            assert f"RAGSTORE_URL= ragstore keys {args[1]} ..." in err
        keys = KeyStore(db).list()
        assert [(k.key_id, k.revoked_at) for k in keys] == [
            (k.key_id, k.revoked_at) for k in listed
        ]
    finally:
        db.close()
    monkeypatch.setenv("RAGSTORE_URL", "")  # the way out the message gives
    assert run_cli("keys", "list", "--json") == 0
    assert [k["id"] for k in json.loads(capsys.readouterr().out)] == before


def test_a_password_in_ragstore_url_is_never_printed(
    remote_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RAGSTORE_URL may carry basic-auth credentials for a proxy before the server
    (``https://user:secret@proxy/``); the URL was printed whole in errors and summaries."""
    from ragstore.urls import shown_url

    assert shown_url("https://ops:s3cret@proxy.example/rag") == "https://ops:***@proxy.example/rag"
    assert shown_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    # the host starts after the last @, as httpx reads it: a password's own @ is hidden
    assert shown_url("http://ops:s3@cret@proxy.example/") == "http://ops:***@proxy.example/"
    assert shown_url(httpx.URL("http://ops:s3cret@[::1]:8/")) == "http://ops:***@[::1]:8/"
    through_server(monkeypatch, remote_env)
    url = remote_env["RAGSTORE_URL"].replace("://", "://ops:s3cret@", 1)
    monkeypatch.setenv("RAGSTORE_URL", url)
    assert run_cli("keys", "list") == 78  # refused: it works on the database itself
    err = capsys.readouterr().err
    assert "s3cret" not in err and "ops:***@" in err
    monkeypatch.setenv("RAGSTORE_URL", url.rstrip("/") + "/not-ragstore/")
    assert run_cli("search", "anything", "-c", "nowhere") != 0  # the server's 404 page
    err = capsys.readouterr().err
    assert "s3cret" not in err, err


# Each command that works on the database itself, with RAGSTORE_URL set: (argv, the
# command as the refusal names it). They acted on whatever database the local settings
# named (a fresh embedded one, initialised for the occasion) and reported success there.
_REFUSED: list[tuple[list[str], str]] = [
    (["models", "list"], "models list"),
    (["models", "show", "all-MiniLM-L6-v2"], "models show"),
    (["models", "add", "/nowhere/model", "--name", "m"], "models add"),
    (["models", "migrate", "-c", "remote", "--to", "m"], "models migrate"),
    (["models", "prune", "-c", "remote", "--yes"], "models prune"),
    (["models", "cancel", "-c", "remote"], "models cancel"),
    (["models", "status", "-c", "remote"], "models status"),
    (["import", "/nowhere/v.jsonl", "--model", "all-MiniLM-L6-v2"], "import"),
    (["db", "status"], "db status"),
    (["db", "upgrade", "--no-backup"], "db upgrade"),
    (["db", "upgrade", "--sql"], "db upgrade --sql"),
    (["db", "downgrade", "--to", "base", "--yes", "--no-backup"], "db downgrade"),
    (["db", "check"], "db check"),
    (["db", "stop"], "db stop"),
    (["backup", "/nowhere/b.dump"], "backup"),
    (["restore", "/nowhere/b.dump", "--yes"], "restore"),
    (["eval", "/nowhere/beir"], "eval"),
    (["eval-sections", "/nowhere/set"], "eval-sections"),
    (["demo"], "demo"),
    (["mcp"], "mcp"),
    (["keys", "create", "--scope", "admin"], "keys create"),
    (["keys", "list"], "keys list"),
    (["keys", "revoke", "nokey"], "keys revoke"),
]


def test_with_a_server_url_each_command_goes_through_it_or_refuses_leaving_nothing_here(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """With RAGSTORE_URL set only search, ingest, collections and documents went to the
    server: `models`, `db`, `backup`, `import`, `eval`, `demo`, `mcp`... opened the
    database of the local settings instead, here a fresh embedded one in an empty data
    dir, and reported success on it. Now a command the API does too goes through the
    server, every other one refuses (exit 78) before anything local is created, and the
    commands that only read this machine's settings still answer."""
    server_db = Database(remote_env["RAGSTORE_DATABASE_URL"])
    through_server(monkeypatch, remote_env)
    monkeypatch.delenv("RAGSTORE_DATABASE_URL")
    data_dir = tmp_path / "data"
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(data_dir))
    url = remote_env["RAGSTORE_URL"]
    try:
        for args, command in _REFUSED:
            assert run_cli(*args) == 78, args
            out, err = capsys.readouterr()
            assert out == "", args
            assert f"`ragstore {command}` works on the database itself" in err, args
            assert f"RAGSTORE_URL is set ({url})" in err, args
            assert f"`RAGSTORE_URL= ragstore {command} ...`" in err, args
            assert not data_dir.exists(), args

        # through the server: its database changes, nothing is made here
        assert run_cli("db", "index-field", "rating", "--type", "number", "--json") == 0
        assert json.loads(capsys.readouterr().out) == {
            "field": "rating",
            "type": "number",
            "indexed": True,
            "changed": True,
        }
        from ragstore.db import field_indexes

        assert ("rating", "number") in [(i.field, i.kind) for i in field_indexes.listed(server_db)]
        assert run_cli("db", "index-fields", "--json") == 0
        assert {"field": "rating", "type": "number"} in json.loads(capsys.readouterr().out)
        assert run_cli("db", "index-fields") == 0
        assert "rating\tnumber" in capsys.readouterr().out
        assert run_cli("db", "index-field", "rating", "--type", "number", "--drop") == 0
        assert capsys.readouterr().out == "dropped: number field 'rating'\n"
        assert ("rating", "number") not in [
            (i.field, i.kind) for i in field_indexes.listed(server_db)
        ]
        assert run_cli("collections", "create", "rollback-remote") == 0
        capsys.readouterr()
        # the server's own answer: it has the collection, with no model to roll back to
        assert run_cli("models", "rollback", "-c", "rollback-remote") == 70
        err = capsys.readouterr().err
        assert "error[model_migration_state]" in err, err
        assert "'rollback-remote' has no previous model to roll back to" in err, err
        assert not data_dir.exists()

        # this machine's settings, and what needs no database, still answer
        assert run_cli("config", "show", "--json") == 0
        assert json.loads(capsys.readouterr().out)["url"] == url
        # the SQL of an upgrade from a revision given (no database; without --from it is
        # refused above: it starts at the database's revision, which this machine's is not)
        assert run_cli("db", "upgrade", "--sql", "--from", "base") == 0
        assert "CREATE TABLE" in capsys.readouterr().out
        assert not data_dir.exists()
    finally:
        server_db.close()
        run_cli("collections", "delete", "rollback-remote", "--yes")
        capsys.readouterr()


def test_progress_line_every_n_items_or_seconds_after_a_quiet_start() -> None:
    lines: list[str] = []
    now = [0.0]
    line = ProgressLine(
        "ingesting", "files", every=3, every_s=10.0, write=lines.append, clock=lambda: now[0]
    )
    for done in range(1, 7):
        line.update(done, 100)
    assert lines == []  # work that ends within 10 s prints nothing
    now[0] = 10.0
    for done in range(7, 13):
        line.update(done, 100, "x chunks")
    now[0] = 25.0
    line.update(13, None)
    assert lines == [
        "ingesting: 7/100 files, x chunks (10s)",
        "ingesting: 10/100 files, x chunks (10s)",
        "ingesting: 13 files (25s)",
    ]


def test_progress_line_ends_with_the_final_count() -> None:
    """The last line a long command printed counts everything it did, not the state at the
    last periodic line (an ingest of 200 files ended its log with "117 files")."""
    lines: list[str] = []
    now = [0.0]
    line = ProgressLine(
        "ingesting", "files", every=100, every_s=10.0, write=lines.append, clock=lambda: now[0]
    )
    now[0] = 10.0
    line.update(117, None, "234 chunks")
    now[0] = 12.0
    line.update(200, None, "400 chunks")
    line.close()
    line.close()  # once only
    assert lines == [
        "ingesting: 117 files, 234 chunks (10s)",
        "ingesting: 200 files, 400 chunks (12s)",
    ]
    quiet: list[str] = []
    short = ProgressLine("ingesting", "files", write=quiet.append, clock=lambda: 0.0)
    short.update(5, None)
    short.close()
    assert quiet == []  # a short command still prints nothing


def test_an_interrupt_during_a_deferred_block_lands_when_the_block_ends() -> None:
    """Reading a batch of files is held against SIGTERM and Ctrl-C (an interrupt between
    ``open`` and ``with`` would leave the file to the garbage collector): the signal is
    delivered, once, when the block ends, and the handlers in place before come back."""
    import signal

    from ragstore.cli.signals import Terminated, terminate_as_interrupt
    from ragstore.interrupts import deferred

    ran_on = []
    with pytest.raises(Terminated), terminate_as_interrupt():
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the signal has arrived: without the hold it raised here
            ran_on.append("after the signal")
        ran_on.append("after the block")
    assert ran_on == ["after the signal"]
    # Python's own Ctrl-C handler (a shell starts a background job with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            ran_on.append("Ctrl-C held")
        assert ran_on[-1] == "Ctrl-C held"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with deferred():  # an ignored signal stays ignored
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigterm_stops_an_ingest_through_the_server_saying_what_it_acknowledged(
    remote_env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through RAGSTORE_URL the CLI cannot know whether the request in flight was stored:
    it says what the server acknowledged and that the batch being sent may be stored too,
    and exits 143 (it died silently, killed by the signal)."""
    through_server(monkeypatch, remote_env)
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(150):  # three requests of at most 64 files
        (folder / f"f{i:03d}.md").write_text(f"# F{i}\n\nNote {i} on the w{i} topic.\n")

    def stored() -> int:
        with psycopg.connect(remote_env["RAGSTORE_DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id"
                " WHERE c.name = 'remote-term'"
            ).fetchone()
        return int(row[0]) if row else 0

    capsys.readouterr()
    with sigterm_when(lambda: stored() >= 1) as sent:
        status = run_cli("ingest", str(folder), "-c", "remote-term")
    err = " ".join(capsys.readouterr().err.split())
    assert sent == [True] and status == 143, err
    assert "interrupted by SIGTERM: the server acknowledged " in err, err
    assert " of 150 files; the request in flight may have been stored too" in err, err
    assert "run the same command again to resume" in err, err


def _documents_in(database_url: str, collection: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT d.source FROM documents d JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = %s ORDER BY d.source",
            (collection,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_a_file_over_the_servers_upload_limit_fails_alone(
    env: dict[str, str],
    remote_env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 413 (RAGSTORE_MAX_UPLOAD_BYTES) for a batch ended the whole ingest through the
    server with one error line, nothing stored; now the batch is sent file by file and
    the file over the limit fails alone, named, as a local ingest fails a file."""
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAlpha notes.\n")
    (folder / "b.md").write_text("# B\n\n" + "Beta words here. " * 400)
    (folder / "c.md").write_text("# C\n\nGamma notes.\n")
    with _serving({**env, "RAGSTORE_MAX_UPLOAD_BYTES": "4096"}) as url:
        monkeypatch.setenv("RAGSTORE_URL", url)
        monkeypatch.setenv("RAGSTORE_API_KEY", remote_env["RAGSTORE_API_KEY"])
        capsys.readouterr()
        status = run_cli("ingest", str(folder), "-c", "upload-limit", "--json")
    out, err = capsys.readouterr()
    assert status == 1, err
    report = json.loads(out)
    assert report["counts"] == {"added": 2, "failed": 1}, report
    assert [(f["document"], f["code"]) for f in report["failed"]] == [
        ("up/b.md", "request_too_large")
    ]
    assert "failed [request_too_large] up/b.md: the upload is " in " ".join(err.split())
    stored = _documents_in(env["RAGSTORE_DATABASE_URL"], "upload-limit")
    assert [Path(s).name for s in stored] == ["a.md", "c.md"]


@contextmanager
def _limiting_proxy(upstream: str, max_body: int) -> Iterator[str]:
    """A reverse proxy on loopback that forwards to ``upstream`` but answers a body over
    ``max_body`` bytes with its own HTML 413, as nginx does (client_max_body_size)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    page = b"<html><head><title>413 Request Entity Too Large</title></head></html>"

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return body
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            if len(body) > max_body:
                self.send_response(413)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            skip = {"host", "content-length", "transfer-encoding", "connection"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            answer = httpx.request(
                self.command, upstream + self.path, headers=headers, content=body, timeout=120
            )
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in skip | {"content-encoding"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)


def test_a_proxys_html_413_fails_the_file_alone_like_the_servers_own(
    server: str,
    remote_env: dict[str, str],
    env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A proxy before the server (nginx's client_max_body_size) answers 413 with an HTML
    page, not ragstore's problem+json: that stopped the whole remote ingest as an
    ``internal_error``, the files after it never sent, where the server's own 413 has the
    batch sent again file by file and only the file over the limit fail."""
    folder = tmp_path / "px"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAlpha notes.\n")
    (folder / "b.md").write_text("# B\n\n" + "Beta words here. " * 400)
    (folder / "c.md").write_text("# C\n\nGamma notes.\n")
    with _limiting_proxy(server, 4096) as url:
        monkeypatch.setenv("RAGSTORE_URL", url)
        monkeypatch.setenv("RAGSTORE_API_KEY", remote_env["RAGSTORE_API_KEY"])
        capsys.readouterr()
        status = run_cli("ingest", str(folder), "-c", "proxy-limit", "--json")
    out, err = capsys.readouterr()
    assert status == 1, err
    report = json.loads(out)
    assert report["counts"] == {"added": 2, "failed": 1}, report
    assert [(f["document"], f["code"]) for f in report["failed"]] == [
        ("px/b.md", "request_too_large")
    ]
    detail = report["failed"][0]["detail"]
    assert "413" in detail and "client_max_body_size" in detail and "<html" not in err, err
    stored = _documents_in(env["RAGSTORE_DATABASE_URL"], "proxy-limit")
    assert [Path(s).name for s in stored] == ["a.md", "c.md"]


def test_an_error_that_stops_an_ingest_through_the_server_says_what_it_stored(
    env: dict[str, str],
    rate_limited: str,
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An error after some uploads were acknowledged (here the key's rate limit) ended
    the ingest with the error line alone: nothing said that files were stored. Now the
    counts come first (and the JSON report), then the error with its exit status."""
    import ragstore.cli.remote as remote

    folder = tmp_path / "rate"
    folder.mkdir()
    for i in range(8):
        (folder / f"n{i}.md").write_text(f"# N{i}\n\nNote {i} about topic t{i}.\n")
    key = KeyStore(Database(env["RAGSTORE_DATABASE_URL"])).create("admin", name="rate")
    monkeypatch.setattr(remote, "BATCH_FILES", 1)  # a request per file
    # a client that waits out the limit (its default retries) never stops: none here
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "0")
    monkeypatch.setenv("RAGSTORE_URL", rate_limited)  # 4 requests a minute, < 8 files
    monkeypatch.setenv("RAGSTORE_API_KEY", key.secret)
    capsys.readouterr()
    status = run_cli("ingest", str(folder), "-c", "rate-stop", "--json")
    out, err = capsys.readouterr()
    err = " ".join(err.split())
    assert status == 75, err
    stored = _documents_in(env["RAGSTORE_DATABASE_URL"], "rate-stop")
    assert 1 <= len(stored) < 8
    report = json.loads(out)
    # the files after the refused request were never sent: counted, so that every file
    # but the refused one is accounted for
    unsent = 8 - len(stored) - 1
    assert report["counts"] == {"added": len(stored), "not_attempted": unsent}, report
    assert (
        f"stopped by an error: the server acknowledged {len(stored)} added, 0 updated, "
        f"0 unchanged, 0 failed, {unsent} not attempted of 8 files" in err
    ), err
    assert "error[rate_limited]: " in err, err
    assert err.index("stopped by an error") < err.index("error[rate_limited]")


def test_a_batch_sent_in_parts_and_stopped_counts_what_its_parts_stored(
    env: dict[str, str],
    rate_limited: str,
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch over the server's RAGSTORE_MAX_UPLOAD_BYTES is sent by the Client in several
    requests; one refused (here by the key's rate limit) after others stored files ended
    the ingest saying nothing was stored. Now those are counted before the error."""
    # a client that waits out the limit (its default retries) never stops: none here
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "0")
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(8):
        (folder / f"p{i}.md").write_text(f"# P{i}\n\nPart {i} notes. " + "word " * 200)
    key = KeyStore(Database(env["RAGSTORE_DATABASE_URL"])).create("admin", name="parts")
    # 4 requests a minute; uploads of at most 2048 bytes: one file a request, more
    # requests than the budget
    monkeypatch.setenv("RAGSTORE_URL", rate_limited)
    monkeypatch.setenv("RAGSTORE_API_KEY", key.secret)
    capsys.readouterr()
    status = run_cli("ingest", str(folder), "-c", "parts-stop", "--json")
    out, err = capsys.readouterr()
    err = " ".join(err.split())
    assert status == 75, err
    stored = _documents_in(env["RAGSTORE_DATABASE_URL"], "parts-stop")
    assert 1 <= len(stored) < 8
    report = json.loads(out)
    assert report["counts"]["added"] == len(stored), report
    assert f"the server acknowledged {len(stored)} added" in err, err
    assert "error[rate_limited]: " in err, err


def test_a_batch_sent_in_parts_as_jobs_counts_each_jobs_documents(
    env: dict[str, str],
    remote_env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch the Client sends in several requests, each answered 202 (a server whose
    RAGSTORE_BACKGROUND_INGEST_BYTES is below them), is answered with its ``jobs``: the
    CLI counted none of their documents and waited for none of the jobs."""
    folder = tmp_path / "queued"
    folder.mkdir()
    for i in range(4):
        (folder / f"q{i}.md").write_text(f"# Q{i}\n\nQueued {i} notes. " + "word " * 200)
    served = {**env, "RAGSTORE_MAX_UPLOAD_BYTES": "4096", "RAGSTORE_BACKGROUND_INGEST_BYTES": "0"}
    # the worker looks for jobs every min(5, heartbeat) seconds when no notification
    # woke it: each of the batch's jobs could wait that long
    worker = subprocess.Popen(
        [*CLI, "worker"],
        env={**env, "RAGSTORE_WORKER_HEARTBEAT_S": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with _serving(served) as url:
            monkeypatch.setenv("RAGSTORE_URL", url)
            monkeypatch.setenv("RAGSTORE_API_KEY", remote_env["RAGSTORE_API_KEY"])
            capsys.readouterr()
            status = run_cli("ingest", str(folder), "-c", "parts-jobs", "--json")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert json.loads(out)["counts"]["added"] == 4, out
    assert len(_documents_in(env["RAGSTORE_DATABASE_URL"], "parts-jobs")) == 4


def test_an_ingest_through_the_server_fails_a_name_that_is_not_utf8_alone(
    remote_env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file name of bytes that are not UTF-8 ended the upload with httpx's traceback
    (nothing stored); it now fails alone as in a local ingest, and a name the server
    refuses that holds a newline is still reported on one line."""
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nA well named note.\n")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.md"), "w") as f:
        f.write("# Cafe\n\nLatin-1 name.\n")
    (folder / "new\nline.md").write_text("# NL\n\nA newline in the name.\n")
    through_server(monkeypatch, remote_env)
    capsys.readouterr()
    assert run_cli("ingest", str(folder), "-c", "remote-names", "--json") == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["counts"] == {"added": 1, "failed": 2}, report
    codes = {f["code"]: f for f in report["failed"]}
    assert codes["invalid_encoding"]["document"] == f"{folder}/caf\\xe9.md"
    assert "the file name is not valid UTF-8" in codes["invalid_encoding"]["detail"]
    assert codes["invalid_input"]["detail"].startswith("names/new\\x0aline.md: ")
    failed = [line for line in err.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 2 and len(err.splitlines()) == 3, err


def test_files_that_would_share_an_upload_name_fail_instead_of_replacing_each_other(
    remote_env: dict[str, str],
    local: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ingest x/a.md y/a.md`` uploaded both as ``a.md``: the server stored the second
    over the first and the CLI said "1 added, 1 updated" (a local ingest stores both).
    Now both fail, named, and nothing is replaced; the other files are ingested."""
    for folder, text in (("x", "From x."), ("y", "From y.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.md").write_text(f"# {folder}\n\n{text}\n")
    (tmp_path / "x" / "other.md").write_text("# Other\n\nA note of its own.\n")
    through_server(monkeypatch, remote_env)
    capsys.readouterr()
    args = [str(tmp_path / "x" / "a.md"), str(tmp_path / "y" / "a.md")]
    status = run_cli("ingest", *args, str(tmp_path / "x" / "other.md"), "-c", "clash", "--json")
    out, err = capsys.readouterr()
    assert status == 1, err
    report = json.loads(out)
    assert report["counts"] == {"failed": 2, "added": 1}, report
    assert [f["document"] for f in report["failed"]] == args
    assert f"{args[0]}: would be uploaded as 'a.md', as {args[1]} would" in " ".join(err.split())
    stored = _documents_in(remote_env["RAGSTORE_DATABASE_URL"], "clash")
    assert [Path(s).name for s in stored] == ["other.md"]


@pytest.mark.parametrize(
    "provider, name, byte_order",
    [
        ("c", "C", True),
        ("c", "POSIX", True),
        ("c", "C.UTF-8", True),
        ("b", "C.UTF-8", True),
        ("c", "en_US.UTF-8", False),  # a language collation: punctuation skipped at first
        ("i", "en-US", False),
        ("i", "C", False),  # ICU's root collation is not byte order
    ],
)
def test_which_collations_order_strings_byte_by_byte(
    provider: str, name: str, byte_order: bool
) -> None:
    assert orders_bytes(provider, name) is byte_order


def test_an_ingest_through_the_server_streams_each_file_rather_than_reading_it_whole(
    remote_env: dict[str, str], tmp_path: Path
) -> None:
    """``_read_batch`` read each batch whole into memory, and one huge file is a batch of
    its own: a 300 MB file took 300 MB of the CLI's memory before the server refused it.
    Now each file is streamed into its request (StreamedFile, as the Python client's
    uploads are)."""
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "small.md").write_text("# Small\n\nA note that fits.\n")
    with (folder / "big.md").open("wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: no disk taken
    # the peak of Python's own allocations (tracemalloc), not the process's RSS: RSS
    # moved between 116 and 300 MB from run to run for the same ingest (the allocator,
    # the interpreter's imports), while the file read whole is 300 MB of bytes at once
    code = (
        "import sys, tracemalloc\ntracemalloc.start()\nfrom ragstore.cli import main\n"
        "try:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('PEAK', tracemalloc.get_traced_memory()[1], file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "ingest", str(folder), "-c", "huge", "--json"],
        env=remote_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["counts"] == {"added": 1, "failed": 1}, report
    assert report["failed"][0]["document"].endswith("big.md"), report
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0])
    assert peak < 100 * 1024 * 1024, proc.stderr  # the file's 300 MB never in memory at once


def test_ingest_through_the_server_takes_names_in_any_script(
    remote_env: dict[str, str],
    local: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``ragstore ingest café.md`` stored it locally and, with ``RAGSTORE_URL``, failed it
    (an ``invalid document name``: not ASCII). A macOS file name (decomposed, NFD) is
    stored composed (NFC), and shown by either spelling."""
    import unicodedata

    cafe = tmp_path / "café.md"
    cafe.write_text("# Café\n\nOpen at nine.\n")
    arger = tmp_path / unicodedata.normalize("NFD", "Ärger.txt")
    arger.write_text("Trouble at the café.\n")
    through_server(monkeypatch, remote_env)
    assert run_cli("ingest", str(cafe), str(arger), "-c", "remote-unicode", "--json") == 0
    capsys.readouterr()
    assert run_cli("documents", "list", "-c", "remote-unicode", "--json") == 0
    names = sorted(Path(d["source"]).name for d in json.loads(capsys.readouterr().out))
    assert names == ["café.md", "Ärger.txt"]
    assert run_cli("ingest", str(cafe), "-c", "remote-unicode", "--json") == 0
    assert '"unchanged"' in capsys.readouterr().out
    # on the server's own database, an uploaded name is found by either spelling
    monkeypatch.delenv("RAGSTORE_URL")
    for spelt in ("Ärger.txt", unicodedata.normalize("NFD", "Ärger.txt")):
        assert run_cli("documents", "show", spelt, "-c", "remote-unicode", "--json") == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["source"] == shown["name"] == "Ärger.txt"  # composed (NFC), as stored
