"""Wall time of short CLI commands on a warm machine, this tree against another.

Runs each command ``--runs`` times, alternating between the source trees given (so both
see the same machine load), after one warm-up run each (the embedded PostgreSQL is then
up and the OS file cache warm). Prints median wall and CPU seconds per command and tree,
and the ratio of medians against the first tree.

    python bench/cli_startup.py --tree before=/tmp/cli-before/src --tree after=src \\
        --data-dir /tmp/cli-data --collection C --runs 15

The collection must exist in the data dir (``ragstore ingest some/docs -c C`` once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _commands(collection: str) -> dict[str, list[str]]:
    return {
        "config show": ["config", "show"],
        "search --mode fulltext": ["search", "x", "-c", collection, "--mode", "fulltext"],
    }


def _run(src: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one ``ragstore ARGS``."""
    child_env = {**env, "PYTHONPATH": src}
    code = "import sys; from ragstore.cli import main; sys.argv[0] = 'ragstore'; main()"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=child_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise SystemExit(f"ragstore {' '.join(args)} failed under {src}: "
                         f"{proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True,
                        help="NAME=PATH of a src/ folder; the first is the baseline")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--collection", default="C")
    parser.add_argument("--runs", type=int, default=15)
    opts = parser.parse_args()
    trees = dict(t.split("=", 1) for t in opts.tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env["RAGSTORE_DATA_DIR"] = str(opts.data_dir)
    env.setdefault("HF_HUB_OFFLINE", "1")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; hyperfine: {'yes' if shutil.which('hyperfine') else 'no'}")
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for label, args in _commands(opts.collection).items():
        for src in trees.values():
            _run(src, args, env)  # warm-up: starts the embedded server, fills the file cache
        for _ in range(opts.runs):
            for name, src in trees.items():
                results.setdefault((label, name), []).append(_run(src, args, env))
    base = next(iter(trees))
    print(f"{'command':<26} {'tree':<8} {'wall median':>12} {'cpu median':>11} {'ratio':>6}")
    for label in _commands(opts.collection):
        base_wall = statistics.median(w for w, _ in results[(label, base)])
        for name in trees:
            walls = [w for w, _ in results[(label, name)]]
            cpus = [c for _, c in results[(label, name)]]
            wall = statistics.median(walls)
            print(f"{label:<26} {name:<8} {wall:>11.3f}s {statistics.median(cpus):>10.3f}s "
                  f"{wall / base_wall:>6.2f}")


if __name__ == "__main__":
    main()
