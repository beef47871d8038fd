"""A job's round whose commit landed but whose answer was lost: the documents it stored are
counted as the job's. On the real database, with the real model, through :func:`run_job`.

The ingest writes a failed round again document by document; that write finds the round's
own rows (same content hash) and says ``unchanged``. A job's first run took that as found,
not stored: its summary counted a document it had added ``unchanged`` and its
``chunks_done`` left that document's chunks out."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import documents
from ragstore.db import jobs as store
from ragstore.jobs.runner import run_job
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.test_job_passing_errors import _queue, _stored


def test_a_job_s_round_committed_with_its_answer_lost_counts_its_documents_added(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "round-again"
    Store.from_runtime(rt).create_collection(name)
    files = [f"r{i}.md" for i in range(4)]
    job_id = _queue(rt, name, files)
    write = documents.write_documents
    said: list[list[str]] = []  # what each write said of its documents

    def answer_lost(conn: Any, *args: Any, **kwargs: Any) -> Any:
        written = write(conn, *args, **kwargs)
        said.append([w.status for w in written])
        if len(said) == 2:  # the second round: committed, then its connection "lost"
            conn.commit()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return written

    monkeypatch.setattr(documents, "write_documents", answer_lost)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(one_a_round) as small:
        done = run_job(small, job_id)
    # the round's document written again on its own found the round's row
    assert said[1:3] == [["added"], ["unchanged"]], said
    assert _stored(rt, name) == files
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks k JOIN collections c ON c.id = k.collection_id"
            " WHERE c.name = %s",
            (name,),
        ).fetchone()
        assert row is not None
        assert store.get(conn, job_id).chunks_done == done.chunks_done
    assert (done.status, done.errors) == ("succeeded", []), done.errors
    assert done.summary.get("added") == 4 and "unchanged" not in done.summary, done.summary
    assert done.documents_done == 4
    assert done.chunks_done == row[0] > 0
