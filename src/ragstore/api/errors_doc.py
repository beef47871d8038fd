"""The problem+json responses each route declares in the OpenAPI document."""

from __future__ import annotations

from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string", "example": "urn:ragstore:problem:collection_not_found"},
        "title": {"type": "string", "example": "Collection not found"},
        "status": {"type": "integer", "example": 404},
        "detail": {
            "type": "string",
            "example": "collection 'x' does not exist (collections: docs)",
        },
        "code": {"type": "string", "example": "collection_not_found"},
        "instance": {"type": "string", "example": "/v1/collections/x"},
        "request_id": {"type": "string", "example": "6f1c2d0e9b8a4f1e"},
        "stored": {
            "type": "array",
            "items": {"type": "object"},
            "description": "An upload some of whose files failed: the documents it stored "
            "(each whole), as a successful upload lists them",
        },
        "failed": {
            "type": "array",
            "items": {"type": "object"},
            "description": "An upload some of whose files failed: each failed file's name, "
            "code and detail",
        },
    },
}

_DESCRIPTIONS = {
    400: "Invalid filter",
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the scope or collection",
    404: "Not found",
    409: "Conflict",
    413: "Request or upload too large",
    415: "Unsupported format",
    422: "Invalid input",
    429: "Rate limited (with Retry-After)",
    500: "Internal or database error",
    503: "Database unavailable or not ready (with Retry-After)",
    504: "The search ran past RAGSTORE_SEARCH_TIMEOUT_S (search_timeout)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses (with no argument: the ones every route has)."""
    chosen = statuses or (401, 403, 422, 429, 503)
    return {
        s: {
            "description": _DESCRIPTIONS.get(s, "Error"),
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        }
        for s in chosen
    }
