"""The waiting queue entries of ingest jobs that will never run again are deleted.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-06

Before session 41 a collection's delete failed its queued jobs but left their entries
waiting in ``procrastinate_jobs`` (``todo``); the finished-job sweep keeps a job whose
entry waits, and only a worker taking the entry (to find the job finished and mark the
entry done) let it go: with no worker running, the jobs stayed for good, in their listing
and in every backup. The delete now removes such entries itself, but those left before
stayed until a worker came, and only workers sweep. This deletes them once, with no
worker needed: a waiting entry of the ingest task that no unfinished job refers to (by
the job's ``queue_job_id`` or by the entry's ``job_id`` argument), so one whose job is
finished (succeeded, failed: never run again) or gone. An entry being taken by a worker
(``doing``) is left to it. The sweep then deletes the jobs in its own time.

The downgrade changes nothing: the entries deleted would only have been taken by a
worker to be marked done (their jobs are finished or gone), which revision 0036's code
does not need, and what they held (a job id) is not worth putting back.
"""

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the job id argument compared as text: an entry whose arguments hold no number is
    # not read as one (a cast would fail the migration on it)
    op.execute("""
    DELETE FROM procrastinate_jobs p
     WHERE p.status = 'todo' AND p.task_name = 'ragstore.ingest'
       AND NOT EXISTS (
           SELECT 1 FROM ingest_jobs j
            WHERE j.status NOT IN ('succeeded', 'failed')
              AND (j.queue_job_id = p.id OR j.id::text = p.args->>'job_id'))
    """)


def downgrade() -> None:
    pass  # nothing to undo: see the module's docstring
