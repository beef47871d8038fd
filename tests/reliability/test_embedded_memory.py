"""The memory ragstore gives an embedded server it creates (db/embedded.py).

initdb's 128 MB of ``shared_buffers`` would leave a 100k-chunk collection's HNSW graph and
BM25 postings outside PostgreSQL's cache; a new server gets a quarter of the machine's
memory (bounded), and a data directory whose setting a user chose keeps it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from ragstore.db import embedded

MB = 1024 * 1024


def test_shared_buffers_is_a_quarter_of_memory_within_bounds() -> None:
    assert embedded.shared_buffers_mb(256 * MB) == 128  # never below PostgreSQL's default
    assert embedded.shared_buffers_mb(2048 * MB) == 512
    assert embedded.shared_buffers_mb(6 * 1024 * MB) == 1536
    assert embedded.shared_buffers_mb(64 * 1024 * MB) == 2048  # a shared machine: capped
    assert 0 < embedded.memory_limit() <= 1 << 50


def _shared_buffers(uri: str) -> str:
    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def test_a_new_server_is_sized_and_a_users_own_setting_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    uri = embedded.start(data_dir)
    try:
        want = embedded.shared_buffers_mb(embedded.memory_limit())
        got = _shared_buffers(uri)
        assert got == (f"{want // 1024}GB" if want % 1024 == 0 else f"{want}MB")
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_buffers = '160MB'")
        embedded.stop(data_dir)
        uri = embedded.start(data_dir)  # an existing directory: started as it is
        assert _shared_buffers(uri) == "160MB"
    finally:
        embedded.release(data_dir)
        embedded.stop(data_dir)
