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

import psutil
import psycopg

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


def _postgres_in(pgdata: Path) -> list[psutil.Process]:
    """The PostgreSQL processes working in ``pgdata``."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "postgres":
            try:
                if Path(proc.cwd()).resolve() == pgdata.resolve():
                    found.append(proc)
            except psutil.Error:
                continue
    return found


def _kill_server(data_dir: Path) -> None:
    """SIGKILL the postmaster and wait for all its processes to go (``kill -9`` of
    everything): its ``postmaster.pid`` stays."""
    pgdata = data_dir / "pg"
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while _postgres_in(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _postgres_in(pgdata) == []
    assert (pgdata / "postmaster.pid").exists()


def test_a_stale_postmaster_pid_is_taken_over_after_a_kill_of_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    embedded.start(data_dir)
    try:
        _kill_server(data_dir)
        embedded.release(data_dir)
        procs = _starters(data_dir, tmp_path / "go", 1)
        (tmp_path / "go").touch()
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode == 0, out[-3000:]
    finally:
        embedded.stop(data_dir)


def test_a_stale_postmaster_pid_naming_another_live_program_is_taken_over(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    embedded.start(data_dir)
    other = subprocess.Popen(["sleep", "300"])  # was given the dead postmaster's pid
    try:
        _kill_server(data_dir)
        embedded.release(data_dir)
        pid_file = data_dir / "pg" / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        pid_file.write_text("\n".join([str(other.pid), *lines[1:]]) + "\n")
        assert not embedded.stop(data_dir)  # nothing of ours runs: no signal to the other
        assert other.poll() is None
        procs = _starters(data_dir, tmp_path / "go", 1)
        (tmp_path / "go").touch()
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode == 0, out[-3000:]  # started, and stopped at its exit
        assert other.poll() is None, "a ragstore process signalled another program"
        uri = embedded.start(data_dir)  # and again, in this process

        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        other.kill()
        other.wait()
        embedded.release(data_dir)
        embedded.stop(data_dir)
