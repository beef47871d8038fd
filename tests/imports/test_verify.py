"""The verification arithmetic: checksums that catch one changed float, exact search that
matches pgvector's distances, and recall that counts ties as hits."""

from __future__ import annotations

import numpy as np

from ragstore.imports.verify import (
    combine,
    differing_ids,
    digests_of,
    distances,
    exact_top_k,
    recall_at_k,
)
from tests.imports.helpers import vectors


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
