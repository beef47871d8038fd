"""The documents service: named documents (uploads, API text, job files) in, typed outcomes out.

The HTTP routes and the job worker hand it a client's name, the bytes (already in a
staging file private to the request) and metadata; it runs them through the ingest
pipeline under their stored source (``uploads.names.source_of``) and answers, per
document, what was done and the row as the write left it. Nothing here matches outcomes
by path or rewrites messages: each outcome carries the error object, worded with the
client's name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ragstore.errors import RagstoreError
from ragstore.ingest.service import IngestReport, Item, Progress, WriteGuard, ingest_items
from ragstore.observability import metrics
from ragstore.runtime import Runtime
from ragstore.uploads import names


@dataclass(frozen=True)
class NewDocument:
    name: str  # the client's name: a relative path (``uploads.names.safe_name``)
    staged: Path  # its bytes, in a file nobody else writes
    metadata: dict[str, Any] = field(default_factory=dict)
    accepted_at: datetime | None = None  # a queued job's acceptance (DocumentWrite's)


@dataclass(frozen=True)
class DocumentOutcome:
    """One document's result: ``document`` is the stored row (id, content_hash, ...) as
    this request's transaction wrote or found it; ``error`` is set when it failed."""

    name: str
    status: str  # added | updated | unchanged | superseded | failed
    document: dict[str, Any] | None = None
    error: RagstoreError | None = None
    chunks: int = 0
    again: bool = False  # written again after its round failed (``FileOutcome.again``)


def add_documents(
    rt: Runtime,
    collection: str,
    docs: Sequence[NewDocument],
    *,
    progress: Progress | None = None,
    report: IngestReport | None = None,
    guard: WriteGuard | None = None,
    record: bool = True,
) -> list[DocumentOutcome]:
    """Ingest named documents into an existing collection; outcomes in the order given.

    Documents are encoded together (shared batches) and each is written under its source's
    lock, so concurrent writers of one name are serialized and every outcome describes
    what this call stored. ``guard`` checks each write transaction before its commit
    (a job's run: only while its attempt counts).

    The call's time is set in ``report.seconds`` and, with ``record``, the report is
    counted in the ingest metrics. A caller that may run the same documents again (a job
    run again after a lost database) passes ``record=False`` and counts the report of its
    last run itself: each run counted, the first one's lost documents were ``failed`` and
    the second one's ``added`` again.
    """
    names.unique_names([d.name for d in docs])
    items = [
        Item(
            names.source_of(rt.settings, collection, d.name),
            d.staged,
            d.name,
            dict(d.metadata),
            early_skip=False,
            accepted_at=d.accepted_at,
            origin="upload",  # never pruned by a folder's sync, whatever its data dir
        )
        for d in docs
    ]
    report = report if report is not None else IngestReport(collection=collection)
    t0 = time.perf_counter()
    try:
        ingest_items(rt, collection, items, report, progress=progress, create=False, guard=guard)
    finally:
        # the duration histogram records only a report with its time: unset here, no
        # upload, API add or job was ever in ragstore_ingest_duration_seconds
        report.seconds = time.perf_counter() - t0
        if record:
            # also when an error stopped it after earlier rounds committed: they are counted
            metrics.observe_ingest(report)
    by_source = {o.source: o for o in report.outcomes}
    out = []
    for d, item in zip(docs, items, strict=True):
        o = by_source[item.source]
        out.append(DocumentOutcome(d.name, o.status, o.document, o.exc, o.chunks, o.again))
    return out
