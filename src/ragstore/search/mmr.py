"""Maximal marginal relevance (MMR): ``k`` hits chosen for relevance and diversity.

A search with ``mmr`` ranks as it would without (any mode, any filter) but takes its
best ``fetch_k`` hits as candidates; their stored embeddings are read in one statement
(search/service.py ``_run_mmr``) and :func:`select` picks ``k`` of them, LangChain's
definition (``langchain_core.vectorstores.utils.maximal_marginal_relevance``): first the
most relevant candidate, then each time the one that maximises
``lambda_mult * relevance(d) - (1 - lambda_mult) * max(sim(d, s) for s picked)``, ``sim``
the cosine similarity of the stored vectors, whatever the collection's metric; ties go to
the better-ranked candidate. ``lambda_mult`` 1 is pure relevance, 0 pure diversity.

Relevance is the search's own ranking, on the cosine scale: the candidates' cosine
similarities to the query's vector, handed out by rank (the best-ranked candidate gets
the highest of them, the second the second highest...). So ``lambda_mult`` 1 returns the
plain top ``k`` in every mode: a hybrid or full-text search's order, a section ranking's
order, a vector search's under any metric. LangChain's own relevance, each candidate's
cosine to the query, would reorder a full-text or hybrid ranking by the vector list's
measure alone at lambda 1 (what a user who chose that mode did not ask for), and in
vector mode of a cosine collection ranking chunks it is the same thing: the ranking is
by that cosine, so each candidate gets its own. The scale stays the cosine's so that
``lambda_mult`` weighs relevance against the cosine redundancy term in the same units
in every mode (a BM25 or RRF score has no common scale with a cosine).

Three near-copies of one passage fill a plain top 3; with MMR the second copy scores
``lambda * 0.9 - (1 - lambda) * 1.0`` and a relevant passage that says something else
goes first. Users of LangChain (``search_type="mmr"``) and LlamaIndex
(``VectorStoreQueryMode.MMR``) expect it of a vector store.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragstore.errors import InputError

DEFAULT_FETCH_K = 20  # LangChain's default; at least k
DEFAULT_LAMBDA = 0.5  # LangChain's and LlamaIndex's default
MAX_FETCH_K = 1000  # the same bound as k


@dataclass(frozen=True)
class Pick:
    """One chosen candidate: its index in the candidates, its cosine similarity to the
    query, the relevance MMR weighed (the cosine its rank was given: see the module) and
    its greatest similarity to the candidates picked before it (``None`` for the first)."""

    index: int
    similarity: float
    relevance: float
    redundancy: float | None


def check(enabled: bool, k: int, fetch_k: int | None, lambda_mult: float | None) -> None:
    """Refuse MMR options that make no sense, each with what to give instead. The types
    are checked by the caller (SearchParams)."""
    if not isinstance(enabled, bool):
        raise InputError(f"mmr must be true or false, got {enabled!r}")
    if not enabled:
        refuse_without_mmr({"fetch_k": fetch_k, "lambda_mult": lambda_mult})
        return
    if fetch_k is not None:
        if not 1 <= fetch_k <= MAX_FETCH_K:
            raise InputError(f"fetch_k must be between 1 and {MAX_FETCH_K}, got {fetch_k}")
        if fetch_k < k:
            raise InputError(
                f"fetch_k ({fetch_k}) is smaller than k ({k}): MMR picks k hits among the "
                "best fetch_k; give a fetch_k of at least k"
            )
    if lambda_mult is not None and not (
        isinstance(lambda_mult, numbers.Real) and 0 <= lambda_mult <= 1
    ):
        raise InputError(
            f"lambda_mult must be between 0 (most diverse) and 1 (most relevant), "
            f"got {lambda_mult:g}"
        )


def refuse_without_mmr(options: dict[str, object], mmr_name: str = "mmr") -> None:
    """Refuse the MMR ``options`` given (not ``None``) to a search without MMR, each named
    as its caller spells it (``fetch_k``, the CLI's ``--fetch-k``), as is the switch: the
    API and MCP callers were told to set a ``--mmr`` they have no such thing as."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise InputError(
            f"{' and '.join(given)} only {verb} to a maximal-marginal-relevance search; "
            f"set {mmr_name} too, or leave {them} out"
        )


def resolved(k: int, fetch_k: int | None, lambda_mult: float | None) -> tuple[int, float]:
    """``fetch_k`` and ``lambda_mult``, defaults filled in (``fetch_k``: 20, at least k)."""
    depth = max(k, DEFAULT_FETCH_K) if fetch_k is None else fetch_k
    return depth, DEFAULT_LAMBDA if lambda_mult is None else float(lambda_mult)


def _unit_rows(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Rows scaled to length 1 (a zero row stays zero: similarity 0 to everything)."""
    x = np.asarray(a, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: npt.NDArray[np.float64] = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out


def select(
    query: npt.NDArray[np.float32],
    candidates: npt.NDArray[np.float32],
    k: int,
    lambda_mult: float,
) -> list[Pick]:
    """The MMR choice of ``k`` among ``candidates`` (rows, in the search's ranking, best
    first), in the order picked. One matrix product a pick:
    ``O(k * len(candidates) * dimension)``."""
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    e = _unit_rows(candidates)
    similarity = e @ _unit_rows(query.reshape(1, -1))[0]
    # the ranking's order on the cosine scale: the j-th ranked gets the j-th highest
    relevance = np.sort(similarity)[::-1]
    first = 0  # the most relevant: the best-ranked
    picks = [Pick(first, float(similarity[first]), float(relevance[first]), None)]
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    redundancy = e @ e[first]  # each candidate's greatest similarity to those picked
    while len(picks) < min(k, n):
        score = lambda_mult * relevance - (1 - lambda_mult) * redundancy
        score[taken] = -np.inf
        i = int(np.argmax(score))  # the first of equals: the better-ranked candidate
        picks.append(Pick(i, float(similarity[i]), float(relevance[i]), float(redundancy[i])))
        taken[i] = True
        np.maximum(redundancy, e @ e[i], out=redundancy)
    return picks
