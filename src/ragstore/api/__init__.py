"""The HTTP API: ``create_app(settings)`` returns the FastAPI application.

FastAPI is imported on first use of ``create_app`` only, so that the CLI can use the
modules of this package without loading the web stack. What other surfaces share with
the API lives below it (``ragstore.http``, ``ragstore.schemas``, ``ragstore.paging``,
``ragstore.uploads``): only the CLI and the console import this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragstore.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ragstore.api.app import create_app

        return create_app
    raise AttributeError(f"module 'ragstore.api' has no attribute {name!r}")
