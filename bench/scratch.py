"""Removing what a bench wrote, its embedded PostgreSQL servers first.

An embedded server stops when the last process using it exits; a bench that deletes a
data directory before it exits leaves that server running on a directory that is gone
(the postmaster notices only when it next checks its lock file, a minute or more later),
where it keeps its memory and its checkpointer's writes while the next bench measures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ragstore.db import embedded


def discard(path: Path) -> None:
    """Stop every embedded server under ``path`` (a data directory or a folder of them),
    then delete ``path``."""
    if path.exists():
        for version in sorted(path.glob("**/pg/PG_VERSION")):
            embedded.stop(version.parent.parent)
    shutil.rmtree(path, ignore_errors=True)
