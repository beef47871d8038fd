"""Finding the files to ingest: explicit files as given, folders walked for known suffixes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ragstore.parsing import supported_suffixes


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(files to ingest, paths that do not exist), files sorted and de-duplicated.

    A file named explicitly is always taken (its format is checked when it is parsed);
    inside folders only files with a supported suffix are taken, hidden ones skipped.
    """
    suffixes = supported_suffixes()
    found: dict[Path, None] = {}
    missing: list[Path] = []
    for path in paths:
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    p = Path(root, name)
                    if not name.startswith(".") and p.suffix.lower() in suffixes and p.is_file():
                        found[p.resolve()] = None
        else:
            missing.append(path)
    return sorted(found), missing
