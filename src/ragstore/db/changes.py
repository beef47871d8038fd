"""A per-process counter of collection changes, for caches of collection lookups.

Creating, deleting or switching a collection to another embedding space bumps it; the
runtime's collection cache (the search path's) drops what it holds when it moved. Other
processes' changes are caught by that cache's short expiry instead.
"""

from __future__ import annotations

_changes = 0


def collections_changed() -> None:
    """Note that a collection was created, deleted or switched to another space."""
    global _changes
    _changes += 1


def changes() -> int:
    """How many collection changes this process has made."""
    return _changes
