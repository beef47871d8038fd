"""API keys, ingest jobs and the procrastinate job queue.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25

``api_keys`` keeps only a salted scrypt hash of each key's secret, looked up by its public
id. ``ingest_jobs`` is what a client sees of a background ingest (status, progress,
per-document errors); ``ingest_job_files`` holds the uploaded bytes so that a worker on any
machine can run the job. The queue itself is procrastinate's schema (the pinned
procrastinate version's ``schema.sql``), so `ragstore db upgrade` creates it and the
downgrade removes every table, type and function it made.
"""

from importlib import resources

from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def _procrastinate_schema() -> str:
    return (resources.files("procrastinate.sql") / "schema.sql").read_text(encoding="utf-8")


def upgrade() -> None:
    op.execute("""
    CREATE TABLE api_keys (
        id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key_id       text NOT NULL UNIQUE,
        salt         bytea NOT NULL,
        secret_hash  bytea NOT NULL,
        scope        text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
        collection   text,
        name         text NOT NULL DEFAULT '',
        created_at   timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at   timestamptz
    );

    CREATE TABLE ingest_jobs (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue_job_id    bigint,
        collection      text NOT NULL,
        status          text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
        attempts        integer NOT NULL DEFAULT 0,
        total_documents integer NOT NULL DEFAULT 0,
        documents_done  integer NOT NULL DEFAULT 0,
        chunks_done     integer NOT NULL DEFAULT 0,
        errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
        summary         jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at      timestamptz NOT NULL DEFAULT now(),
        started_at      timestamptz,
        finished_at     timestamptz,
        updated_at      timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ingest_jobs_status_idx ON ingest_jobs (status, id);

    CREATE TABLE ingest_job_files (
        job_id   bigint NOT NULL REFERENCES ingest_jobs(id) ON DELETE CASCADE,
        ordinal  integer NOT NULL,
        name     text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        content  bytea NOT NULL,
        PRIMARY KEY (job_id, ordinal)
    );
    """)
    op.execute(_procrastinate_schema())


def downgrade() -> None:
    op.execute("""
    DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
        procrastinate_jobs, procrastinate_workers CASCADE;
    DO $$
    DECLARE r regprocedure;
    BEGIN
        FOR r IN SELECT p.oid::regprocedure FROM pg_proc p
                 JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
        LOOP
            EXECUTE 'DROP ROUTINE ' || r::text || ' CASCADE';
        END LOOP;
    END $$;
    DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
        procrastinate_job_status CASCADE;
    DROP TABLE ingest_job_files;
    DROP TABLE ingest_jobs;
    DROP TABLE api_keys;
    """)
