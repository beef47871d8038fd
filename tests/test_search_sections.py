"""Section-level aggregation (search/aggregate.py) on the real database and model: several
matching chunks of one section raise it, each section comes back once as its best chunk
carrying the others, and collections without headings rank exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragstore.ingest import ingest_paths
from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.search.aggregate import SECTION_POOL, Candidate, rank_sections
from ragstore.search.context import with_context
from ragstore.search.service import MIN_CANDIDATES, SearchParams, run
from ragstore.store import Store

FILLER = (
    "The kettle sits on the counter beside the toaster and the bread bin. "
    "Every morning somebody fills it from the tap, switches it on and waits for the click. "
    "Its handle stays cool, its lid opens with a button, and its base turns all the way round. "
    "A small window on the side shows how much water is inside before it boils. "
)


def _paragraph(i: int) -> str:
    # one mention of the query word in about 170 words: each paragraph is its own chunk
    return f"Step {i} of the long routine. " + FILLER * 2 + "Wipe off the limescale. " + FILLER


MANUAL = "\n\n".join(
    [
        "# Kettle manual",
        "## Descaling routine",
        *(_paragraph(i) for i in range(1, 5)),
        "## Quick tip",
        "Limescale? Vinegar dissolves limescale. Pour a cup of vinegar into the kettle, leave "
        "it for an hour, then rinse it three times with fresh water before boiling it again.",
        "## Warranty",
        "The warranty covers the heating element for two years from the date of purchase.",
    ]
)
GARDEN = (
    "The garden lies behind the house, between the shed and the old stone wall. "
    "Paths of gravel run between the beds, and a water butt collects rain from the roof. "
    "Birds visit the feeder by the hedge, and the bench by the pond catches the evening sun. "
)
PLAIN = "\n\n".join(  # no headings; each paragraph long enough to be a chunk of its own
    s + " " + GARDEN * 3
    for s in (
        "Roses want pruning in late winter, just above an outward-facing bud.",
        "Tomatoes need full sun, deep watering twice a week and a stake to climb.",
        "Compost heaps warm up faster when greens and browns are mixed in layers.",
        "Pruning fruit trees in summer slows their growth; in winter it spurs it.",
    )
)


@pytest.fixture(scope="module")
def collection(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sections")
    (root / "kettle.md").write_text(MANUAL)
    (root / "garden.txt").write_text(PLAIN)
    report = ingest_paths(rt, [root], "sections-agg")
    assert not report.failed
    return str(root)


def _search(rt: Runtime, _root: str, query: str, **kw: object) -> list[Hit]:
    return run(rt, query, "sections-agg", SearchParams(**kw))  # type: ignore[arg-type]


def test_several_matching_chunks_raise_their_section_above_a_better_fragment(
    rt: Runtime, collection: str
) -> None:
    chunks = _search(rt, collection, "limescale", k=5, mode="fulltext", sections=False)
    assert [h.section_path[-1] for h in chunks[:3]] == [
        "Quick tip",
        "Descaling routine",
        "Descaling routine",
    ], "chunk by chunk, the short tip wins and fragments of one section follow"
    assert all(h.section_score is None and h.section_hits == [] for h in chunks)

    hits = _search(rt, collection, "limescale", k=5, mode="fulltext")
    assert [h.section_path[-1] for h in hits] == ["Descaling routine", "Quick tip"]
    best = hits[0]
    assert best.chunk_id == chunks[1].chunk_id, "a section comes back as its best chunk"
    assert len(best.section_hits) == 3
    assert set(best.section_hits) == {h.chunk_id for h in chunks[2:5]}
    assert best.score == pytest.approx(chunks[1].score), "score stays the chunk's own BM25"
    assert best.section_score is not None and hits[1].section_score is not None
    assert best.section_score > hits[1].section_score
    assert hits[1].section_hits == []


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_each_section_is_returned_once_with_its_heading(
    rt: Runtime, collection: str, mode: str
) -> None:
    hits = _search(rt, collection, "how do I remove limescale from the kettle?", k=10, mode=mode)
    kettle = [h.section_id for h in hits if h.source.endswith("kettle.md")]
    assert len(kettle) >= 2 and None not in kettle, "every kettle.md chunk has a heading"
    assert len(set(kettle)) == len(kettle), "no section twice"
    scores = [h.section_score for h in hits]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True), "the list is ordered by section_score"  # type: ignore[type-var]
    top = with_context(rt, hits[:1], "section")[0]
    heading = top.context[0]
    assert heading.chunk_type == "heading" and heading.chunk_id == hits[0].section_id
    assert heading.text == hits[0].section_path[-1]
    assert set(hits[0].section_hits) <= {c.chunk_id for c in top.context}
    if mode == "hybrid":
        assert hits[0].section_path[-1] == "Descaling routine"
        assert len(hits[0].section_hits) >= 2


def test_chunks_outside_any_section_rank_exactly_as_before(rt: Runtime, collection: str) -> None:
    where = {"source": str(Path(collection).resolve() / "garden.txt")}
    for mode in ("vector", "fulltext", "hybrid"):
        on = _search(rt, collection, "when to prune", k=4, mode=mode, where=where)
        off = _search(rt, collection, "when to prune", k=4, mode=mode, where=where, sections=False)
        assert [h.chunk_id for h in on] == [h.chunk_id for h in off]
        assert [h.score for h in on] == pytest.approx([h.score for h in off])
        assert all(h.section_id is None and h.section_hits == [] for h in on)
        assert len(on) >= 2 and Path(on[0].source).name == "garden.txt"


def test_store_returns_the_section_fields_and_can_rank_chunks_alone(
    rt: Runtime, collection: str
) -> None:
    store = Store.from_runtime(rt)
    by_section = store.search("sections-agg", "limescale", k=5, mode="fulltext")["data"]
    assert by_section[0]["section_path"][-1] == "Descaling routine"
    assert len(by_section[0]["section_hits"]) == 3 and by_section[0]["section_id"] is not None
    assert by_section[0]["section_score"] > by_section[1]["section_score"]
    chunks = store.search("sections-agg", "limescale", k=5, mode="fulltext", sections=False)
    assert chunks["data"][0]["section_path"][-1] == "Quick tip"
    assert all(h["section_score"] is None and h["section_hits"] == [] for h in chunks["data"])


@pytest.mark.parametrize(
    ("mode", "query"),
    [
        ("fulltext", "water limescale"),
        ("vector", "how do I remove limescale from the kettle?"),
        ("hybrid", "how do I remove limescale from the kettle?"),
        ("hybrid", "pruning roses in winter"),
    ],
)
def test_the_python_rule_ranks_sections_as_the_search_statement_does(
    rt: Runtime, collection: str, mode: str, query: str
) -> None:
    # the pool the statement groups: the list (hybrid: the fused list) as deep as it looks
    depth = MIN_CANDIDATES if mode == "hybrid" else SECTION_POOL
    pool = _search(rt, collection, query, k=depth, mode=mode, sections=False)
    assert len({h.document_id for h in pool}) == 2, "both files compete"
    candidates = [
        Candidate(
            h.chunk_id,
            h.score,
            h.document_id,
            None if h.chunk_type == "heading" else h.section_id,
        )
        for h in pool
    ]
    expected = rank_sections(candidates, 6, hybrid=mode == "hybrid")
    hits = _search(rt, collection, query, k=6, mode=mode)
    assert [h.chunk_id for h in hits] == [s.chunk_id for s in expected]
    assert [h.section_score for h in hits] == pytest.approx([s.section_score for s in expected])
    assert [h.section_hits for h in hits] == [list(s.section_hits) for s in expected]
    assert any(s.section_hits for s in expected), "some section holds several pooled chunks"


@pytest.mark.parametrize(
    ("mode", "query"),
    [
        ("vector", "how do I descale the kettle with vinegar and prune the roses?"),
        ("fulltext", "kettle limescale garden"),
    ],
)
def test_a_hit_ranked_below_k_in_its_list_comes_back_with_all_its_fields(
    rt: Runtime, collection: str, mode: str, query: str
) -> None:
    """A single-list search sends the text of a pooled chunk only where it can be a hit: a
    chunk under a heading, or one within ``k`` plus the number of those. When a section's
    several chunks fill the top of the list, a chunk with no heading ranked below ``k``
    becomes a hit, and comes back whole, as it comes back when sections are off."""
    pool = _search(rt, collection, query, k=SECTION_POOL, mode=mode, sections=False)
    at = {h.chunk_id: i for i, h in enumerate(pool)}
    below_k = 0
    for k in range(1, 7):
        hits = _search(rt, collection, query, k=k, mode=mode)
        for h in hits:
            same = pool[at[h.chunk_id]]
            assert (h.text, h.source, h.title, h.section_path, h.metadata, h.score) == (
                same.text,
                same.source,
                same.title,
                same.section_path,
                same.metadata,
                same.score,
            )
            below_k += at[h.chunk_id] >= k and h.section_id is None
    assert below_k, "some lone chunk ranked below k was a hit"


FERRY = "\n\n".join(
    [
        "# Ferry timetable",
        "Ferries leave the harbour every hour. " + GARDEN * 3,
        "## Winter sailings",  # paragraphs long enough to be chunks of their own
        "In winter the harbour closes at dusk. " + FILLER * 3,
        "Storms can keep the harbour shut for days. " + FILLER * 3,
        "## Summer sailings",
        "Summer evenings are long, and the last boat leaves at ten. " + FILLER,
    ]
)


def test_hits_in_nested_sections_send_each_chunk_once(
    rt: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hits under ``# Ferry timetable`` and in its ``## Winter sailings``: the parent's
    section holds the subsection, and each hit in the subsection came back with it again.
    Parent first, the subsection's hits are merged into it; subsection first, the parent
    keeps its rank and comes back without the subsection's chunks."""
    root = tmp_path_factory.mktemp("nested")
    (root / "ferry.md").write_text(FERRY)
    assert not ingest_paths(rt, [root], "sections-nested").failed
    hits = run(rt, "harbour", "sections-nested", SearchParams(k=5, mode="fulltext", sections=False))
    parent = [h for h in hits if h.section_path == ["Ferry timetable"]]
    inner = [h for h in hits if h.section_path == ["Ferry timetable", "Winter sailings"]]
    assert len(parent) == 1 and len(inner) == 2
    winter = with_context(rt, inner[:1], "section")[0].context
    assert winter[0].text == "Winter sailings"

    [whole] = with_context(rt, parent + inner, "section")
    assert whole.chunk_id == parent[0].chunk_id
    assert whole.merged_hits == [h.chunk_id for h in inner]
    assert {c.chunk_id for c in winter} < {c.chunk_id for c in whole.context}
    assert {c.chunk_id for c in whole.context if c.is_hit} == {h.chunk_id for h in hits}

    first, rest = with_context(rt, inner + parent, "section")
    assert (first.chunk_id, first.merged_hits) == (inner[0].chunk_id, [inner[1].chunk_id])
    assert [c.chunk_id for c in first.context] == [c.chunk_id for c in winter]
    assert rest.chunk_id == parent[0].chunk_id and rest.merged_hits == []
    sent = [c.chunk_id for c in first.context + rest.context]
    assert len(sent) == len(set(sent)) == len(whole.context), "no chunk twice, none lost"
    assert [c.text for c in rest.context][:1] == ["Ferry timetable"]
    assert "Summer sailings" in [c.text for c in rest.context]
