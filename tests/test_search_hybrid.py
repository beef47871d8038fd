"""Hybrid search: RRF in SQL equals the reference fusion, weights and k matter, explain
shows both lists, hybrid is at least as good as either mode on a labelled set, and a
1%-selective filter still fills k vector hits."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ragstore.errors import InputError
from ragstore.runtime import Runtime
from ragstore.search import FusionParams, rrf, search
from ragstore.search.aggregate import SECTION_POOL
from ragstore.search.eval import score_run
from ragstore.search.plan import search_plan
from ragstore.search.service import (
    HYBRID_FULLTEXT_DEPTH,
    HYBRID_FULLTEXT_EXACT,
    MIN_CANDIDATES,
    SearchParams,
    run,
)
from tests.search_helpers import Doc, make_collection, write_docs

LABELLED = "labelled"
# Each query has one relevant document. Some need the exact rare token (full-text wins),
# some are paraphrases that share no word with their answer (vector wins).
CORPUS = {
    "e4711": "Error E4711 means the replication slot was dropped while a subscriber was "
    "still attached; recreate the slot.",
    "e4712": "Error E4712 is raised when the write-ahead log archive runs out of disk space.",
    "e4713": "Error E4713 appears when a replication slot name is longer than 63 bytes.",
    "e4714": "Error E4714 signals that the archive command returned a non-zero status.",
    "kb-33": "Ticket KB-33: reports render slowly when a dashboard holds many charts.",
    "kb-31": "Ticket KB-31: the nightly backup job skips tables created after midnight.",
    "kb-32": "Ticket KB-32: reports render blank when the browser blocks third-party cookies.",
    "battery": "To make a notebook's charge last longer, dim the display, close background "
    "apps and turn off bluetooth.",
    "sleep": "Adults who rest seven to nine hours a night have better memory and mood.",
    "bake": "Preheat the oven, cream the butter with sugar, fold in flour and bake the cake "
    "for forty minutes.",
    "tyre": "A flat wheel on the road: loosen the nuts, lift the car with a jack and mount "
    "the spare.",
    "vacuum": "VACUUM reclaims storage occupied by dead tuples in PostgreSQL tables.",
    "index": "A B-tree index speeds up equality and range lookups on a column.",
    "dog": "Puppies need several small meals a day and plenty of sleep while they grow.",
    "rain": "Bring an umbrella: heavy showers are expected across the region this afternoon.",
}
QUERIES = {
    "q1": ("what does E4711 mean", "e4711"),
    "q2": ("KB-32", "kb-32"),
    "q3": ("E4712", "e4712"),
    "q4": ("how can I stop my laptop dying so quickly", "battery"),
    "q5": ("how much should grown-ups snooze", "sleep"),
    "q6": ("what to do with a punctured tire", "tyre"),
    "q7": ("instructions for a sponge dessert", "bake"),
    "q8": ("garbage collection of deleted rows in postgres", "vacuum"),
    "q9": ("will it be wet outside later today", "rain"),
    "q10": ("feeding a young dog", "dog"),
    "q11": ("E4713", "e4713"),
    "q12": ("E4714", "e4714"),
    "q13": ("KB-33", "kb-33"),
    "q14": ("KB-31", "kb-31"),
}


@pytest.fixture(scope="module")
def labelled(rt: Runtime) -> Runtime:
    coll = make_collection(rt, LABELLED)
    write_docs(rt, coll, [Doc(src, [text]) for src, text in CORPUS.items()])
    return rt


def ndcg(rt: Runtime, mode: str, fusion: FusionParams | None = None) -> float:
    run = {
        qid: [
            h.source for h in search(rt, text, collection=LABELLED, k=10, mode=mode, fusion=fusion)
        ]  # type: ignore[arg-type]
        for qid, (text, _) in QUERIES.items()
    }
    qrels = {qid: {doc: 1} for qid, (_, doc) in QUERIES.items()}
    return score_run(run, qrels)["ndcg@10"]


def test_hybrid_is_at_least_as_good_as_each_mode_on_a_labelled_set(labelled: Runtime) -> None:
    vector, fulltext, hybrid = (ndcg(labelled, m) for m in ("vector", "fulltext", "hybrid"))
    assert hybrid >= vector and hybrid >= fulltext
    assert hybrid > min(vector, fulltext)  # and the two lists really differ on this set
    assert fulltext < 1.0 and vector < 1.0


def test_sql_fusion_equals_reference_rrf(labelled: Runtime) -> None:
    query = "postgres error while the slot archive runs out of space"
    fusion = FusionParams(k=10, vector_weight=1.0, fulltext_weight=2.0)
    vec = [h.chunk_id for h in search(labelled, query, collection=LABELLED, mode="vector", k=100)]
    ft = [h.chunk_id for h in search(labelled, query, collection=LABELLED, mode="fulltext", k=100)]
    hits = search(
        labelled, query, collection=LABELLED, mode="hybrid", k=8, fusion=fusion, explain=True
    )
    expected = rrf([vec, ft], k=10, weights=[1.0, 2.0])[:8]
    assert [h.chunk_id for h in hits] == [cid for cid, _ in expected]
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected])
    for h in hits:
        assert h.explain is not None
        v, f = h.explain["vector"], h.explain["fulltext"]
        assert v is not None and v["rank"] == vec.index(h.chunk_id) + 1
        assert f is None or f["rank"] == ft.index(h.chunk_id) + 1
        assert h.score == pytest.approx(1 / (10 + v["rank"]) + (2 / (10 + f["rank"]) if f else 0))
        assert h.explain["rrf"] == {"k": 10, "vector_weight": 1.0, "fulltext_weight": 2.0}


def test_hybrid_fuses_a_shallower_fulltext_list(labelled: Runtime) -> None:
    """The BM25 list of a hybrid search is ``fulltext_list_depth`` deep (default 30, at
    least k); the vector list keeps the full depth; both run at once and fuse as RRF."""
    assert SearchParams(k=10).fulltext_list_depth == HYBRID_FULLTEXT_DEPTH
    # its first ranks exact, the rest a tail (revision 0017); exact all through when set
    assert SearchParams(k=10).fulltext_exact_depth == HYBRID_FULLTEXT_EXACT
    assert SearchParams(k=25).fulltext_exact_depth == 25
    assert SearchParams(k=10, fulltext_depth=30).fulltext_exact_depth == 30
    assert SearchParams(k=10, candidates=50).fulltext_exact_depth == 50
    assert SearchParams(k=10, where={"team": "ops"}).fulltext_exact_depth == 30
    assert SearchParams(k=50).fulltext_list_depth == 50
    assert SearchParams(k=10, candidates=200).fulltext_list_depth == 200
    ft_mode = SearchParams(k=10, mode="fulltext")
    assert ft_mode.fulltext_list_depth == ft_mode.depth == SECTION_POOL
    query = "postgres error while the slot archive runs out of space"
    vec = [h.chunk_id for h in search(labelled, query, collection=LABELLED, mode="vector", k=100)]
    ft = [h.chunk_id for h in search(labelled, query, collection=LABELLED, mode="fulltext", k=100)]
    assert len(ft) > 3
    p = SearchParams(k=3, fulltext_depth=2, explain=True, sections=False)
    hits = run(labelled, query, LABELLED, p)
    expected = rrf([vec, ft[:3]], k=10)[:3]  # at least k: the list is 3 deep
    assert [h.chunk_id for h in hits] == [cid for cid, _ in expected]
    ranks = [h.explain["fulltext"]["rank"] for h in hits if h.explain and h.explain["fulltext"]]
    assert ranks and max(ranks) <= 3
    with pytest.raises(InputError, match="the full-text depth must be between 1 and 10000"):
        SearchParams(fulltext_depth=0)
    plan = search_plan(labelled, query, LABELLED, k=10)  # explain says the same depths
    assert [(x["list"], x["depth"]) for x in plan["lists"]] == [
        ("vector", MIN_CANDIDATES),
        ("fulltext", HYBRID_FULLTEXT_DEPTH),
    ]
    assert plan["lists"][1]["exact_depth"] == HYBRID_FULLTEXT_EXACT


def test_zero_weight_reduces_hybrid_to_the_other_list(labelled: Runtime) -> None:
    query = "E4712 disk space"
    ft = [h.chunk_id for h in search(labelled, query, collection=LABELLED, mode="fulltext")]
    only_ft = search(
        labelled, query, collection=LABELLED, mode="hybrid", fusion=FusionParams(vector_weight=0.0)
    )
    assert [h.chunk_id for h in only_ft][: len(ft)] == ft


def test_a_zero_weight_list_adds_no_hits_of_its_own(labelled: Runtime) -> None:
    """A list weighted 0 adds nothing to a chunk's RRF score, so the chunks only it found
    scored 0 and filled the rest of ``k`` in chunk-id order: hybrid with
    ``vector_weight=0`` answered the full-text hits and then arbitrary chunks."""
    query = "E4712 disk space"
    for sections in (False, True):
        ft = search(labelled, query, collection=LABELLED, mode="fulltext", k=50, sections=sections)
        assert 0 < len(ft) < 20
        only_ft = search(
            labelled,
            query,
            collection=LABELLED,
            mode="hybrid",
            k=50,
            sections=sections,
            fusion=FusionParams(vector_weight=0.0),
        )
        assert [h.chunk_id for h in only_ft] == [h.chunk_id for h in ft]
        assert all(h.score > 0 for h in only_ft)
        vec = search(labelled, query, collection=LABELLED, mode="vector", k=5, sections=sections)
        only_vec = search(
            labelled,
            query,
            collection=LABELLED,
            mode="hybrid",
            k=5,
            sections=sections,
            fusion=FusionParams(fulltext_weight=0.0),
        )
        assert [h.chunk_id for h in only_vec] == [h.chunk_id for h in vec]


def test_the_plan_of_an_explained_search_is_the_one_it_ran(labelled: Runtime) -> None:
    """``explain``'s plan names the RRF constant, the weights and the depths the search
    used: it said the defaults (k 10, weights 1) beside hits fused with k 60 and weights
    2 and 0.5, and a depth of 50 for a ``sections=False`` list that was k deep."""
    from ragstore.store import search_response

    answer = search_response(
        labelled,
        LABELLED,
        "E4712 disk space",
        k=3,
        explain=True,
        rrf_k=60,
        vector_weight=2,
        fulltext_weight=0.5,
        sections=False,
    )
    assert answer.plan is not None and answer.data and answer.data[0].explain is not None
    fusion = {"k": 60.0, "vector_weight": 2.0, "fulltext_weight": 0.5}
    assert answer.data[0].explain["rrf"] == fusion
    assert answer.plan["fusion"] == {"method": "rrf", **fusion}
    chunks = search_response(
        labelled, LABELLED, "E4712", k=3, mode="fulltext", explain=True, sections=False
    )
    assert chunks.plan is not None
    assert [x["depth"] for x in chunks.plan["lists"]] == [3]


def test_rrf_reference() -> None:
    assert rrf([["a", "b"], ["b", "c"]], k=0) == [("b", 1.5), ("a", 1.0), ("c", 0.5)]
    assert rrf([["a"], ["b"]], k=60) == [("a", 1 / 61), ("b", 1 / 61)]  # tie: by id
    assert rrf([["a"], ["b"]], k=1, weights=[1, 3])[0] == ("b", 1.5)
    with pytest.raises(ValueError, match="2 lists but 1 weights"):
        rrf([["a"], ["b"]], weights=[1])


def test_fusion_parameters_are_checked() -> None:
    with pytest.raises(InputError, match="the vector and full-text weights cannot both be 0"):
        FusionParams(vector_weight=0, fulltext_weight=0)
    with pytest.raises(InputError, match="the RRF constant k must be between 0 and 10000"):
        FusionParams(k=-1)


def test_vector_explain_reports_distance_and_similarity(labelled: Runtime) -> None:
    hits = search(labelled, "baking a cake", collection=LABELLED, mode="vector", k=2, explain=True)
    assert hits[0].source == "bake"
    assert hits[0].explain is not None
    v = hits[0].explain["vector"]
    assert v["rank"] == 1 and v["metric"] == "cosine"
    assert v["similarity"] == pytest.approx(1 - v["distance"]) == pytest.approx(hits[0].score)


def test_selective_filter_still_returns_k_hits(rt: Runtime) -> None:
    """1,000 chunks, 10 of them (1%) tagged rare: k=10 must bring back all ten even though
    an HNSW scan of ef_search=40 candidates holds ~0.4 rare chunks on average."""
    coll = make_collection(rt, "selective")
    topics = [
        "databases",
        "gardening",
        "astronomy",
        "cooking",
        "football",
        "music",
        "finance",
        "travel",
        "chemistry",
        "poetry",
    ]
    docs = [
        Doc(
            f"d{d:03}.md",
            [
                f"Note {i} on {topics[i % 10]}, item {i * 7 % 101}."
                for i in range(d * 10, d * 10 + 10)
            ],
            chunk_metadata={"bucket": "rare" if d % 100 == 0 else "common"},
        )
        for d in range(100)
    ]
    write_docs(rt, coll, docs)
    hits = search(
        rt,
        "notes on gardening",
        collection="selective",
        mode="vector",
        k=10,
        ef_search=40,
        where={"bucket": "rare"},
    )
    assert len(hits) == 10
    assert {h.source for h in hits} == {"d000.md"}
    hybrid = search(
        rt,
        "notes on gardening",
        collection="selective",
        mode="hybrid",
        k=10,
        ef_search=40,
        where={"bucket": "rare"},
    )
    assert len(hybrid) == 10 and all(h.metadata["bucket"] == "rare" for h in hybrid)


def test_the_bm25_list_runs_while_the_query_is_embedded(
    labelled: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query not in the query cache is embedded while the BM25 list already runs (the
    slower list no longer waits for the model); a failing embed is the error reported."""
    from ragstore.embedding.cache import query_cache
    from ragstore.errors import EmbeddingProviderError
    from ragstore.search import service

    started = threading.Event()
    execute = service._Statement.execute

    def noting(self: Any, stmt: Any, values: dict[str, Any], **kw: Any) -> Any:
        if "q" not in values:  # the BM25 list: the vector's statement carries the vector
            started.set()
        return execute(self, stmt, values, **kw)

    monkeypatch.setattr(service._Statement, "execute", noting)
    embedder = labelled.embedder_for(labelled.collection(LABELLED))
    embed_query = embedder.embed_query
    seen: list[bool] = []

    def waiting(text: str) -> Any:
        seen.append(started.wait(10))  # never set if the BM25 list waited for the embed
        return embed_query(text)

    monkeypatch.setattr(embedder, "embed_query", waiting)
    query_cache().clear()
    hits = search(labelled, "what does E4711 mean", collection=LABELLED, k=3, mode="hybrid")
    assert seen == [True]
    assert hits[0].source == "e4711"

    def failing(text: str) -> Any:
        started.wait(10)
        raise EmbeddingProviderError("the model is down")

    monkeypatch.setattr(embedder, "embed_query", failing)
    query_cache().clear()
    started.clear()
    with pytest.raises(EmbeddingProviderError, match="the model is down"):
        search(labelled, "what does E4712 mean", collection=LABELLED, k=3, mode="hybrid")
    stats = labelled.db.pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"]  # the BM25 list gave its connection back


def test_hybrid_hits_carry_their_metadata(rt: Runtime) -> None:
    """Hybrid's lists bring metadata as JSON text, parsed for the hits only: the same
    values as the vector search's hits."""
    coll = make_collection(rt, "hybrid_meta")
    meta = {"team": "db", "tags": ["wal", "slots"], "level": 3, "nested": {"a": None}}
    write_docs(
        rt,
        coll,
        [
            Doc("a.txt", ["the replication slot was dropped"], chunk_metadata=meta),
            Doc("b.txt", ["ovens bake cakes"]),
        ],
    )
    hybrid = search(rt, "replication slot", collection=coll.name, k=2, mode="hybrid")
    vector = search(rt, "replication slot", collection=coll.name, k=2, mode="vector")
    assert hybrid[0].source == "a.txt" and hybrid[0].metadata == vector[0].metadata
    assert hybrid[0].metadata["nested"] == {"a": None} and hybrid[0].metadata["level"] == 3
    assert isinstance(hybrid[1].metadata, dict)
