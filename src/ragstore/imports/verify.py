"""Proof that an import kept everything: row counts, checksums and search parity.

The checksum is a sha256 over every (id, vector) pair sorted by id, the id as UTF-8 and the
vector as little-endian float32 (what pgvector stores), computed once over the source and
once over the rows read back from PostgreSQL; equal checksums mean every id arrived with
its exact vector. Search parity asks ragstore's HNSW index for the top 10 of a sample of
the source's own vectors and compares them with an exact search over the same vectors in
NumPy: recall@10, ties counted as hits (a hit no farther than the exact 10th is right).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
TIE_EPS = 1e-5


def record_digest(rid: str, vector: npt.NDArray[np.floating]) -> bytes:
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return hashlib.sha256(len(rid.encode()).to_bytes(4, "little") + rid.encode() + data).digest()


def combine(digests: dict[str, bytes]) -> str:
    """One hex checksum over per-record digests, independent of the order they came in."""
    total = hashlib.sha256()
    for rid in sorted(digests):
        total.update(digests[rid])
    return total.hexdigest()


def digests_of(ids: Sequence[str], vectors: Matrix) -> dict[str, bytes]:
    return {rid: record_digest(rid, vectors[i]) for i, rid in enumerate(ids)}


def differing_ids(source: dict[str, bytes], stored: dict[str, bytes], limit: int = 5) -> list[str]:
    """The first ids (sorted) that are missing on one side or carry another vector."""
    out = []
    for rid in sorted(set(source) | set(stored)):
        if source.get(rid) != stored.get(rid):
            out.append(rid)
            if len(out) >= limit:
                break
    return out


def distances(queries: Matrix, base: Matrix, metric: str) -> Matrix:
    """pgvector's distance for each (query, base row): cosine 1-cos, l2 Euclidean, ip -dot."""
    if metric == "cosine":
        qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        bn = base / np.linalg.norm(base, axis=1, keepdims=True)
        return np.asarray(1.0 - qn @ bn.T, dtype=np.float32)
    if metric == "ip":
        return np.asarray(-(queries @ base.T), dtype=np.float32)
    sq = (
        np.sum(queries**2, axis=1)[:, None]
        + np.sum(base**2, axis=1)[None, :]
        - 2.0 * (queries @ base.T)
    )
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float32)


def exact_top_k(
    queries: Matrix, base: Matrix, metric: str, k: int, block: int = 32
) -> tuple[npt.NDArray[np.int64], Matrix]:
    """Row indices and distances of the ``k`` nearest base rows for each query (brute force)."""
    k = min(k, base.shape[0])
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    dist = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], block):
        d = distances(queries[start : start + block], base, metric)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d, part, axis=1)
        order = np.argsort(pd, axis=1)
        idx[start : start + block] = np.take_along_axis(part, order, axis=1)
        dist[start : start + block] = np.take_along_axis(pd, order, axis=1)
    return idx, dist


def recall_at_k(
    exact_ids: Sequence[Sequence[int]],
    exact_dist: Matrix,
    found: Iterable[Sequence[tuple[int, float]]],
) -> float:
    """Mean share of the exact top k that the index found; ties with the k-th count."""
    scores = []
    for truth, tdist, hits in zip(exact_ids, exact_dist, found, strict=True):
        k = len(truth)
        kth = float(tdist[-1]) if k else 0.0
        truth_set = set(truth)
        good = sum(1 for cid, d in hits[:k] if cid in truth_set or d <= kth + TIE_EPS)
        scores.append(good / k if k else 1.0)
    return float(np.mean(scores)) if scores else 1.0


@dataclass
class Verification:
    """What the import proved, printed by the CLI and kept in the JSON report."""

    source_rows: int
    stored_rows: int
    source_checksum: str
    stored_checksum: str
    recall_at_10: float
    queries: int
    ef_search: int
    min_recall: float
    differing_ids: list[str] = field(default_factory=list)

    @property
    def rows_ok(self) -> bool:
        return self.source_rows == self.stored_rows

    @property
    def checksum_ok(self) -> bool:
        return self.source_checksum == self.stored_checksum

    @property
    def recall_ok(self) -> bool:
        return self.recall_at_10 >= self.min_recall

    @property
    def ok(self) -> bool:
        return self.rows_ok and self.checksum_ok and self.recall_ok
