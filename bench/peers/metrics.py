"""The figures: nDCG@10, recall against exact search, latency percentiles, pairwise ratios.

Pure Python and numpy, no peer package, so the project environment (and its tests) can
use it. nDCG uses the BEIR/trec_eval reading: gain = judged score, discount log2(rank+1).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import numpy as np


def ndcg_at_k(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> float:
    """Mean nDCG@k over the judged queries; a query missing from ``run`` scores 0."""
    scores: list[float] = []
    for qid, rel in qrels.items():
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        if idcg == 0:
            continue
        ranked = list(dict.fromkeys(run.get(qid, ())))[:k]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        scores.append(dcg / idcg)
    return sum(scores) / len(scores) if scores else 0.0


def docs_from_chunks(keys: Sequence[str], k: int = 10) -> list[str]:
    """Documents in the order their first chunk appears (``<doc>:<ordinal>`` keys), top ``k``."""
    return list(dict.fromkeys(key.rsplit(":", 1)[0] for key in keys))[:k]


def exact_top_k(chunk_vecs: np.ndarray, query_vecs: np.ndarray, k: int = 10) -> np.ndarray:
    """Row indices of the ``k`` nearest chunks by cosine (vectors are unit length), per query."""
    sims = query_vecs @ chunk_vecs.T
    top = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(
    found: Mapping[str, Sequence[str]], exact: Mapping[str, Sequence[str]], k: int = 10
) -> float:
    """Mean share of the exact top-``k`` chunks that a system's top-``k`` holds (queries it ran)."""
    shares = [
        len(set(found[q][:k]) & set(want[:k])) / len(want[:k])
        for q, want in exact.items()
        if want and q in found
    ]
    return sum(shares) / len(shares) if shares else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), p))


def paired_ratio(system: Sequence[float], base: Sequence[float]) -> float:
    """Median over rounds of system/base, each ratio taken within one round (interleaved)."""
    pairs = [s / b for s, b in zip(system, base, strict=True) if b and not math.isnan(s)]
    return statistics.median(pairs) if pairs else float("nan")
