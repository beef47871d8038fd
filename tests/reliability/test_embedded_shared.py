"""Several processes on one embedded data directory at once, as a user runs them (a
notebook's ``Store`` open while ``ragstore ingest`` runs in a terminal, ``serve`` and
``worker`` side by side): real processes, one real embedded PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from ragstore.db import embedded

# says "waiting" once it has imported ragstore, waits for a go file, then starts (or
# joins) the embedded server and prints its URI
_STARTER = """
import sys, time
from pathlib import Path
from ragstore.db import embedded
go = Path(sys.argv[2])
print("waiting", flush=True)
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
        _all_waiting(procs)  # every interpreter has imported ragstore and waits for the go
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


def _all_waiting(procs: list[subprocess.Popen[str]]) -> None:
    """Until every process has imported ragstore and waits for the go (its "waiting"
    line): they then start together. A fixed pause (3 s) was spent whole by every such
    test, and could still be short for a loaded machine's imports."""
    for p in procs:
        assert p.stdout is not None
        seen = []
        while (line := p.stdout.readline()) and line.strip() != "waiting":
            seen.append(line)
        if not line:  # it ended before it waited: its output says why
            raise AssertionError("".join(seen)[-3000:])


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
    # not waiting for it to be reaped: a start copes with a zombie postmaster (this
    # machine's init reaps late; see the test that holds one unreaped)
    while _postgres_in(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _postgres_in(pgdata) == []
    assert (pgdata / "postmaster.pid").exists()


def test_a_stale_postmaster_pid_is_taken_over_after_a_kill_of_everything(tmp_path: Path) -> None:
    """The next start says the server was killed and recovered, and sweeps the temporary
    files of the users' registry that killed processes left (killed between the write and
    the rename); one of a live process stays."""
    data_dir = tmp_path / "data"
    embedded.start(data_dir)
    try:
        _kill_server(data_dir)
        embedded.release(data_dir)
        gone = subprocess.Popen(["true"])
        gone.wait()
        dead_tmp = [
            data_dir / f"{embedded.USERS_NAME}.{gone.pid}.tmp",
            data_dir / "pg" / f".handle_pids.json.{gone.pid}.tmp",
        ]
        live_tmp = data_dir / f"{embedded.USERS_NAME}.{os.getpid()}.tmp"
        for path in [*dead_tmp, live_tmp]:
            path.write_text("[]")
        procs = _starters(data_dir, tmp_path / "go", 1)
        (tmp_path / "go").touch()
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode == 0, out[-3000:]
        assert "was not shut down cleanly (killed or crashed); it recovered" in out, out
        assert [p for p in dead_tmp if p.exists()] == []
        assert live_tmp.exists()
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


# like _STARTER (its "waiting" line too), then stays a user of the server until a leave
# file appears, and exits normally (its exit releases the server, and stops it if it was
# the last user)
_STAYER = """
import sys, time
from pathlib import Path
from ragstore.db import embedded
go, leave = Path(sys.argv[2]), Path(sys.argv[3])
print("waiting", flush=True)
while not go.exists():
    time.sleep(0.005)
print(embedded.start(Path(sys.argv[1])), flush=True)
while not leave.exists():
    time.sleep(0.02)
"""


def _stayers(tmp_path: Path, data_dir: Path, go: Path, n: int) -> list[subprocess.Popen[str]]:
    """``n`` processes on ``data_dir``, each with its own ``XDG_RUNTIME_DIR`` (a terminal, a
    cron job, ``docker exec``, a systemd service): the package's lock lives there."""
    tmp_path.mkdir(exist_ok=True)
    procs = []
    for i in range(n):
        runtime = tmp_path / f"runtime-{i}"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "XDG_RUNTIME_DIR": str(runtime)}
        leave = tmp_path / f"leave-{i}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _STAYER, str(data_dir), str(go), str(leave)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def _leave(tmp_path: Path, i: int, proc: subprocess.Popen[str]) -> str:
    (tmp_path / f"leave-{i}").touch()
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-3000:]
    return out


def _uris(procs: list[subprocess.Popen[str]]) -> list[str]:
    """The URI each started process printed (its whole output when it failed instead)."""
    uris = []
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() == "waiting":  # not read by _all_waiting: the next line is the URI
            line = p.stdout.readline()
        if not line.startswith("postgresql://"):
            p.kill()
            raise AssertionError(line + p.stdout.read()[-3000:])
        uris.append(line.strip())
    return uris


def _postmasters(pgdata: Path) -> list[int]:
    """The pids of the postmasters working in ``pgdata`` (backends come and go meanwhile)."""
    parents = {}
    for proc in _postgres_in(pgdata):
        with contextlib.suppress(psutil.Error):
            parents[proc.pid] = proc.ppid()
    return [pid for pid, parent in parents.items() if parent not in parents]


def _kill_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        if p.stdout is not None and not p.stdout.closed:
            p.communicate()
        p.wait()


def test_processes_with_different_runtime_dirs_start_together_and_share_one_server(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    go = tmp_path / "go"
    procs = _stayers(tmp_path, data_dir, go, 4)
    try:
        _all_waiting(procs)  # every interpreter has imported ragstore and waits for the go
        go.touch()
        uris = _uris(procs)
        assert len(set(uris)) == 1  # one server for all
        assert len(_postmasters(data_dir / "pg")) == 1
        # all but one leave (each exit releases the server): it stays up for the last one
        for i in range(3):
            _leave(tmp_path, i, procs[i])
            with psycopg.connect(uris[0]) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        _leave(tmp_path, 3, procs[3])  # the last user's exit stops it
        assert _postgres_in(data_dir / "pg") == []
    finally:
        _kill_all(procs)
        embedded.stop(data_dir)


def test_a_user_leaving_does_not_stop_the_server_under_one_with_another_runtime_dir(
    tmp_path: Path,
) -> None:
    """Processes joining a running server at once, each under its own runtime dir, all
    count as its users: none of them leaving stops it under another."""
    data_dir = tmp_path / "data"
    first = _stayers(tmp_path / "a", data_dir, tmp_path / "go-a", 1)  # starts it alone
    procs = first
    try:
        (tmp_path / "go-a").touch()
        uri = _uris(first)[0]
        joiners = _stayers(tmp_path / "b", data_dir, tmp_path / "go-b", 4)
        procs = first + joiners
        _all_waiting(joiners)
        (tmp_path / "go-b").touch()
        assert set(_uris(joiners)) == {uri}
        _leave(tmp_path / "a", 0, first[0])
        for i in range(3):  # the last joiner still uses it after each of the others left
            _leave(tmp_path / "b", i, joiners[i])
            with psycopg.connect(uri) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        _leave(tmp_path / "b", 3, joiners[3])
        assert _postgres_in(data_dir / "pg") == []
    finally:
        _kill_all(procs)
        embedded.stop(data_dir)


def test_a_killed_last_user_leaves_the_server_to_the_next_process_to_stop(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    procs = _stayers(tmp_path, data_dir, tmp_path / "go", 1)
    try:
        (tmp_path / "go").touch()
        _uris(procs)
        procs[0].kill()  # SIGKILL: no exit handler releases the server
        procs[0].communicate()
        assert len(_postmasters(data_dir / "pg")) == 1  # nobody left to stop it
        embedded.start(data_dir)  # a later process forgets the killed user ...
        embedded.release(data_dir)  # ... and, the last one, stops the server as it leaves
        assert _postgres_in(data_dir / "pg") == []
    finally:
        _kill_all(procs)
        embedded.stop(data_dir)


def test_a_dead_users_pid_given_to_another_process_does_not_keep_the_server_running(
    tmp_path: Path,
) -> None:
    """A user killed outright whose pid now belongs to another, live process (at once in a
    container, whose pids start over at 1) is not taken for a user: the last real user's
    exit still stops the server."""
    data_dir = tmp_path / "data"
    embedded.start(data_dir)
    other = subprocess.Popen(["sleep", "300"])  # was given the killed user's pid
    try:
        users = data_dir / ".ragstore-server-users.json"  # pids with their create times
        registry = json.loads(users.read_text()) if users.exists() else []
        created = psutil.Process(other.pid).create_time() - 100  # the killed user's
        users.write_text(json.dumps([*registry, [other.pid, created]]))
        package_list = data_dir / "pg" / ".handle_pids.json"
        package_list.write_text(json.dumps([*json.loads(package_list.read_text()), other.pid]))
        embedded.release(data_dir)
        assert _postgres_in(data_dir / "pg") == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        embedded.stop(data_dir)


_TAKE_LOCK = """
import sys, time
from pathlib import Path
from ragstore.db import embedded
t0 = time.monotonic()
with embedded._data_dir_lock(Path(sys.argv[1])):
    print(round(time.monotonic() - t0, 2), flush=True)
"""


def test_a_child_forked_while_the_data_dir_lock_is_held_does_not_keep_it(tmp_path: Path) -> None:
    """A child forked while this process held the data directory's lock (an ingest's parse
    workers, forked while another thread restarted the server) must not keep it once the
    parent lets go: with ``flock`` the child's copy of the descriptor held it, and every
    other process's start waited for that child to end."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with embedded._data_dir_lock(data_dir):
        child = os.fork()
        if child == 0:  # the forked worker: lives on past the parent's hold
            time.sleep(20)
            os._exit(0)
    try:
        other = subprocess.run(
            [sys.executable, "-c", _TAKE_LOCK, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert other.returncode == 0, other.stderr
        assert float(other.stdout.split()[0]) < 5, other.stdout  # not the child's 20 s
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


# starts (or joins) the embedded server as a subreaper: the postmaster, orphaned when pg_ctl
# exits, becomes its child, and it never waits for it (an init or a container's first
# process that reaps late, or not at all); then stays until killed
_NO_REAPER = """
import ctypes, sys, time
from pathlib import Path
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
from ragstore.db import embedded
print(embedded.start(Path(sys.argv[1])), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="a subreaper is Linux's (prctl)")
@pytest.mark.parametrize("pid_file_left", [True, False])
def test_a_killed_postmaster_left_a_zombie_does_not_keep_the_next_start_from_working(
    tmp_path: Path, pid_file_left: bool
) -> None:
    """A postmaster killed outright (``kill -9``, an OOM kill) stays a zombie until its
    parent reaps it, and a zombie's pid is alive to PostgreSQL (``kill(pid, 0)``): its
    socket's lock file, naming that pid, refused every later start ("Is another postmaster
    using socket file") until the zombie was reaped. The next start works at once, also
    after a start of an older ragstore removed ``postmaster.pid`` alone (not
    ``pid_file_left``); a lock file of a socket that takes connections stays."""
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", _NO_REAPER, str(data_dir)],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _uris([holder])
        pgdata = data_dir / "pg"
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        assert psutil.Process(pid).ppid() == holder.pid  # it holds the postmaster unreaped
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while _postgres_in(pgdata) and time.monotonic() < deadline:
            time.sleep(0.1)  # the postmaster and its backends are gone (zombies)
        assert _postgres_in(pgdata) == []
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        if not pid_file_left:
            (pgdata / "postmaster.pid").unlink()
        procs = _starters(data_dir, tmp_path / "go", 1)
        (tmp_path / "go").touch()
        out = procs[0].communicate(timeout=120)[0]
        assert procs[0].returncode == 0, out[-3000:]
        uri = embedded.start(data_dir)  # and again, in this process
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # all along
        lock = pgdata / ".s.PGSQL.5432.lock"  # the running server's, made to name the zombie
        text = lock.read_text()
        lock.write_text("\n".join([str(pid), *text.splitlines()[1:]]) + "\n")
        try:
            embedded._clear_stale_socket_locks(pgdata.resolve(), {pgdata})
            assert lock.exists()  # its socket takes connections
        finally:
            lock.write_text(text)
    finally:
        holder.kill()
        holder.communicate()
        embedded.release(data_dir)
        embedded.stop(data_dir)
