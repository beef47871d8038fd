"""Background ingestion: jobs kept in PostgreSQL, run by ``ragstore worker`` processes.

The queue is procrastinate's (its schema is applied by our revision 0003); what a client
sees of a job (status, progress, per-document errors) is our ``ingest_jobs`` table.
"""

from ragstore.db.jobs import JobFile, JobRecord
from ragstore.jobs.queue import INGEST_TASK, QUEUE, build_queue
from ragstore.jobs.service import submit_ingest

__all__ = ["INGEST_TASK", "QUEUE", "JobFile", "JobRecord", "build_queue", "submit_ingest"]
