"""Wall time of short CLI commands on a warm machine, this tree against another.

"Warm": the embedded PostgreSQL is running (a holder process keeps it up for the whole
run, as a ``ragstore serve`` or a second shell would; alone, every command would start
and stop it) and the OS file cache is warm (one unmeasured run per command and tree).
Each command runs ``--runs`` times, alternating between the source trees given so that
all see the same machine load. Prints median wall and CPU seconds (user + system of the
child) per command and tree, and the ratio of medians against the first tree.

With ``--serve`` a ``ragstore serve`` of the last tree runs on a free loopback port and
the hybrid search is timed again with ``RAGSTORE_URL`` pointing at it (a tree that does
not know RAGSTORE_URL searches locally, loading the model).

    python bench/cli_startup.py --tree before=/tmp/cli-before/src --tree after=src \\
        --data-dir /tmp/cli-data --collection C --runs 15 --serve

The collection must exist in the data dir (``ragstore ingest some/docs -c C`` once).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HOLD = (
    "import sys, time; from pathlib import Path; from ragstore.db import embedded; "
    "embedded.start(Path(sys.argv[1])); print('up', flush=True); time.sleep(3600)"
)


def _commands(collection: str) -> dict[str, list[str]]:
    return {
        "config show": ["config", "show"],
        "search --mode fulltext": ["search", "x", "-c", collection, "--mode", "fulltext"],
    }


@contextlib.contextmanager
def _holding(src: str, data_dir: Path, env: dict[str, str]) -> Iterator[None]:
    """Keep the embedded PostgreSQL of ``data_dir`` running while the block runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)],
        env={**env, "PYTHONPATH": src},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "up":
            raise SystemExit("the holder could not start the embedded PostgreSQL")
        yield
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


@contextlib.contextmanager
def _serving(src: str, env: dict[str, str]) -> Iterator[str]:
    """``ragstore serve`` of ``src`` on a free loopback port; its URL once it answers."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import sys; from ragstore.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", str(port)],
        env={**env, "PYTHONPATH": src, "RAGSTORE_AUTH": "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _run(src: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one ``ragstore ARGS``."""
    child_env = {**env, "PYTHONPATH": src}
    code = "import sys; from ragstore.cli import main; sys.argv[0] = 'ragstore'; main()"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise SystemExit(
            f"ragstore {' '.join(args)} failed under {src}: {proc.stderr.read().decode()[-500:]}"
        )
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree",
        action="append",
        required=True,
        help="NAME=PATH of a src/ folder; the first is the baseline",
    )
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--collection", default="C")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--serve", action="store_true", help="also time a hybrid search through RAGSTORE_URL"
    )
    opts = parser.parse_args()
    trees = dict(t.split("=", 1) for t in opts.tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env["RAGSTORE_DATA_DIR"] = str(opts.data_dir)
    env.setdefault("HF_HUB_OFFLINE", "1")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; hyperfine: {'yes' if shutil.which('hyperfine') else 'no'}"
    )
    commands = _commands(opts.collection)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def measure(label: str, args: list[str], run_env: dict[str, str]) -> None:
        for src in trees.values():
            _run(src, args, run_env)  # warm-up: file cache, first connection
        for _ in range(opts.runs):
            for name, src in trees.items():
                results.setdefault((label, name), []).append(_run(src, args, run_env))

    last = list(trees.values())[-1]
    with _holding(last, opts.data_dir, env):
        for label, args in commands.items():
            measure(label, args, env)
        if opts.serve:
            with _serving(last, env) as url:
                label = "search hybrid, RAGSTORE_URL"
                commands[label] = ["search", "x", "-c", opts.collection]
                measure(label, commands[label], {**env, "RAGSTORE_URL": url})
    base = next(iter(trees))
    print(f"{'command':<26} {'tree':<8} {'wall median':>12} {'cpu median':>11} {'ratio':>6}")
    for label in commands:
        base_wall = statistics.median(w for w, _ in results[(label, base)])
        for name in trees:
            walls = [w for w, _ in results[(label, name)]]
            cpus = [c for _, c in results[(label, name)]]
            wall = statistics.median(walls)
            print(
                f"{label:<26} {name:<8} {wall:>11.3f}s {statistics.median(cpus):>10.3f}s "
                f"{wall / base_wall:>6.2f}"
            )


if __name__ == "__main__":
    main()
