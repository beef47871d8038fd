"""Reciprocal rank fusion, the rule hybrid search runs on its two lists (search/fused.py).

RRF scores an item by ``sum(weight_i / (k + rank_i))`` over the lists it appears in
(ranks start at 1; a list it is missing from adds nothing). It needs no score
calibration between BM25 and cosine similarity, which is why it is the default way to
combine them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ragstore.errors import InputError
from ragstore.validation import finite_number

# Tuned on SciFact's train judgments (bench/search_quality.py): k=10 beat the customary 60
# there (0.708 vs 0.701 nDCG@10) and on the held-out test split (0.714 vs 0.706).
DEFAULT_RRF_K = 10.0
DEFAULT_VECTOR_WEIGHT = 1.0
DEFAULT_FULLTEXT_WEIGHT = 1.0

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class FusionParams:
    """The RRF constant and the weight of each list (vector, full-text)."""

    k: float = DEFAULT_RRF_K
    vector_weight: float = DEFAULT_VECTOR_WEIGHT
    fulltext_weight: float = DEFAULT_FULLTEXT_WEIGHT

    def __post_init__(self) -> None:
        # finite numbers only, as the HTTP schema takes them: "20" raised a TypeError
        # below, True was taken as 1 and NaN was said to be out of range. A NumPy scalar
        # is kept as the Python number it is, as the HTTP clients send it
        for attr, name in (
            ("k", "rrf_k"),
            ("vector_weight", "vector_weight"),
            ("fulltext_weight", "fulltext_weight"),
        ):
            object.__setattr__(self, attr, finite_number(getattr(self, attr), name))
        if not 0 <= self.k <= 10_000:
            raise InputError(f"the RRF constant k must be between 0 and 10000, got {self.k:g}")
        for name, w in (("vector", self.vector_weight), ("full-text", self.fulltext_weight)):
            if not 0 <= w <= 100:
                raise InputError(f"the {name} weight must be between 0 and 100, got {w:g}")
        if self.vector_weight == 0 and self.fulltext_weight == 0:
            raise InputError("the vector and full-text weights cannot both be 0")


def rrf(
    lists: Sequence[Sequence[K]],
    *,
    k: float = DEFAULT_RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[K, float]]:
    """Fuse ranked lists (best first) into (item, score), best first.

    Ties are broken by the item itself, ascending (by chunk id for chunks). A list
    weighted 0 adds nothing, so the items only it holds are left out: they scored 0 and
    filled the rest of a hybrid search's ``k`` in chunk-id order, where a zero weight
    is to reduce the search to the other list.
    """
    weights = list(weights) if weights is not None else [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"{len(lists)} lists but {len(weights)} weights")
    scores: dict[K, float] = {}
    for items, w in zip(lists, weights, strict=True):
        if w == 0:
            continue
        for rank, item in enumerate(items, start=1):
            scores[item] = scores.get(item, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
