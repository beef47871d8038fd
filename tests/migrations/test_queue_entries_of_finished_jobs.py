"""Revision 0037: the waiting queue entries of ingest jobs that will never run again (a
job failed by its collection's delete before that delete removed its entry, or a job gone)
are deleted on the way up, with no worker needed; an unfinished job's entry stays. The
downgrade changes nothing."""

from __future__ import annotations

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import jobs as store
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.jobs.queue import build_queue
from ragstore.jobs.service import submit_ingest
from ragstore.runtime import Runtime


def _entries(db: Database) -> dict[int, str]:
    """{job id: its queue entry's status} of every ingest entry, by its job id argument."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT (args->>'job_id')::bigint, status::text FROM procrastinate_jobs"
            " WHERE task_name = 'ragstore.ingest'"
        ).fetchall()
    return {int(job): str(status) for job, status in rows}


def test_entries_of_finished_or_gone_jobs_are_deleted_on_the_way_up(
    upgraded: tuple[Database, Settings],
) -> None:
    db, settings = upgraded
    with Store(settings=settings) as s:
        s.create_collection("waiting")
    with Runtime(settings) as rt:
        app = build_queue(rt.db.conninfo, sync=True)
        with app.open():
            queued, failed, gone = (
                submit_ingest(rt, app, "waiting", [store.JobFile(f"{n}.md", b"# T\n\nt")]).id
                for n in ("queued", "failed", "gone")
            )
    migrations.downgrade(db, "0036")
    # what a collection's delete left before it removed the entries of the jobs it
    # failed: the job failed, its entry waiting; and an entry whose job row is gone
    with db.connect() as conn:
        conn.execute(
            "UPDATE ingest_jobs SET status = 'failed', finished_at = now() - interval '1 day'"
            " WHERE id = %s",
            (failed,),
        )
        conn.execute("DELETE FROM ingest_jobs WHERE id = %s", (gone,))
    assert _entries(db) == {queued: "todo", failed: "todo", gone: "todo"}

    migrations.upgrade(db)
    assert _entries(db) == {queued: "todo"}
    # the failed job no longer waits for a worker to let it go: the sweep deletes it
    with db.connect() as conn:
        assert store.prune_finished(conn, retention_days=0.5) == 1
        left = conn.execute("SELECT id FROM ingest_jobs ORDER BY id").fetchall()
    assert left == [(queued,)]

    migrations.downgrade(db, "0036")
    assert _entries(db) == {queued: "todo"}
    migrations.upgrade(db)
    with db.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()
