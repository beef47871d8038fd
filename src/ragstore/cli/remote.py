"""The CLI through a running server: with ``RAGSTORE_URL`` set, search and ingest are sent
to it, so a command pays one HTTP round trip instead of loading the model itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragstore.client import Client
    from ragstore.config import Settings


def remote_client(settings: Settings) -> Client | None:
    """An HTTP client for ``RAGSTORE_URL``, or None when the CLI works on the database."""
    if not settings.url:
        return None
    from ragstore.client import Client

    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return Client(settings.url, api_key=key or None)
