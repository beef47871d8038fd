"""What a forked child must not inherit: the parent's database connections and threads.

A process that opens a Store (or any ragstore runtime) and then forks (gunicorn
``--preload``, multiprocessing's fork start method, celery's prefork pool) gives each
child a copy of its connection pool: the same sockets to the same server backends, and
a pool whose worker threads did not survive the fork. A child that used them talked over
the parent's sockets, so the two interleaved on one protocol stream: answers went to the
wrong process ("unexpected result EMPTY_QUERY from command 'BEGIN'"), a write could be
acknowledged by another process's reply, and calls hung for good.

Each object holding such state registers here; in the child, right after the fork and
before anything else runs, each one forgets it (never closing it: closing a connection
sends the server its end, which would end the parent's session) and opens its own on
next use, as SQLAlchemy's pool does with a pid check.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked while ``obj`` lives."""
    _registered.add(obj)


def _in_child() -> None:
    """Each registered object forgets its parent state. An error in one surfaces through
    ``sys.unraisablehook``, which is how Python reports a failing at-fork callback; the
    fork itself goes on either way."""
    for obj in list(_registered):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_in_child)
