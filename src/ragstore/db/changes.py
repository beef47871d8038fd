"""A per-process counter of collection changes, for caches of collection lookups.

Creating, deleting or switching a collection to another embedding space bumps it; the
runtime's collection cache (the search path's) drops what it holds when it moved. Other
processes' changes are caught by that cache's short expiry instead.

A change bumps it twice: as it is made, and once its transaction has ended
(``Database.connection`` runs its block in :func:`connection_block`). The change is
made before its commit, and a search in between read the row still committed (the old
space) and cached it under the counter's new value: nothing moved the counter after the
commit, so searches answered from the retired space for up to the cache's expiry (as long
as a re-cut's swap took between its change and its commit).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_changes = 0
_lock = threading.Lock()
_blocks = threading.local()  # the connection blocks open on this thread, innermost last


@dataclass(eq=False)  # removed by identity
class ConnectionBlock:
    """One connection's block: its connection once lent, and whether a collection changed on it."""

    conn: object | None = None
    changed: bool = False


def _bump() -> None:
    global _changes
    with _lock:
        _changes += 1


def collections_changed(conn: object | None = None) -> None:
    """Note that a collection was created, deleted or switched to another space, in the
    transaction of ``conn``: the counter moves now and again once that transaction has
    ended (where ``conn`` came from :func:`connection_block`)."""
    _bump()
    if conn is None:
        return
    for block in reversed(getattr(_blocks, "open", ())):
        if block.conn is conn:
            block.changed = True
            return


@contextmanager
def connection_block() -> Iterator[ConnectionBlock]:
    """Run a connection's block (one transaction) inside this; set ``.conn`` once it is
    lent. A collection change made on it moves the counter again as this block leaves,
    after the transaction's commit or rollback."""
    block = ConnectionBlock()
    stack: list[ConnectionBlock] = getattr(_blocks, "open", None) or []
    _blocks.open = stack
    stack.append(block)
    try:
        yield block
    finally:
        stack.remove(block)
        if block.changed:
            _bump()


def changes() -> int:
    """How many collection changes this process has made."""
    return _changes
