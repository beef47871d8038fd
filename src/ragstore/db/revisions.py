"""Earlier schema revisions' modules, for the revisions that build on their SQL.

A revision that changes a function keeps the old text for its downgrade, and one that
changes part of a function builds the new text from the old. Rather than copy that text,
it loads the earlier revision's file (Alembic's version files are not an importable
package: their names start with digits) and reads it from there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).with_name("alembic") / "versions"


def earlier_revision(filename: str) -> ModuleType:
    """The revision file ``filename`` of ``db/alembic/versions``, loaded as a module of its
    own (not registered in ``sys.modules``: each caller gets a fresh copy)."""
    spec = importlib.util.spec_from_file_location(
        f"ragstore_revision_{Path(filename).stem}", VERSIONS / filename
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"no schema revision file {filename} in {VERSIONS}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
