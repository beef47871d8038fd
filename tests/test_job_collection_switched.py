"""A re-cutting model switch and a prune under an ingest: the row it read becomes the
chunk set kept for a rollback, another row takes the name, and the prune deletes the
kept one, all between the ingest's read of the collection and its next write. On the
real database, with the real model: through :func:`run_job` (a background job) and
through :meth:`Store.add_documents` (the direct path).

The next write found the row it read gone (``documents.hold_live``) and refused the
document as ``collection_not_found`` ("was deleted"), though the collection was still
there. The job's check (its collection still the one it was queued for: the new row
keeps the name and creation time) passed, that error was no passing cause, and the job
was recorded ``succeeded`` with the rest of its documents never stored. It is a model
switch, told as one: the job runs again at once into the new row and stores them; a
direct ingest reports the document not stored, saying the model was switched (not that
the collection was deleted) and to run the ingest again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragstore.config import Settings
from ragstore.db import documents
from ragstore.ingest.documents import NewDocument, add_documents
from ragstore.jobs.runner import run_job
from ragstore.modelops import migrate, prune
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.pins import pin_smaller_budget
from tests.test_job_passing_errors import _queue, _stored, _text

NARROW = "minilm-96-switched"  # the same weights with a smaller budget: a re-cut


@pytest.fixture(scope="module")
def narrow(rt: Runtime) -> str:
    return pin_smaller_budget(rt, NARROW)


def _switching_and_pruning(
    rt: Runtime, name: str, narrow: str, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int, list[str]]]:
    """Wrap ``documents.write_documents``: before its second call (the first document
    stored, the second embedded for the old model and its transaction holding nothing
    yet) re-cut ``name`` to ``narrow``, switch and prune it, on the test's own Runtime.
    The list gets (the row read before, the live row after, the tables pruned)."""
    write = documents.write_documents
    writes: list[int] = []
    done: list[tuple[int, int, list[str]]] = []

    def switching(*args: Any, **kwargs: Any) -> Any:
        writes.append(1)
        if len(writes) == 2:
            before = rt.collection(name).id
            report = migrate(rt, name, narrow, sample_queries=0)
            assert report.recut and report.switched, report
            dropped = [s.table for s in prune(rt, name)]
            done.append((before, rt.collection(name).id, dropped))
        return write(*args, **kwargs)

    monkeypatch.setattr(documents, "write_documents", switching)
    return done


def test_a_job_whose_collection_is_recut_switched_and_pruned_stores_every_document(
    rt: Runtime, narrow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "switch-pruned-job"
    Store.from_runtime(rt).create_collection(name)
    job_id = _queue(rt, name, [f"j{i}.md" for i in range(4)])
    swapped = _switching_and_pruning(rt, name, narrow, monkeypatch)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(one_a_round) as small:
        done = run_job(small, job_id)
    assert len(swapped) == 1, swapped
    before, after, dropped = swapped[0]
    assert before != after and dropped, swapped  # another row, the read one pruned
    assert (done.status, done.errors) == ("succeeded", []), (done.summary, done.errors)
    assert done.summary.get("added") == 4 and done.documents_done == 4, done.summary
    coll = rt.collection(name)
    assert coll.id == after and coll.model.name == NARROW
    assert _stored(rt, name) == ["j0.md", "j1.md", "j2.md", "j3.md"]


def test_a_direct_ingest_whose_collection_is_recut_switched_and_pruned_says_so(
    rt: Runtime, narrow: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = "switch-pruned-direct"
    Store.from_runtime(rt).create_collection(name)
    docs = []
    for i in range(3):
        (tmp_path / f"d{i}.md").write_bytes(_text(f"d{i}"))
        docs.append(NewDocument(f"d{i}.md", tmp_path / f"d{i}.md"))
    swapped = _switching_and_pruning(rt, name, narrow, monkeypatch)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(one_a_round) as small:
        results = add_documents(small, name, docs)
    assert len(swapped) == 1 and swapped[0][2], swapped
    outcomes = [(r.name, r.status) for r in results]
    assert outcomes == [("d0.md", "added"), ("d1.md", "failed"), ("d2.md", "not_attempted")]
    for r in results[1:]:  # not stored, for the switch, to be run again
        assert r.error is not None and r.error.code == "conflict", r.error
        assert documents.model_switched(r.error), r.error.message
        assert "deleted" not in r.error.message, r.error.message
        assert "run the ingest again" in r.error.message, r.error.message
    # the one stored before the switch was cut again into the new row; the others not
    assert _stored(rt, name) == ["d0.md"]
    # and run again, the ingest stores them under the new model
    monkeypatch.undo()
    again = add_documents(rt, name, docs)
    assert [r.status for r in again] == ["unchanged", "added", "added"], again
    assert _stored(rt, name) == ["d0.md", "d1.md", "d2.md"]
