"""Storage: the PostgreSQL connection pool, the embedded server, schema migrations and SQL."""

from ragstore.db.database import Database

__all__ = ["Database"]
