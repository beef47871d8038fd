"""Background ingestion: jobs kept in PostgreSQL, run by ``ragstore worker`` processes.

The queue is procrastinate's (its schema is applied by our revision 0003); what a client
sees of a job (status, progress, per-document errors) is our ``ingest_jobs`` table.

The names below are loaded on first use (PEP 562): importing a leaf module of this
package (``ragstore.jobs.staging``, which the ingest pipeline used then) ran this file, whose
imports reach the job runner and through it ``ragstore.ingest.documents``; imported first,
that module then failed on its own partial import (a circular import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragstore.db.jobs import JobFile, JobRecord
    from ragstore.jobs.queue import INGEST_TASK, QUEUE, build_queue
    from ragstore.jobs.service import submit_ingest

__all__ = ["INGEST_TASK", "QUEUE", "JobFile", "JobRecord", "build_queue", "submit_ingest"]

_HOMES = {
    "JobFile": "ragstore.db.jobs",
    "JobRecord": "ragstore.db.jobs",
    "INGEST_TASK": "ragstore.jobs.queue",
    "QUEUE": "ragstore.jobs.queue",
    "build_queue": "ragstore.jobs.queue",
    "submit_ingest": "ragstore.jobs.service",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
