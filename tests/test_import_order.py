"""Every module of the package imports on its own, first: no circular import that only
works when some other module happened to be imported before it."""

from __future__ import annotations

import os
import subprocess
import sys

# one interpreter: each module is imported with every ragstore module forgotten first
# (third-party modules stay loaded, so each round costs only ragstore's own imports); the
# modules are shared out among a few such interpreters run side by side, each taking every
# SHARDS-th name from its own (argv: its number, SHARDS)
_EACH_FIRST = """
import importlib, pkgutil, sys
import ragstore
shard, shards = int(sys.argv[1]), int(sys.argv[2])
names = sorted(
    m.name for m in pkgutil.walk_packages(ragstore.__path__, "ragstore.")
    if ".alembic." not in m.name
)[shard::shards]
failed = []
for name in names:
    for loaded in [k for k in sys.modules if k == "ragstore" or k.startswith("ragstore.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first() -> None:
    """``import ragstore.ingest.documents`` as a program's first ragstore import failed
    (documents -> jobs.staging -> the jobs package -> its runner -> documents, half
    loaded): the package's names are loaded lazily now."""
    shards = max(2, min(4, os.cpu_count() or 1))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _EACH_FIRST, str(shard), str(shards)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in range(shards)
    ]
    total, failed = 0, []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-3000:]
            count, *failures = stdout.strip().splitlines()
            total += int(count)
            failed += failures
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert total > 100
    assert not failed, "\n".join(failed)
