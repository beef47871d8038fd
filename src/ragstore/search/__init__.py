"""Search: a query in, ranked hits out."""

from ragstore.search.service import search

__all__ = ["search"]
