"""The HTTP API: ``create_app(settings)`` returns the FastAPI application.

``create_app`` is loaded on first access, so that the CLI can use the API's read-side
modules (``ragstore.api.catalog``) without importing FastAPI.
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
