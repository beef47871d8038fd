"""The verification arithmetic: checksums that catch one changed float, exact search that
matches pgvector's distances, and recall that counts ties as hits; and the memory the
verification of a small import into a large collection takes."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ragstore.db import spaces
from ragstore.imports import ImportOptions, SourceOptions, open_source, plan_import, run_import
from ragstore.imports.verify import (
    combine,
    differing_ids,
    digests_of,
    distances,
    exact_top_k,
    recall_at_k,
)
from ragstore.runtime import Runtime
from tests.imports.helpers import vectors, write_jsonl, write_npy_csv


def test_checksum_ignores_order_but_catches_one_changed_value() -> None:
    ids = [f"id{i}" for i in range(50)]
    vecs = vectors(50, 6)
    source = digests_of(ids, vecs)
    assert combine(source) == combine(digests_of(ids[::-1], vecs[::-1]))
    changed = vecs.copy()
    changed[17, 3] = np.nextafter(changed[17, 3], np.float32(np.inf))
    stored = digests_of(ids, changed)
    assert combine(stored) != combine(source)
    assert differing_ids(source, stored) == ["id17"]
    del stored["id3"]
    assert differing_ids(source, stored) == ["id17", "id3"]


def test_distances_follow_pgvector() -> None:
    q = np.array([[3.0, 4.0]], dtype=np.float32)
    base = np.array([[3.0, 4.0], [0.0, 1.0], [-3.0, -4.0]], dtype=np.float32)
    np.testing.assert_allclose(distances(q, base, "cosine")[0], [0.0, 0.2, 2.0], atol=1e-6)
    np.testing.assert_allclose(distances(q, base, "l2")[0], [0.0, np.sqrt(18.0), 10.0], atol=1e-5)
    np.testing.assert_allclose(distances(q, base, "ip")[0], [-25.0, -4.0, 25.0])


def test_exact_top_k_orders_by_distance() -> None:
    base = np.array([[float(i), 0.0] for i in range(20)], dtype=np.float32)
    idx, dist = exact_top_k(np.array([[4.2, 0.0]], dtype=np.float32), base, "l2", 3)
    assert idx[0].tolist() == [4, 5, 3]
    np.testing.assert_allclose(dist[0], [0.2, 0.8, 1.2], atol=1e-5)


def test_recall_counts_a_tie_with_the_kth_as_a_hit() -> None:
    truth = [[1, 2]]
    tdist = np.array([[0.1, 0.5]], dtype=np.float32)
    assert recall_at_k(truth, tdist, [[(1, 0.1), (2, 0.5)]]) == 1.0
    assert recall_at_k(truth, tdist, [[(1, 0.1), (9, 0.5)]]) == 1.0  # same distance as #2
    assert recall_at_k(truth, tdist, [[(1, 0.1), (9, 0.7)]]) == 0.5


def test_a_small_import_into_a_large_collection_verifies_in_bounded_memory(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the exact top 10 of the verification read every vector of the collection into
    # memory at once, as Python objects: a 10-record import into a collection of
    # millions was killed for memory; the collection is now read in blocks
    n, dim = 20_000, 32
    seed = write_npy_csv(tmp_path / "seed.npy", [f"old{i}" for i in range(n)], vectors(n, dim))
    opts = ImportOptions(
        collection="verify-big", model="legacy-v32@v1", dimension=dim, backup=False
    )
    assert run_import(rt, plan_import(rt, open_source(str(seed), SourceOptions()), opts), opts)
    monkeypatch.setattr(spaces, "VECTOR_BLOCK", 500, raising=False)
    small = write_jsonl(tmp_path / "s.jsonl", [f"new{i}" for i in range(10)], vectors(10, dim, 1))
    plan = plan_import(rt, open_source(str(small), SourceOptions()), opts)
    tracemalloc.start()
    try:
        report = run_import(rt, plan, opts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.verification.ok and report.verification.recall_at_10 >= 0.95
    assert peak < n * dim * 4, f"{peak} bytes traced, for {n * dim * 4} bytes of vectors"
