"""The bearer token a request presents, read from its raw headers.

Shared by every HTTP surface that takes API keys (the API's routes and its check before a
body, MCP over HTTP, and the API's ``/metrics`` off loopback), so each reads a request's
``Authorization`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from ragstore.errors import AuthenticationError


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` among a request's raw ``headers``.

    A request with two ``Authorization`` headers is refused (AuthenticationError): the
    routes' dependency read the first and the check before a body the last, so the
    same request was let in or refused by its method, and a proxy that added its own
    header left which key a request used to chance."""
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) > 1:
        raise AuthenticationError(
            "the request has more than one Authorization header; send one, "
            "`Authorization: Bearer rsk_...`"
        )
    scheme, _, token = (values[0] if values else b"").decode("latin-1").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None
