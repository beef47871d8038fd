"""The document's share in section ranking (search/aggregate.py) on the real database and
model: a section of a document that matches in several places overtakes a slightly better
lone section of another document, by exactly the documented arithmetic, while the order
of one document's sections stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragstore.ingest import ingest_paths
from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.search.aggregate import DOCUMENT_SHARE, SECTION_RANK_K
from ragstore.search.service import SearchParams, run

BODY = (
    "The pump sits under the sink next to the filter housing and the drain valve. "
    "Its cover lifts off with two clips, and the hose runs along the back wall to the tank. "
    "A dial on the front sets how often it runs, and a green lamp shows when it is ready. "
    "Keep the area around it dry and leave a hand's width of space for the air to move. "
)
MANUAL = "\n\n".join(  # five sections, each one mention of the query word in ~110 words
    ["# Pump manual"]
    + [f"## Part {i}\n\nStep {i}. Add the descaler. " + BODY * 2 for i in range(1, 6)]
)
NOTE = (  # one section, two mentions in as many words: the best single chunk
    "# Service note\n\n## Reminder\n\nStep 0. Add the descaler, then more descaler. " + BODY * 2
)


@pytest.fixture(scope="module")
def collection(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("docshare")
    (root / "manual.md").write_text(MANUAL)
    (root / "note.md").write_text(NOTE)
    report = ingest_paths(rt, [root], "sections-docshare")
    assert not report.failed
    return str(root)


def _search(rt: Runtime, query: str, **kw: object) -> list[Hit]:
    return run(rt, query, "sections-docshare", SearchParams(**kw))  # type: ignore[arg-type]


def test_a_document_matching_in_several_sections_lifts_them(rt: Runtime, collection: str) -> None:
    chunks = _search(rt, "descaler", k=10, mode="fulltext", sections=False)
    files = [Path(h.source).name for h in chunks]
    assert files == ["note.md"] + ["manual.md"] * 5, "chunk by chunk the note wins"
    assert len({h.section_id for h in chunks}) == 6, "every chunk is a section of its own"

    hits = _search(rt, "descaler", k=10, mode="fulltext")
    assert [Path(h.source).name for h in hits[:2]] == ["manual.md", "note.md"]
    manual = [h for h in hits if h.source.endswith("manual.md")]
    assert [h.chunk_id for h in manual] == [h.chunk_id for h in chunks[1:]], (
        "a document's sections keep their order"
    )
    # own score 1/(K + chunk rank); plus the share of the document's pooled sections
    own = {h.chunk_id: 1.0 / (SECTION_RANK_K + r) for r, h in enumerate(chunks, 1)}
    doc_sum = sum(own[h.chunk_id] for h in chunks[1:])
    assert hits[0].section_score == pytest.approx(own[hits[0].chunk_id] + DOCUMENT_SHARE * doc_sum)
    note = own[chunks[0].chunk_id]
    assert hits[1].section_score == pytest.approx(note * (1 + DOCUMENT_SHARE))
    assert own[hits[0].chunk_id] < note, "without the share the note would still lead"
