"""The peer benchmark's own parts that need no peer package: its metrics, its corpus, the
ragstore adapter end to end on three SciFact documents, and the report table."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench.instant_embedder import InstantServer
from bench.peers import metrics
from bench.peers.corpus import SCIFACT, Corpus, chunk_files, load_scifact, write_files
from bench.peers.encoders import CachedVectors
from bench.peers.report import ROWS, markdown, targets
from bench.peers.systems import Ragstore, _sqlalchemy_url

from tests.conftest import TEMPLATE, create_database


def test_ndcg_matches_hand_computed_values() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}}
    perfect = {"q1": ["a"], "q2": ["b", "c"]}
    assert metrics.ndcg_at_k(perfect, qrels) == pytest.approx(1.0)
    # q1: relevant doc at rank 2 -> 1/log2(3); q2: nothing found -> 0
    run = {"q1": ["x", "a"], "q2": ["y"]}
    assert metrics.ndcg_at_k(run, qrels) == pytest.approx((1 / math.log2(3)) / 2)


def test_docs_from_chunks_keeps_first_appearance() -> None:
    assert metrics.docs_from_chunks(["7:0", "3:1", "7:2", "9:0"], k=2) == ["7", "3"]


def test_exact_top_k_and_recall() -> None:
    chunks = np.eye(4, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0, 0], [0, 0, 0.2, 0.8]], dtype=np.float32)
    top = metrics.exact_top_k(chunks, queries, 2)
    assert top.tolist() == [[0, 1], [3, 2]]
    exact = {"q1": ["a", "b"], "q2": ["c", "d"]}
    assert metrics.recall_at_k({"q1": ["b", "a"], "q2": ["c", "x"]}, exact, 2) == 0.75
    assert metrics.recall_at_k({"q1": ["a", "b"]}, exact, 2) == 1.0  # q2 not run: not counted


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    assert metrics.paired_ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == 2.0
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_subset_keeps_every_judged_document() -> None:
    corpus = load_scifact(SCIFACT, max_docs=400)
    judged = {d for rel in corpus.qrels.values() for d in rel}
    assert len(corpus.docs) == 400
    assert judged <= corpus.docs.keys()
    assert len(corpus.queries) == 300 and corpus.queries.keys() == corpus.qrels.keys()


def test_sqlalchemy_url_keeps_the_socket() -> None:
    url = "postgresql://postgres:@/lc_r0?host=/tmp/x/pg"
    assert _sqlalchemy_url(url, "psycopg") == "postgresql+psycopg://postgres@/lc_r0?host=/tmp/x/pg"


def test_ragstore_adapter_ingests_searches_and_skips_unchanged(
    database_url: str, tmp_path: Path
) -> None:
    full = load_scifact(SCIFACT)
    ids = ["4983", "5836", "7912"]
    corpus = Corpus({i: full.docs[i] for i in ids}, {}, {})
    docs = tmp_path / "docs"
    write_files(corpus, docs)
    chunks = chunk_files(docs)
    assert {c["doc"] for c in chunks} == set(ids)
    system = Ragstore(
        {
            "database_url": database_url,
            "work_dir": str(tmp_path),
            "docs_dir": str(docs),
            "batch_size": 64,
        }
    )
    system.open()
    try:
        assert system.ingest() == len(chunks)
        system.settle()  # VACUUM (ANALYZE) of its database, as the worker does before timing
        title = full.docs["5836"].split("\n", 1)[0]
        clock = system.encode_clock.seconds
        hits = system.search(title, 3)
        assert hits[0].startswith("5836:")
        assert system.encode_clock.seconds > clock  # the query encode, timed apart
        assert set(hits) <= {c["key"] for c in chunks}
        assert system.reingest() == 0  # unchanged files: nothing embedded again
        assert system.disk_bytes() > 0
    finally:
        system.close()


def _fake_report() -> dict[str, Any]:
    def sys_block(x: float) -> dict[str, Any]:
        med = {key: x for key, _, _ in ROWS}
        med.update(
            ingest_s=4.4 * x,
            reingest_embedded=0.0 if x == 1.0 else 1800.0,
            chunks=1800.0,
            recall_at_10=1.0,
        )
        return {"median": med, "ratio_to_ragstore": {k: 2.0 for k in med}}

    summary = {
        "ragstore": sys_block(1.0),
        "chroma": sys_block(3.0),
        "encode": {"median": {"encode_s": 4.0, "chunks_per_s": 250.0}},
    }
    summary["ragstore"]["median"].update(hybrid_ndcg_at_10=0.7, hybrid_p50_ms=9.0, reingest_s=0.1)
    return {
        "summary": summary,
        "machine": {"nproc": 2, "cpu": "X", "ram_gib": 24.0, "python": "3.11"},
        "quick": True,
        "date": "2026-11-25 06:00 UTC",
        "wall_s": 300.0,
        "docs": 1000,
        "chunks": 1800,
        "queries": 300,
        "rounds": 2,
        "batch_size": 64,
        "clients": 8,
        "threads": 1,
        "latency_queries": 100,
        "versions": {"project env": {"torch": "2.13.0"}, "bench env": {"chromadb": "1"}},
    }


def test_report_table_has_a_row_per_figure_and_ratios_for_peers() -> None:
    text = markdown(_fake_report(), "python -m bench.peers --quick")
    assert "| figure | ragstore | chroma |" in text
    assert "| ingest, chunks/s | 1.0 | 3.0 (2.00×) |" in text
    assert "nDCG@10, ragstore hybrid | 0.700" in text
    assert "`python -m bench.peers --quick`" in text and "chromadb 1" in text


def test_report_says_the_round_trip_the_instant_server_held() -> None:
    report = {**_fake_report(), "encoder": "instant", "delay_ms": 100.0}
    text = markdown(report, "python -m bench.peers --encoder instant --delay-ms 100")
    assert "each answer held 100 ms" in text and "`--delay-ms 100`" in text
    assert "each answer held" not in markdown(_fake_report(), "python -m bench.peers")


def test_a_round_trip_needs_the_instant_server(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.peers.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--delay-ms", "100", "--peer-python", sys.executable])
    assert exit_info.value.code == 2
    assert "--delay-ms holds the instant server's answers" in capsys.readouterr().err


def test_targets_are_judged_from_the_figures() -> None:
    lines = "\n".join(targets(_fake_report()))
    # chroma's chunks/s ratio to ragstore is 2.0: ragstore is at 0.5x the fastest peer
    assert "ragstore at 0.50× its chunks/s (paired) — **not met**" in lines
    assert "Ingest within 15% of pure encode: +10.0% — **met**" in lines
    assert "44× (0 chunks embedded; every peer re-embedded all: yes) — **met**" in lines
    assert "Hybrid nDCG@10 above every peer's default search: 0.700 vs 3.000" in lines
    assert "(peer/ragstore 2.00×, paired) — **met**" in lines


def test_targets_compare_the_indexed_peers_apart() -> None:
    """The issue's line takes the fastest of all peers; a second line, for information,
    the fastest of those whose load builds an ANN index as ragstore's does."""
    report = _fake_report()
    s = report["summary"]
    s["langchain-postgres"] = {"median": {**s["chroma"]["median"]}, "ratio_to_ragstore": {}}
    s["langchain-postgres"]["ratio_to_ragstore"] = {"chunks_per_s": 4.0}
    s["langchain-postgres"]["median"]["chunks_per_s"] = 4.0
    s["llama-index-hnsw"] = {"median": {**s["chroma"]["median"]}, "ratio_to_ragstore": {}}
    s["llama-index-hnsw"]["ratio_to_ragstore"] = {"chunks_per_s": 0.5}
    s["llama-index-hnsw"]["median"]["chunks_per_s"] = 0.5
    lines = "\n".join(targets(report))
    assert "fastest peer (langchain-postgres): ragstore at 0.25×" in lines
    assert "index as ragstore does (chroma, llama-index-hnsw): 0.50× the fastest of them " in lines
    assert "(chroma)" in lines
    assert "ANN index" not in "\n".join(targets(_fake_report()))  # chroma alone: no second line


def test_an_unknown_system_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.peers.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--systems", "chroma,llama-index-hsnw", "--peer-python", sys.executable])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown llama-index-hsnw" in err and "llama-index-hnsw" in err


def test_cached_vectors_look_up_chunk_texts_and_encode_the_rest(tmp_path: Path) -> None:
    chunks = [{"key": "1:0", "doc": "1", "text": "alpha"}, {"key": "2:0", "doc": "2", "text": "b"}]
    chunks_file = tmp_path / "chunks.jsonl"
    chunks_file.write_text("\n".join(json.dumps(c) for c in chunks), encoding="utf-8")
    table = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.savez(tmp_path / "v.npz", chunks=table, queries=table[:1])
    cache = CachedVectors(chunks_file, tmp_path / "v.npz")
    encoded: list[list[str]] = []

    def model(texts: list[str]) -> np.ndarray:
        encoded.append(texts)
        return np.full((len(texts), 2), 0.5, dtype=np.float32)

    out = cache.embed(["b", "a query", "alpha"], model)
    assert encoded == [["a query"]]  # only the text missing from the table reached the model
    assert out.tolist() == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert (cache.hits, cache.misses) == (2, 1)


def test_ragstore_adapter_with_the_instant_server(
    pg_admin_uri: str, template_url: str, tmp_path: Path
) -> None:
    database_url = create_database(pg_admin_uri, TEMPLATE)  # its own "bench" collection
    full = load_scifact(SCIFACT)
    ids = ["4983", "5836"]
    docs = tmp_path / "docs"
    write_files(Corpus({i: full.docs[i] for i in ids}, {}, {}), docs)
    chunks = chunk_files(docs)
    with InstantServer() as server:
        system = Ragstore(
            {
                "database_url": database_url,
                "work_dir": str(tmp_path),
                "docs_dir": str(docs),
                "batch_size": 64,
                "encoder": "instant",
                "instant_url": server.base_url,
            }
        )
        system.open()
        try:
            assert system.ingest() == len(chunks)  # the same chunks as MiniLM's pin
            title = full.docs["5836"].split("\n", 1)[0]
            assert system.search(title, 3)[0].startswith("5836:")
            embedder = system.rt.embedder_for(system.rt.collection("bench"))
            assert embedder.spec.provider == "openai"
        finally:
            system.close()


def test_ragstore_texts_adapter_takes_the_peers_chunks(
    pg_admin_uri: str, template_url: str, tmp_path: Path
) -> None:
    """``ragstore-texts``: the peers' chunk texts under their keys, through add_texts."""
    database_url = create_database(pg_admin_uri, TEMPLATE)
    full = load_scifact(SCIFACT)
    ids = ["4983", "5836", "7912"]
    docs = tmp_path / "docs"
    write_files(Corpus({i: full.docs[i] for i in ids}, {}, {}), docs)
    chunks = chunk_files(docs)
    system = Ragstore(
        {"database_url": database_url, "work_dir": str(tmp_path), "batch_size": 64}, chunks
    )
    assert system.name == "ragstore-texts"
    system.open()
    try:
        assert system.ingest() == len(chunks)
        title = full.docs["5836"].split("\n", 1)[0]
        hits = system.search(title, 3)
        assert hits[0].startswith("5836:") and set(hits) <= {c["key"] for c in chunks}
        assert system.reingest() == 0  # the same texts again: nothing embedded
    finally:
        system.close()
