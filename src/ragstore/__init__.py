"""ragstore: document retrieval on PostgreSQL + pgvector.

The package root stays light: importing ``ragstore`` imports nothing heavy, and each name
below is loaded on first access (``ragstore.Client`` imports httpx then, not before), so
that ``ragstore --version`` or ``ragstore config show`` start fast. The services live in
their subpackages (``ragstore.ingest``, ``ragstore.search``, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragstore.client import Client
    from ragstore.errors import RagstoreError

# public name -> module that defines it; loaded on first attribute access
_LAZY = {
    "Client": "ragstore.client",
    "RagstoreError": "ragstore.errors",
}

__all__ = ["Client", "RagstoreError", "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragstore")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'ragstore' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
