"""ragstore: document retrieval on PostgreSQL + pgvector.

The package root stays light: it exposes the HTTP client and the error types. The
services live in their subpackages (``ragstore.ingest``, ``ragstore.search``, ...).
"""

from importlib.metadata import PackageNotFoundError, version

from ragstore.client import Client
from ragstore.errors import RagstoreError

try:
    __version__ = version("ragstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["Client", "RagstoreError", "__version__"]
