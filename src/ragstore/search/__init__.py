"""Search: a query in, ranked hits out (vector, full-text BM25 or hybrid RRF, with filters)."""

from ragstore.search.filters import compile_filter, parse_filter
from ragstore.search.hybrid import FusionParams, rrf
from ragstore.search.service import MODES, Mode, SearchParams, parse_mode, search

__all__ = [
    "MODES",
    "FusionParams",
    "Mode",
    "SearchParams",
    "compile_filter",
    "parse_filter",
    "parse_mode",
    "rrf",
    "search",
]
