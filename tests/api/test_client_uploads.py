"""The Client uploads (``upload``, ``ingest``) in several requests within the server's limits
(RAGSTORE_MAX_UPLOAD_BYTES, 1000 files), as ``Store.ingest`` takes a folder of any size, and
answers them as one; a request failing says what each file's fate was. Against a real
server on loopback whose uploads may be 4 KiB at most."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragstore import AsyncClient, Client
from ragstore import _requests as calls
from ragstore.config import Settings
from ragstore.errors import (
    EmptyDocumentError,
    InputError,
    OutcomeUnknownError,
    RequestTooLargeError,
)
from tests.api.conftest import running_server, with_

SMALL_UPLOAD = 4096  # the server's RAGSTORE_MAX_UPLOAD_BYTES in these tests


@pytest.fixture(scope="module")
def small_url(settings: Settings) -> Iterator[str]:
    """A server taking uploads of 4 KiB at most, ingested during the request."""
    small = with_(
        settings, auth="off", max_upload_bytes=SMALL_UPLOAD, background_ingest_bytes=1 << 20
    )
    with running_server(small) as url:
        yield url


def _folder(root: Path, n: int, size: int = 900) -> Path:
    root.mkdir()
    for i in range(n):
        body = f"# Note {i}\n\nTopic number {i} of the folder. " + "words " * (size // 6)
        (root / f"note{i:02d}.md").write_text(body)
    return root


def _names(client: Client, collection: str) -> list[str]:
    return sorted(d["name"] for d in client.list_documents(collection, limit=500)["data"])


def _sizes(client: Client) -> list[int]:
    sent: list[int] = []

    def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/upload"):
            sent.append(int(request.headers["content-length"]))

    client._http.event_hooks["request"].append(count)
    return sent


def test_a_folder_over_the_upload_limit_is_ingested_in_parts(
    small_url: str, tmp_path: Path
) -> None:
    # ~9 KiB of files in one request was refused 413 whole by a server taking 4 KiB, where
    # Store.ingest (and `ragstore ingest` without RAGSTORE_URL) took the folder
    folder = _folder(tmp_path / "docs", 10)
    with Client(small_url) as client:
        out = client.ingest("parts", folder)
        names = sorted(f"note{i:02d}.md" for i in range(10))
        assert sorted(d["name"] for d in out["data"]) == names
        assert (out["count"], out["next_cursor"], out["skipped"]) == (10, None, [])
        assert {d["status"] for d in out["data"]} == {"added"}
        assert "jobs" not in out
        assert _names(client, "parts") == names
        again = client.ingest("parts", folder)  # answered as one request would be
        assert [d["status"] for d in again["data"]] == ["unchanged"] * 10


def test_the_async_client_uploads_in_parts_too(
    small_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # packed within the limit: an early 413 answer can be lost to the connection's reset
    # (see the report), which reads as no answer
    monkeypatch.setattr(calls, "MAX_UPLOAD_BYTES", SMALL_UPLOAD)
    folder = _folder(tmp_path / "docs", 10)

    async def ingest() -> dict[str, Any]:
        async with AsyncClient(small_url) as ac:
            return await ac.ingest("parts-async", folder)

    out = asyncio.run(ingest())
    assert sorted(d["name"] for d in out["data"]) == sorted(f"note{i:02d}.md" for i in range(10))


def test_the_async_client_reads_the_413_of_an_upload_over_the_limit(
    small_url: str, tmp_path: Path
) -> None:
    # The server answered a declared Content-Length over its limit 413 and closed with the
    # body unread: the reset made async httpx raise ReadError before it read the answer, so
    # the user was told "cannot reach the ragstore server at URL: " and the upload, sent
    # whole at the client's 50 MiB default, never split. Now the server reads (and drops)
    # the rest of the body first. A race: tried several times.
    folder = _folder(tmp_path / "docs", 10)
    names = sorted(f"note{i:02d}.md" for i in range(10))
    big = ("big.md", b"# Big\n\n" + b"words " * 2000)

    async def run() -> None:
        async with AsyncClient(small_url) as ac:
            for round_ in range(6):
                out = await ac.ingest(f"drain-{round_}", folder)
                assert sorted(d["name"] for d in out["data"]) == names
                with pytest.raises(RequestTooLargeError) as caught:
                    await ac.upload(f"drain-{round_}", big)
                assert caught.value.code == "request_too_large"
                assert "RAGSTORE_MAX_UPLOAD_BYTES" in str(caught.value)

    asyncio.run(run())


class _SaysNoLimits(httpx.HTTPTransport):
    """The real server, its ``/healthz`` answered as a server that does not say its limits
    (an older one) answers it."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/healthz":
            response.read()
            return httpx.Response(200, json={"status": "ok"}, request=request)
        return response


def test_the_client_sizes_its_requests_to_the_limits_the_server_says(
    small_url: str, tmp_path: Path
) -> None:
    # the limits were said only in a 413: the first request of an upload, sized to the
    # client's 50 MiB default, was sent whole to be refused
    limits = httpx.get(f"{small_url}/healthz").json()["limits"]
    assert limits["max_upload_bytes"] == SMALL_UPLOAD and limits["max_upload_files"] == 1000
    folder = _folder(tmp_path / "docs", 16)
    with Client(small_url) as client:
        sent = _sizes(client)
        out = client.ingest("told", folder)
    assert out["count"] == 16
    assert len(sent) > 2 and all(size <= SMALL_UPLOAD for size in sent), sent


def test_the_client_sizes_its_requests_to_the_limit_a_413_says(
    small_url: str, tmp_path: Path
) -> None:
    # a server that does not say its limits before: a 413 says it (RAGStore-Max-Upload-
    # Bytes) and the client cuts the rest of the upload to fit it, where halving from its
    # 50 MiB default re-sent a large upload up to twice (each half refused in turn)
    r = httpx.post(
        f"{small_url}/v1/collections/said/documents/upload",
        files={"files": ("a.md", b"x" * (2 * SMALL_UPLOAD))},
    )
    assert r.status_code == 413 and r.headers["RAGStore-Max-Upload-Bytes"] == str(SMALL_UPLOAD)
    folder = _folder(tmp_path / "docs", 16)
    with Client(small_url, transport=_SaysNoLimits()) as client:
        sent = _sizes(client)
        out = client.ingest("said", folder)
    assert out["count"] == 16
    assert sent[0] > SMALL_UPLOAD, sent  # refused: the limit was not known before
    assert len(sent) > 2 and all(size <= SMALL_UPLOAD for size in sent[1:]), sent


def test_uploads_are_packed_within_the_byte_limit_the_client_is_given(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_UPLOAD_BYTES", SMALL_UPLOAD)
    files = [(f"p{i}.md", f"packed {i} ".encode() + b"z" * 800) for i in range(12)]
    with Client(small_url) as client:
        sent = _sizes(client)
        out = client.upload("packed", files)
        assert out["count"] == 12 and len(sent) > 1
        assert max(sent) <= SMALL_UPLOAD  # none refused: no request needed halving


def test_uploads_keep_within_the_servers_file_count(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server's multipart parser takes 1000 files a request (400 past it)
    monkeypatch.setattr(calls, "MAX_UPLOAD_FILES", 2)
    files = [(f"c{i}.md", f"counted {i}".encode()) for i in range(5)]
    with Client(small_url) as client:
        sent = _sizes(client)
        assert client.upload("counted", files)["count"] == 5
        assert len(sent) == 3


def test_a_file_over_the_limit_fails_alone_and_the_rest_are_stored(
    small_url: str, tmp_path: Path
) -> None:
    folder = _folder(tmp_path / "big", 4)
    (folder / "huge.md").write_text("# Huge\n\n" + "long " * SMALL_UPLOAD)
    (folder / "empty.md").write_text("   ")
    with Client(small_url) as client:
        with pytest.raises(Exception) as failed:
            client.ingest("one-too-big", folder)
        members = failed.value.problem_members  # type: ignore[attr-defined]
        assert sorted(d["name"] for d in members["stored"]) == [f"note0{i}.md" for i in range(4)]
        assert sorted((f["name"], f["code"]) for f in members["failed"]) == [
            ("empty.md", EmptyDocumentError.code),
            ("huge.md", "request_too_large"),
        ]
        assert "4 stored" in str(failed.value) and "2 failed" in str(failed.value)
        assert _names(client, "one-too-big") == [f"note0{i}.md" for i in range(4)]


class _NoAnswerForTheSecond(httpx.HTTPTransport):
    """Delivers every request; the second upload's answer is lost (a timeout after the
    server did the work)."""

    def __init__(self) -> None:
        super().__init__()
        self.uploads = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/upload"):
            self.uploads += 1
            if self.uploads == 2:
                response.read()
                raise httpx.ReadTimeout("timed out", request=request)
        return response


def test_an_upload_without_answer_says_what_was_stored_unknown_and_not_sent(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_UPLOAD_FILES", 2)
    files = [(f"u{i}.md", f"unknown fate {i}".encode()) for i in range(5)]
    # retries=0: sent again (an upsert), the lost request is simply stored
    with Client(small_url, transport=_NoAnswerForTheSecond(), retries=0) as client:
        with pytest.raises(OutcomeUnknownError) as failed:
            client.upload("lost", files)
        members = failed.value.problem_members
        assert [d["name"] for d in members["stored"]] == ["u0.md", "u1.md"]
        assert members["failed"] == []
        assert members["unknown"] == ["u2.md", "u3.md"]
        assert members["not_sent"] == ["u4.md"]
        assert "'unknown'" in str(failed.value) and "1 not sent" in str(failed.value)
        assert _names(client, "lost") == ["u0.md", "u1.md", "u2.md", "u3.md"]


def test_a_name_repeated_across_requests_is_refused_before_any_is_sent(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sent in two requests, the second stored over the first and answered "updated",
    # where one request refuses the repeated name
    monkeypatch.setattr(calls, "MAX_UPLOAD_FILES", 2)
    files = [("a.md", b"first"), ("b.md", b"second"), ("a.md", b"third")]
    with Client(small_url) as client:
        with pytest.raises(InputError, match="appears twice"):
            client.upload("twice", files)
        with pytest.raises(InputError, match="invalid document name"):
            client.upload("twice", [("a.md", b"one"), ("b.md", b"two"), ("../x.md", b"3")])
        assert [c["name"] for c in client.list_collections()].count("twice") == 0


def test_a_background_upload_in_several_requests_answers_each_job(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_UPLOAD_FILES", 2)
    files = [(f"j{i}.md", f"queued {i}".encode()) for i in range(3)]
    with Client(small_url) as client:
        out = client.upload("jobs", files, background=True)
        assert (out["data"], out["count"]) == ([], 0)
        assert [j["total_documents"] for j in out["jobs"]] == [2, 1]
        assert all(j["status"] in ("queued", "running", "succeeded") for j in out["jobs"])
        one = client.upload("jobs", [("solo.md", b"alone")], background=True)
        assert "id" in one  # one request: its job, as before


def test_more_files_than_one_request_takes_are_uploaded(open_url: str) -> None:
    # 1001 files in one request were refused 400 by the server's multipart parser (1000
    # files at most); queued as jobs, nothing to embed here
    files = [(f"m{i}.md", b"x") for i in range(1001)]
    with Client(open_url) as client:
        sent = _sizes(client)
        out = client.upload("many-files", files, background=True)
        assert [j["total_documents"] for j in out["jobs"]] == [1000, 1]
        assert len(sent) == 2


_MEASURE = """
import sys, tracemalloc
from pathlib import Path
from ragstore import Client
# what the upload imports, imported before measuring (validation.py loads numpy)
import ragstore.uploads.names, ragstore.files, ragstore.validation
paths = sorted(Path(sys.argv[2]).iterdir())
with Client(sys.argv[1]) as client:
    client.health()
    tracemalloc.start()
    out = client.upload("memory", paths, background=True)
    peak = tracemalloc.get_traced_memory()[1]
print(peak, out.get("total_documents"))
"""


def test_an_upload_streams_its_files_from_disk(open_url: str, tmp_path: Path) -> None:
    # the files were read whole before the request was built: an upload took as much
    # memory as its files (a 2 GB folder, 2 GB or more). Measured in a process of its own
    # (the server of this test allocates in this one).
    folder = tmp_path / "large"
    folder.mkdir()
    for i in range(4):
        (folder / f"big{i}.md").write_bytes(f"# Big {i}\n\n".encode() + b"words " * 1_000_000)
    total = sum(p.stat().st_size for p in folder.iterdir())  # 24 MB
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, open_url, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    peak, documents = run.stdout.split()
    assert documents == "4"  # one request, queued as one job
    assert int(peak) < total // 10, (peak, total)


def _changing(client: Client, on_upload: int, change: Any) -> None:
    """Call ``change()`` as the ``on_upload``-th upload request is about to be sent."""
    count = 0

    def hook(request: httpx.Request) -> None:
        nonlocal count
        if request.url.path.endswith("/upload"):
            count += 1
            if count == on_upload:
                change()

    client._http.event_hooks["request"].append(hook)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.write_bytes(p.read_bytes() + b" and more"),  # grown
        lambda p: p.write_bytes(p.read_bytes()[:5]),  # cut short
        lambda p: p.unlink(),  # gone
    ],
    ids=["grown", "cut", "gone"],
)
def test_a_file_changed_after_planning_stops_its_request_and_says_so(
    small_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    # a file is read as its request is sent: one that changed since the upload was sized
    # must not be stored half-written, nor its bytes sent under another Content-Length
    monkeypatch.setattr(calls, "MAX_UPLOAD_FILES", 2)
    folder = _folder(tmp_path / "docs", 5, size=300)
    collection = f"changed-{tmp_path.name[-12:]}".replace("_", "-")
    with Client(small_url) as client:
        _changing(client, 2, lambda: change(folder / "note02.md"))
        with pytest.raises(InputError) as failed:
            client.ingest(collection, folder)
        assert failed.value.code == "file_unreadable"
        assert "note02.md: changed while the upload was being sent" in str(failed.value)
        members = failed.value.problem_members
        assert [d["name"] for d in members["stored"]] == ["note00.md", "note01.md"]
        assert [f["name"] for f in members["failed"]] == ["note02.md"]
        assert members["not_sent"] == ["note03.md", "note04.md"]
        assert "unknown" not in members
        assert _names(client, collection) == ["note00.md", "note01.md"]


def test_a_file_changed_in_a_single_request_upload_stores_nothing(
    small_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "one.md"
    path.write_text("# One\n\nThe first version.")
    with Client(small_url) as client:
        client.create_collection("changed-one")
        _changing(client, 1, lambda: path.write_text("# One\n\nThe second version, longer."))
        with pytest.raises(InputError, match=r"one\.md: changed while the upload"):
            client.upload("changed-one", path)
        assert _names(client, "changed-one") == []
        assert client.upload("changed-one", path)["data"][0]["status"] == "added"


def test_the_async_client_says_a_file_changed_too(small_url: str, tmp_path: Path) -> None:
    path = tmp_path / "async.md"
    path.write_text("# Async\n\nThe first version.")

    async def grow(request: httpx.Request) -> None:
        if request.url.path.endswith("/upload"):
            path.write_text("# Async\n\nThe second version, longer.")

    async def run() -> list[str]:
        async with AsyncClient(small_url) as ac:
            await ac.create_collection("changed-async")
            ac._http.event_hooks["request"].append(grow)
            with pytest.raises(InputError, match=r"async\.md: changed while the upload"):
                await ac.upload("changed-async", path)
            page = await ac.list_documents("changed-async")
            return [d["name"] for d in page["data"]]

    assert asyncio.run(run()) == []


def test_a_file_replaced_by_a_pipe_after_it_was_planned_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    """An upload's file is opened again when its request is sent: one replaced by a named
    pipe since it was planned blocked that open, and the upload, until something wrote to
    the pipe; it is now the file_unreadable error of a file changed since it was planned."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Timeout

    from ragstore.errors import FileUnreadableError

    f = tmp_path / "a.md"
    f.write_text("# A\n\nApples.\n")
    streamed = calls.StreamedFile(f)
    f.unlink()
    os.mkfifo(f)
    with ThreadPoolExecutor(max_workers=1) as pool:
        read = pool.submit(streamed.read, 65536)
        try:
            with pytest.raises(FileUnreadableError, match="changed while the upload"):
                read.result(timeout=10)
        except Timeout:
            with open(f, "wb"):  # lets the stuck open go on, so the test can end
                pass
            pytest.fail("opening the pipe waited for a writer")


class _Interrupted(Exception):
    """What the test's own SIGINT handler raises (a shell starts a background job, such as
    a CI run, with SIGINT ignored: Python's Ctrl-C handler is not a given)."""


def _interrupted(_signum: int, _frame: object) -> None:
    raise _Interrupted()


def test_an_interrupt_as_an_upload_opens_its_file_leaves_the_file_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM (here SIGINT) arriving as :class:`StreamedFile` opened its file raised
    between the descriptor's opening and its assignment: the file was left to the garbage
    collector, and a CI run of the interrupted remote ingest failed on that
    ResourceWarning. The interrupt now waits until the file is held, so the one who
    closes the upload closes it."""
    path = tmp_path / "a.md"
    path.write_text("# A\n\nalpha\n")
    sent = calls.StreamedFile(path)
    opened: list[int] = []
    real = calls._open_nonblocking

    def interrupted_open(name: str, flags: int) -> int:
        fd = real(name, flags)
        opened.append(fd)
        signal.raise_signal(signal.SIGINT)  # delivered at once without the fix
        return fd

    monkeypatch.setattr(calls, "_open_nonblocking", interrupted_open)
    before = signal.signal(signal.SIGINT, _interrupted)
    try:
        with pytest.raises(_Interrupted):
            sent.read(4)
        assert opened and sent._file is not None and sent._file.fileno() == opened[0]
    finally:
        signal.signal(signal.SIGINT, before)
        held = sent._file is not None
        sent.close()
        if not held:  # without the fix nothing holds the descriptor: closed here
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
    assert sent._file is None


def test_an_upload_interrupted_between_reads_of_its_file_closes_it(
    open_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while httpx wrote a request's body (a file opened, not yet read to its
    end) left the file to the garbage collector: nothing closed the upload's plan, and a
    CI run of the CLI's interrupted remote ingest failed on the ResourceWarning. The
    client now closes the plan, and the plan the files of the request in flight."""
    folder = tmp_path / "big"
    folder.mkdir()
    for name in ("a.md", "b.md"):  # two files: a plan that asks the limits first
        (folder / name).write_text("# Big\n\n" + "many words here " * 20_000)
    seen: list[calls.StreamedFile] = []
    real = calls.StreamedFile.read

    def read_then_interrupt(self: calls.StreamedFile, n: int = -1) -> bytes:
        chunk = real(self, n)
        seen.append(self)
        if self._file is not None:  # open, part read: the interrupt lands outside read
            raise _Interrupted()
        return chunk

    monkeypatch.setattr(calls.StreamedFile, "read", read_then_interrupt)
    with Client(open_url) as client, pytest.raises(_Interrupted):
        client.upload("interrupted", sorted(folder.iterdir()))
    assert seen and all(f._file is None for f in seen)
