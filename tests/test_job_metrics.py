"""A background job's figures in the metrics its worker exports: its ingest counted once,
with its time, however often it ran; a model that differs from its pin counted where the
job's load refused it. On the real database, with the real model, through :func:`run_job`
(in this process: the worker's metrics port serves this process's registry)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ragstore.db import repository
from ragstore.embedding.registry import DEFAULT_MODEL, resolve_spec
from ragstore.errors import ModelMismatchError
from ragstore.jobs import runner
from ragstore.jobs.runner import run_job
from ragstore.observability.metrics import REGISTRY
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.test_job_passing_errors import _queue, _stored, _trigger


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _ingest_figures() -> dict[str, float]:
    figures = {
        outcome: _sample("ragstore_ingest_documents_total", outcome=outcome)
        for outcome in ("added", "updated", "unchanged", "superseded", "failed")
    }
    figures["runs timed"] = _sample("ragstore_ingest_duration_seconds_count")
    return figures


def test_a_job_run_again_after_a_lost_round_counts_its_last_run_once(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's first run: one document stored, the other's write collided (SQLSTATE
    40001, raised by a trigger), a passing cause; its second run stores that one and finds
    the first unchanged. Each run's report was counted: the metrics said 1 ``failed``
    (a false failure: the job succeeded) and 3 documents for a job of 2, and recorded no
    duration (nothing set the report's time). The last run's report is counted, once."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    name = "metrics-run-again"
    Store.from_runtime(rt).create_collection(name)
    before = _ingest_figures()
    body = (
        "IF nextval('fault_seq') <= 2 THEN"  # its round's write, then its own: one run
        " RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END IF;"
    )
    with _trigger(database_url, body, "NEW.source LIKE '%/raced.md'") as admin:
        done = run_job(rt, _queue(rt, name, ["raced.md", "calm.md"]))
        tries = admin.execute("SELECT last_value FROM fault_seq").fetchone()
    assert tries == (3,)  # two runs: the first lost raced.md, the second stored it
    assert (done.status, done.summary.get("added")) == ("succeeded", 2), done.summary
    assert _stored(rt, name) == ["calm.md", "raced.md"]
    after = _ingest_figures()
    grew = {k: after[k] - before[k] for k in after}
    assert grew == {
        "added": 1,  # raced.md, by the second run
        "updated": 0,
        "unchanged": 1,  # calm.md, stored by the first run, found by the second
        "superseded": 0,
        "failed": 0,
        "runs timed": 1,
    }, grew


def test_a_job_refused_by_a_model_that_differs_from_its_pin_is_counted(rt: Runtime) -> None:
    """A worker whose model's weights differ from the collection's pin fails every job
    with ``model_mismatch``; the counter moved only where the HTTP API answered the error,
    so on the worker's metrics port it stayed 0 and its critical alert was silent."""
    spec = replace(resolve_spec(DEFAULT_MODEL), name="minilm-job-tampered", checksum="sha256:0")
    name = "metrics-tampered"
    with rt.db.connection() as conn:
        repository.create_collection(conn, name, spec)
    before = _sample("ragstore_model_validation_failures_total")
    with pytest.raises(ModelMismatchError):
        run_job(rt, _queue(rt, name, ["a.md"]))
    assert _sample("ragstore_model_validation_failures_total") - before == 1
