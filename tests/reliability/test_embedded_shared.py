"""Several processes on one embedded data directory at once, as a user runs them (a
notebook's ``Store`` open while ``ragstore ingest`` runs in a terminal, ``serve`` and
``worker`` side by side): real processes, one real embedded PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ragstore.db import embedded

# waits for a go file, then starts (or joins) the embedded server and prints its URI
_STARTER = """
import sys, time
from pathlib import Path
from ragstore.db import embedded
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
print(embedded.start(Path(sys.argv[1])), flush=True)
"""


def _starters(data_dir: Path, go: Path, n: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, str(data_dir), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]


def test_processes_starting_together_on_a_new_data_dir_all_get_the_server(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    go = tmp_path / "go"
    procs = _starters(data_dir, go, 4)
    try:
        time.sleep(3)  # every interpreter has imported ragstore and waits for the go
        go.touch()
        outs = [p.communicate(timeout=180)[0] for p in procs]
        failed = [o for p, o in zip(procs, outs, strict=True) if p.returncode != 0]
        assert failed == [], failed[0][-3000:]
        assert len({o.strip().splitlines()[-1] for o in outs}) == 1  # one server for all
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        embedded.stop(data_dir)
