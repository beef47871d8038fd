"""Every module of the package imports on its own, first: no circular import that only
works when some other module happened to be imported before it."""

from __future__ import annotations

import subprocess
import sys

# one interpreter: each module is imported with every ragstore module forgotten first
# (third-party modules stay loaded, so each round costs only ragstore's own imports)
_EACH_FIRST = """
import importlib, pkgutil, sys
import ragstore
names = sorted(
    m.name for m in pkgutil.walk_packages(ragstore.__path__, "ragstore.")
    if ".alembic." not in m.name
)
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
    out = subprocess.run(
        [sys.executable, "-c", _EACH_FIRST], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    count, *failed = out.stdout.strip().splitlines()
    assert int(count) > 100
    assert not failed, "\n".join(failed)
