"""A collection switched to another embedding space: no search answers from the old space
once the switch has committed, whichever process made it.

The collection here is vector-only (2 dimensions) with a second space in which two texts'
vectors are swapped, so which space a vector search read shows in its answer: ``[1, 0]``
finds "north" in the first space and "east" in the second. The runtime caches a
collection's row (``COLLECTION_CACHE_S``, made long here so that a slow machine cannot
outlast it).

- In this process: the change counter moved before the switch's commit, and a search in
  between read the row still committed and cached it under the new count; nothing moved the
  counter after the commit, so searches answered from the retired space.
- In another process: a read that carries that switch's ``RAGStore-LSN`` (read-your-writes)
  was answered from the row this server had cached before the switch.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from psycopg import sql

from ragstore import Client
from ragstore import runtime as runtime_module
from ragstore.db import spaces
from ragstore.runtime import Runtime
from ragstore.store import Store

NORTH = [1.0, 0.0]


@pytest.fixture()
def long_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "COLLECTION_CACHE_S", 600.0)


def _two_spaces(rt: Runtime, name: str) -> tuple[int, int]:
    """A vector-only collection ``name`` ("north" at [1, 0], "east" at [0, 1]) and a second,
    built space of it with the two vectors swapped: (its active space, the second)."""
    store = Store.from_runtime(rt)
    store.create_collection(name, model=f"{name}-outside@v1", dimension=2)
    store.add_texts(name, ["north", "east"], ids=["n", "e"], vectors=[NORTH, [0.0, 1.0]])
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL("SELECT chunk_id, embedding FROM {} ORDER BY chunk_id").format(
                sql.Identifier(coll.table)
            )
        ).fetchall()
        space_id, table = spaces.create_space(conn, coll.id, coll.model_id, coll.model)
        swapped = np.array([np.asarray(v.to_numpy(), dtype=np.float32)[::-1] for _, v in rows])
        spaces.copy_vectors(conn, table, [int(cid) for cid, _ in rows], swapped)
    return coll.space_id, space_id


def _top(store: Store, name: str) -> str:
    return str(store.search(name, vector=NORTH, k=1)["data"][0]["text"])


def test_a_search_during_a_switch_in_this_process_does_not_keep_the_old_space(
    rt: Runtime, long_cache: None
) -> None:
    old, new = _two_spaces(rt, "switched-here")
    store = Store.from_runtime(rt)
    assert _top(store, "switched-here") == "north"  # the first space, cached
    coll = rt.collection("switched-here")
    changed, commit = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def switch() -> None:
        try:
            with rt.db.connection() as conn:
                spaces.lock_collection(conn, coll.id)
                spaces.activate(conn, coll.id, new, old)
                changed.set()  # the counter moved; the switch not yet committed
                assert commit.wait(60)
        except BaseException as exc:  # the test's failure, told below
            failed.append(exc)
            changed.set()

    thread = threading.Thread(target=switch)
    thread.start()
    try:
        assert changed.wait(60)
        # a search between the change and its commit reads the row still committed
        assert rt.cached_collection("switched-here").space_id == old
    finally:
        commit.set()
        thread.join(60)
    assert not failed, failed
    assert rt.cached_collection("switched-here").space_id == new
    assert _top(store, "switched-here") == "east"


SWITCH = """
import sys
from ragstore.config import Settings
from ragstore.db import lsn, spaces
from ragstore.runtime import Runtime
url, data, name, old, new = sys.argv[1:]
with Runtime(Settings(database_url=url, data_dir=data, profile="test")) as rt:
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        spaces.lock_collection(conn, coll.id)
        spaces.activate(conn, coll.id, int(new), int(old))
    with rt.db.connection() as conn:
        print(lsn.format_lsn(lsn.current(conn)), flush=True)
"""


@pytest.fixture()
def switched_elsewhere(rt: Runtime) -> Iterator[None]:
    yield
    Store.from_runtime(rt).delete_collection("switched-elsewhere")


def test_a_read_with_the_switchs_position_sees_another_process_switch(
    rt: Runtime, open_url: str, long_cache: None, switched_elsewhere: None
) -> None:
    old, new = _two_spaces(rt, "switched-elsewhere")
    with Client(open_url) as writer, Client(open_url, read_your_writes=False) as plain:
        assert writer.search("switched-elsewhere", vector=NORTH, k=1)["data"][0]["text"] == "north"
        url = rt.settings.database_url
        assert url is not None
        args = [url.get_secret_value(), str(rt.settings.data_dir), "switched-elsewhere"]
        done = subprocess.run(
            [sys.executable, "-c", SWITCH, *args, str(old), str(new)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        position = done.stdout.strip()
        # the server's cached row, read before the switch: a read without the position
        # may miss a write of the last moments (the cache is in use here)
        assert plain.search("switched-elsewhere", vector=NORTH, k=1)["data"][0]["text"] == "north"
        writer.last_lsn = position  # the switch's RAGStore-LSN, carried over
        hits = writer.search("switched-elsewhere", vector=NORTH, k=1)["data"]
        assert hits[0]["text"] == "east", hits
