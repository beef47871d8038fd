"""A job whose collection is deleted while it runs, the delete passing the job by: it
fails as ``collection_not_found``, not ``succeeded``. On the real database, with the real
model, through :func:`run_job`.

Deleting a collection fails its unfinished jobs, but skips a job whose row another
transaction holds (``FOR NO KEY UPDATE SKIP LOCKED``: the worker writing the job's
progress at that moment). The job's next write found the collection gone (``hold_live``)
and took that for the document's own error; the ingest stopped there, the rest
``not_attempted``, and the job was recorded ``succeeded`` ({'added': 1, 'failed': 1,
'not_attempted': 2}) with three of its four documents never stored."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import documents
from ragstore.db import jobs as store
from ragstore.errors import CollectionNotFoundError
from ragstore.jobs.runner import run_job
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.test_job_passing_errors import _queue


def test_a_job_its_collection_s_delete_passes_by_fails_when_its_next_write_finds_it_gone(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "gone-skipped"
    Store.from_runtime(rt).create_collection(name)
    job_id = _queue(rt, name, [f"g{i}.md" for i in range(4)])
    write = documents.write_documents
    writes: list[int] = []
    left: list[str] = []  # the job's status once the delete committed

    def deleting(*args: Any, **kwargs: Any) -> Any:
        # before the second round's write: the delete runs while another transaction holds
        # the job's row (as the worker's progress write does), and commits
        writes.append(1)
        if len(writes) == 2:
            with psycopg.connect(database_url) as holder:
                holder.execute(
                    "SELECT 1 FROM ingest_jobs WHERE id = %s FOR NO KEY UPDATE", (job_id,)
                )
                Store.from_runtime(rt).delete_collection(name)
                with rt.db.connection() as conn:
                    left.append(store.get(conn, job_id).status)
                holder.rollback()
        return write(*args, **kwargs)

    monkeypatch.setattr(documents, "write_documents", deleting)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    raised: list[str] = []
    with Runtime(one_a_round) as small:
        try:
            run_job(small, job_id)
        except CollectionNotFoundError as exc:  # the queue sees the job's failure too
            raised.append(exc.code)
    assert left == ["running"]  # the delete passed the job by
    with rt.db.connection() as conn:
        done = store.get(conn, job_id)
    assert done.status == "failed", (done.summary, done.errors)
    assert done.errors[-1]["code"] == "collection_not_found", done.errors
    assert done.errors[-1]["document"] is None
    assert f"{name!r} was deleted after this job was queued" in done.errors[-1]["detail"]
    assert raised == ["collection_not_found"]
