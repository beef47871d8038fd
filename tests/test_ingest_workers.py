"""Files parsed and chunked in forked worker processes (a large ingest): the same outcomes,
chunks and errors as parsing them in the ingesting process, and unchanged files skipped."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.embedding import wordpieces
from ragstore.embedding.registry import resolve_spec
from ragstore.errors import RagstoreError
from ragstore.ingest import ingest_paths, prepare
from ragstore.runtime import Runtime
from tests.models.corpus import write_corpus


@pytest.fixture(scope="module")
def small_rounds(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings.model_copy(update={"ingest_batch_chunks": 8, "ingest_workers": 2}))
    yield rt
    rt.close()


def _folder(tmp_path: Path) -> Path:
    folder = write_corpus(tmp_path / "docs", docs=4, paragraphs=2)
    (folder / "bad.md").write_text("---\n[unclosed\n---\n# Title\n\nBody.\n", encoding="utf-8")
    (folder / "empty.md").write_text("   \n", encoding="utf-8")
    return folder


def _outcomes(rt: Runtime, folder: Path, name: str, children: list[int]) -> list[tuple[str, ...]]:
    def progress(event: str, files: int, chunks: int) -> None:
        children.append(len(multiprocessing.active_children()))

    report = ingest_paths(rt, [folder], name, progress=progress)
    rows = [(Path(o.source).name, o.status, str(o.chunks), o.code or "") for o in report.outcomes]
    return sorted(rows)


def _texts(rt: Runtime, name: str) -> list[str]:
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        rows = conn.execute("SELECT text FROM chunks WHERE collection_id = %s", (coll.id,))
        return sorted(str(r[0]) for r in rows)


def test_workers_prepare_what_the_ingesting_process_prepares(
    small_rounds: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path)
    monkeypatch.setattr(prepare, "MIN_POOL_BYTES", 0)  # the pool for a small folder too
    monkeypatch.setattr(prepare, "FILES_PER_TASK", 2)
    seen: list[int] = []
    pooled = _outcomes(small_rounds, folder, "pooled", seen)
    assert max(seen) == 2, "two worker processes prepared the files"
    inline_rt = Runtime(small_rounds.settings.model_copy(update={"ingest_workers": 1}))
    try:
        alone: list[int] = []
        inline = _outcomes(inline_rt, folder, "inline", alone)
        assert max(alone) == 0, "ingest_workers=1: no worker process"
    finally:
        inline_rt.close()
    assert pooled == inline
    codes = {name: code for name, _, _, code in pooled}
    assert codes["bad.md"] == "corrupt_document" and codes["empty.md"] == "empty_document"
    assert sum(1 for _, status, _, _ in pooled if status == "added") == 4
    assert _texts(small_rounds, "pooled") == _texts(small_rounds, "inline")
    again = _outcomes(small_rounds, folder, "pooled", [])
    assert [s for n, s, _, _ in again if n not in ("bad.md", "empty.md")] == ["unchanged"] * 4


def _die(items: list[object], hashes: list[object]) -> list[object]:
    os._exit(3)  # a worker killed mid-task (the OOM killer, say)


def test_a_worker_that_dies_fails_the_ingest_with_one_clear_error(
    small_rounds: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_corpus(tmp_path / "docs", docs=3, paragraphs=1)
    monkeypatch.setattr(prepare, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(prepare, "FILES_PER_TASK", 1)
    monkeypatch.setattr(prepare, "_prepare_many", _die)
    with pytest.raises(RagstoreError, match="RAGSTORE_INGEST_WORKERS=1"):
        ingest_paths(small_rounds, [folder], "died")


def test_workers_by_default_on_four_cores_or_two_when_the_model_is_elsewhere() -> None:
    big = prepare.MIN_POOL_BYTES
    assert prepare.pool_size(0, big, cores=2) == 0, "2 cores: prepared in the ingesting process"
    assert prepare.pool_size(2, big, cores=2) == 2 and prepare.pool_size(1, big, cores=2) == 0
    assert prepare.pool_size(0, big, cores=8) == 8
    assert prepare.pool_size(0, big - 1, cores=8) == 0, "a small ingest never forks"
    # a remote or GPU model leaves the cores to parsing: workers from 2 cores up
    assert prepare.pool_size(0, big, cores=2, model_on_cpu=False) == 2
    assert prepare.pool_size(0, big, cores=1, model_on_cpu=False) == 0
    assert prepare.pool_size(1, big, cores=4, model_on_cpu=False) == 0, "1 = in-process"
    assert prepare.pool_size(0, big - 1, cores=2, model_on_cpu=False) == 0


_FORKING = threading.Event()
# set as a fork starts, before ragstore's own hooks (the last registered run first)
os.register_at_fork(before=_FORKING.set)


def test_workers_forked_while_another_thread_learns_words_do_not_hang(
    small_rounds: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """``ragstore serve`` forks parse workers for a large upload while other requests run:
    one of them may be inside the word cache's lock at that moment. The fork waits for it,
    so no worker starts with a lock that nobody will release."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    for i in range(4):  # words no process has seen: every worker must learn them
        words = " ".join(f"zq{uuid.uuid4().hex[:10]}" for _ in range(400))
        (folder / f"f{i}.md").write_text(f"# Doc {i}\n\n{words}.\n", encoding="utf-8")
    monkeypatch.setattr(prepare, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(prepare, "FILES_PER_TASK", 1)
    rt = Runtime(small_rounds.settings.model_copy(update={"ingest_batch_chunks": 512}))
    request.addfinalizer(rt.close)  # one round of every file: prepared by the workers
    rt.embedder(resolve_spec(rt.settings.model)).count_tokens(["warm the word cache"])
    locks = [wordpieces._pieces_lock, *(wp._lock for wp in list(wordpieces._instances))]
    held = threading.Event()
    _FORKING.clear()

    def learning() -> None:  # another request's thread, mid-way through learning words
        for lock in locks:
            lock.acquire()
        held.set()
        _FORKING.wait(60)  # the ingest is forking its workers now: hold on a moment more
        time.sleep(0.3)
        for lock in reversed(locks):
            lock.release()

    other = threading.Thread(target=learning, daemon=True)
    other.start()
    assert held.wait(10)
    outcome: list[object] = []
    ingest = threading.Thread(
        target=lambda: outcome.append(ingest_paths(rt, [folder], "forked-busy")),
        daemon=True,
    )
    ingest.start()
    ingest.join(60)
    hung = ingest.is_alive()
    if hung:  # the regression: workers wait forever; stop them so the suite can go on
        for child in multiprocessing.active_children():
            child.kill()
    assert not hung, "a parse worker inherited a held word-cache lock and never finished"
    report = outcome[0]
    assert [o.status for o in report.outcomes] == ["added"] * 4  # type: ignore[attr-defined]
