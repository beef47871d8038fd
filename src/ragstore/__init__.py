"""ragstore: document retrieval on PostgreSQL + pgvector.

The package root stays light: importing ``ragstore`` imports nothing heavy, and each name
below is loaded on first access (``ragstore.Client`` imports httpx then, not before;
``ragstore.Store``, the in-process API, its database and services), so
that ``ragstore --version`` or ``ragstore config show`` start fast. The services live in
their subpackages (``ragstore.ingest``, ``ragstore.search``, ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragstore.client import AsyncClient, Client
    from ragstore.errors import RagstoreError
    from ragstore.store import Store

# public name -> module that defines it; loaded on first attribute access
_LAZY = {
    "AsyncClient": "ragstore.client",
    "Client": "ragstore.client",
    "RagstoreError": "ragstore.errors",
    "Store": "ragstore.store",
}

__all__ = ["AsyncClient", "Client", "RagstoreError", "Store", "__version__"]


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
