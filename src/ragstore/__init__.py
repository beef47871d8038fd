"""ragstore: document retrieval on PostgreSQL + pgvector.

The package root stays light: ``import ragstore`` loads only the error types. ``Store``
(the in-process API), ``Client`` and ``AsyncClient`` (the HTTP API) are imported on
first use; the services live in their subpackages (``ragstore.ingest``, ``ragstore.search``).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ragstore.errors import RagstoreError

if TYPE_CHECKING:
    from ragstore.client import AsyncClient, Client
    from ragstore.store import Store

try:
    __version__ = version("ragstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["AsyncClient", "Client", "RagstoreError", "Store", "__version__"]

_LAZY = {"AsyncClient": "ragstore.client", "Client": "ragstore.client",
         "Store": "ragstore.store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
