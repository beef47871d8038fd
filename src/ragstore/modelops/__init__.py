"""Model operations: pinning specs, validating them, re-embedding a collection, rolling back.

``specs`` pins models in the ``embedding_models`` table; ``migrate`` builds a new embedding
space beside the active one, backfills it in resumable batches, validates it and switches;
``fanout`` keeps a space being built up to date with documents ingested meanwhile.
"""

from ragstore.modelops.migrate import (
    MigrationReport,
    migrate,
    model_status,
    prune,
    rollback,
)
from ragstore.modelops.specs import add_http_model, add_local_model, find_model, list_models

__all__ = [
    "MigrationReport",
    "add_http_model",
    "add_local_model",
    "find_model",
    "list_models",
    "migrate",
    "model_status",
    "prune",
    "rollback",
]
