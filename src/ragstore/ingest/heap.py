"""Python's cyclic collector during a load: the objects that were there before it are
set aside, so its full collections walk only what the load itself made.

Once the model and its libraries are loaded, an ingesting process tracks about 335,000
objects, and a full collection walks them all: 0.13–0.15 s each, the first one set off by
a load's own bookkeeping before its first round is written (on the pipeline's critical
path), six of them in a 100k-chunk load (1.3 s). None of those objects becomes garbage
because of a load. :func:`long_lived_set_aside` moves them to the collector's permanent
generation (``gc.freeze``) for the load and back after it (``gc.unfreeze``), as Python's
documentation describes for long-lived objects; objects the load makes are collected as
usual, and reference counting frees everything as always.

The freeze is process-wide, so it is counted (loads running at once in a server share
one) and taken only where nobody else holds one: a host application that froze its own
objects (say, before forking workers) keeps them frozen, and ragstore then does nothing.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_loads = 0  # loads under way that share this process's freeze
_ours = False  # whether that freeze is ragstore's (the permanent generation was empty)


@contextmanager
def long_lived_set_aside() -> Iterator[None]:
    """Every object tracked now left out of the collector's passes until the block ends
    (see the module docstring)."""
    global _loads, _ours
    with _lock:
        if _loads == 0:
            _ours = gc.isenabled() and gc.get_freeze_count() == 0
            if _ours:
                gc.freeze()
        _loads += 1
    try:
        yield
    finally:
        with _lock:
            _loads -= 1
            if _loads == 0 and _ours:
                gc.unfreeze()
                _ours = False
