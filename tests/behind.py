"""A call run behind a stuck holder: the tests of the waits that
``RAGSTORE_BULK_LOAD_WAIT_S`` bounds (an import, a repair) share it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_behind(
    call: Callable[[], T], release: Callable[[], None], wait_s: float = 60
) -> tuple[bool, list[T], list[BaseException]]:
    """Run ``call`` on a thread of its own while the caller holds what it waits for; after
    ``wait_s`` (the model's loading included: on a loaded machine, seconds) ``release``
    the holder, which lets a call still waiting go on. Returns whether the call was still
    waiting when released (it waited past its deadline), its result and its exception
    (each a list of one, or empty), for the test to read."""
    results: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            results.append(call())
        except BaseException as exc:  # the test reads it
            failed.append(exc)

    late = threading.Thread(target=run)
    late.start()
    late.join(wait_s)
    stuck_for_good = late.is_alive()
    release()
    late.join(wait_s)
    return stuck_for_good, results, failed
