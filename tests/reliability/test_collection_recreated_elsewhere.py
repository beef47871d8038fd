"""A collection deleted, or deleted and made again under its name, by another process:
this process's searches must not answer from the old one it had cached.

The runtime caches a collection's row for a second (``COLLECTION_CACHE_S``); changes made
in this process are seen at once, those of another process only once the entry expires.
The other process here is a real one (a ``python`` child with its own Store), which acts
within the cache's time (made long here, so that a slow machine cannot outlast it): its
deletion leaves the old row's chunks gone, so a full-text search
of the cached id found nothing and answered no hits (as if the new collection held
nothing that matched, or the deleted one still existed), and a vector search read a
dropped table and said "retry", whose retry inside the second failed the same way.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from ragstore import runtime as runtime_module
from ragstore.errors import CollectionNotFoundError
from ragstore.runtime import Runtime
from ragstore.store import Store

TEXTS = ["tomatoes ripen in the sun", "roses need pruning in spring", "espresso is strong"]

CHILD = """
import sys
from ragstore.errors import RagstoreError
from ragstore.store import Store
store = Store(sys.argv[1], data_dir=sys.argv[2])
# a collection made and deleted: the model loaded and checked against its pin now
store.add_texts("warmup", ["warm the model up"], ids=["w"])
store.delete_collection("warmup")
print("ready", flush=True)
for line in sys.stdin:
    verb = line.strip()
    try:  # a failed verb is that test's failure: the child stays for the module's others
        if verb == "delete":
            store.delete_collection("again")
        elif verb == "recreate":
            store.delete_collection("again")
            store.add_texts("again", ["tomatoes are picked green"], ids=["new"])
    except RagstoreError as exc:  # any other error ends the child: the test sees it
        print(f"failed: {exc!r}", flush=True)
    else:
        print("done", flush=True)
"""


@pytest.fixture(scope="module")
def child(rt: Runtime) -> Iterator[Callable[[str], None]]:
    """The other process, started once for the module: it loads the model (seconds), and
    keeps no state between verbs (its deletes and adds look the collection up afresh)."""
    url = rt.settings.database_url
    assert url is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url.get_secret_value(), str(rt.settings.data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"

    def ask(verb: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(verb + "\n")
        proc.stdin.flush()
        reply = proc.stdout.readline().strip()
        assert reply == "done", f"the other process, asked to {verb}: {reply or 'exited'}"

    try:
        yield ask
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


@pytest.fixture()
def other(
    rt: Runtime, child: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """The other process, with this process's cache made long and no collection 'again'
    left by an earlier test (one that failed half-way), before and after the test."""
    monkeypatch.setattr(runtime_module, "COLLECTION_CACHE_S", 600.0)
    store = Store.from_runtime(rt)

    def drop_again() -> None:
        with contextlib.suppress(CollectionNotFoundError):
            store.delete_collection("again")  # in this process: its cache forgets it at once

    drop_again()
    yield child
    drop_again()


def _fresh(store: Store) -> None:
    """Add the texts to a new collection 'again' and search it (caching its row)."""
    store.add_texts("again", TEXTS, ids=["a", "b", "c"])
    assert store.search("again", "tomatoes", k=3, mode="fulltext")["data"]


@pytest.mark.parametrize("mode", ["fulltext", "vector", "hybrid"])
def test_a_search_finds_the_collection_made_again_by_another_process(
    rt: Runtime, other: Callable[[str], None], mode: str
) -> None:
    store = Store.from_runtime(rt)
    _fresh(store)
    other("recreate")
    hits = store.search("again", "tomatoes", k=3, mode=mode)["data"]
    assert [h["text"] for h in hits] == ["tomatoes are picked green"], hits
    store.delete_collection("again")


@pytest.mark.parametrize("mode", ["fulltext", "vector", "hybrid"])
def test_a_search_of_a_collection_another_process_deleted_says_not_found(
    rt: Runtime, other: Callable[[str], None], mode: str
) -> None:
    store = Store.from_runtime(rt)
    _fresh(store)
    other("delete")
    with pytest.raises(CollectionNotFoundError):
        store.search("again", "tomatoes", k=3, mode=mode)
