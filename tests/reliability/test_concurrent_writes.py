"""Concurrent writers of one document: through two real servers on one database, and
through two ``ragstore ingest`` processes of one folder.

Every acknowledgement must describe what that request stored (its own content hash), the
losers of a race are serialized (or answered 409), the stored document is one of the
acknowledged versions, and nothing is left in the staging folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragstore.chunking import document_hash
from ragstore.config import Settings
from ragstore.runtime import Runtime
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli

WRITERS = 6


@pytest.fixture(scope="module")
def servers(settings: Settings) -> Iterator[tuple[str, str]]:
    """Two servers on the module's database; uploads limited to 64 KiB."""
    small = with_(settings, auth="off", max_upload_bytes=64 * 1024)
    with running_server(small) as a, running_server(small) as b:
        yield a, b


def _text(i: int) -> str:
    return f"# Version {i}\n\n" + " ".join(f"word{i}-{n}" for n in range(200)) + "\n"


def _hash(text: str) -> str:
    """The content hash a document with this text is stored under."""
    return document_hash(text.encode())


def _concurrently(calls: list[Any]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))
    out: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def _stored(url: str, collection: str) -> list[dict[str, Any]]:
    got = httpx.get(f"{url}/v1/collections/{collection}/documents", timeout=30)
    assert got.status_code == 200, got.text
    return list(got.json()["data"])


def _check(responses: list[httpx.Response], texts: list[str], url: str, coll: str) -> None:
    acked: dict[str, int] = {}
    for r, text in zip(responses, texts, strict=True):
        assert r.status_code in (201, 409), r.text
        if r.status_code == 201:
            body = r.json()
            doc = body["data"][0] if "data" in body else body
            assert doc["content_hash"] == _hash(text), "ack describes another request's write"
            assert doc["status"] in ("added", "updated")
            acked[doc["content_hash"]] = doc["id"]
    assert acked, "at least one writer must win"
    assert len(set(acked.values())) == 1, "every version went to the same document"
    (doc,) = _stored(url, coll)
    assert doc["name"] == "same.md"
    assert doc["content_hash"] in acked
    winner = next(t for t in texts if _hash(t) == doc["content_hash"])
    mine = winner.split()[2]  # "Version N" -> "N"
    chunks = httpx.get(
        f"{url}/v1/collections/{coll}/documents/{doc['id']}/chunks", timeout=60
    ).json()["data"]
    assert chunks
    found = {m for c in chunks for m in re.findall(r"(?:word|Version )(\d+)", c["text"])}
    assert found == {mine}, "the stored chunks are the winner's text, nothing else"


def test_same_name_json_writes_are_acknowledged_as_stored(
    servers: tuple[str, str], settings: Settings
) -> None:
    a, b = servers
    assert httpx.post(f"{a}/v1/collections", json={"name": "w"}, timeout=60).status_code == 201
    texts = [_text(i) for i in range(WRITERS)]
    calls = [
        lambda i=i: httpx.post(
            f"{(a, b)[i % 2]}/v1/collections/w/documents",
            json={"name": "same.md", "text": texts[i]},
            timeout=120,
        )
        for i in range(WRITERS)
    ]
    _check(_concurrently(calls), texts, a, "w")
    assert not list((settings.data_dir / "staging").glob("*")), "staging files left behind"


def test_same_name_uploads_are_acknowledged_as_stored(
    servers: tuple[str, str], settings: Settings
) -> None:
    a, b = servers
    assert httpx.post(f"{a}/v1/collections", json={"name": "u"}, timeout=60).status_code == 201
    texts = [_text(10 + i) for i in range(WRITERS)]
    calls = [
        lambda i=i: httpx.post(
            f"{(a, b)[i % 2]}/v1/collections/u/documents/upload",
            files={"files": ("same.md", texts[i].encode())},
            timeout=120,
        )
        for i in range(WRITERS)
    ]
    _check(_concurrently(calls), texts, b, "u")
    # a failed upload leaves nothing staged either
    bad = httpx.post(
        f"{a}/v1/collections/u/documents/upload",
        files={"files": ("bad.bin", b"\x00\x01\x02" * 100)},
        timeout=60,
    )
    assert bad.status_code == 415, bad.text
    assert not list((settings.data_dir / "staging").glob("*")), "staging files left behind"
    assert not (settings.data_dir / "uploads" / "u").exists()


def test_oversized_chunked_upload_is_413(servers: tuple[str, str]) -> None:
    a, _ = servers
    boundary = "xyzzy"

    def body() -> Iterator[bytes]:  # no Content-Length: streamed in chunks
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="big.md"\r\nContent-Type: text/markdown\r\n\r\n'
        ).encode()
        for _ in range(100):
            yield b"x" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"{a}/v1/collections/u/documents/upload",
        content=body(),
        timeout=60,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "request_too_large"


def _state(rt: Runtime, collection: str) -> list[tuple[str, str, int, str]]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, d.content_hash, count(c.id), string_agg(c.content_hash, ','"
            " ORDER BY c.ordinal) FROM documents d JOIN collections k ON k.id = d.collection_id"
            " LEFT JOIN chunks c ON c.document_id = d.id WHERE k.name = %s"
            " GROUP BY d.source, d.content_hash ORDER BY d.source",
            (collection,),
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]


def test_two_cli_ingests_of_one_folder_both_succeed(
    rt: Runtime, settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """One ``ragstore ingest`` in a process of its own, one in this process (it shares the
    loaded model, which keeps the test short), started together on one folder."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"doc{i:02d}.md").write_text(f"# Doc {i}\n\n{_text(i)}\n## Part\n\nmore {i}\n")
    env = {**os.environ, **cli_env, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["ingest", str(folder), "--collection", "cli2"]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ragstore.cli import main; main()", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    inproc: list[int] = []
    thread = threading.Thread(target=lambda: inproc.append(run_cli(*args)))
    thread.start()
    out, err = proc.communicate(timeout=240)
    thread.join(timeout=240)
    assert proc.returncode == 0, f"exit {proc.returncode}: {out}\n{err}"
    assert inproc == [0]
    from ragstore.ingest import ingest_paths

    ingest_paths(rt, [folder], "cli1")
    assert _state(rt, "cli2") == _state(rt, "cli1")
    assert len(_state(rt, "cli2")) == 12
