"""Model pins that tests make on the real database."""

from __future__ import annotations

import dataclasses

from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, resolve_spec
from ragstore.runtime import Runtime


def pin_smaller_budget(rt: Runtime, name: str, max_tokens: int = 96) -> str:
    """Pin the default model's weights as ``name`` with a smaller token budget: a model
    a collection can migrate to that cuts its documents again (a re-cut)."""
    base = resolve_spec(DEFAULT_MODEL)
    with rt.db.connection() as conn:
        upsert_model(conn, dataclasses.replace(base, name=name, max_tokens=max_tokens))
    return name
