"""psycopg's errors become ours here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ragstore.errors import DatabaseError, DatabaseUnavailableError, RagstoreError


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Run a block of database work; turn psycopg failures into ragstore errors.

    ``where`` names what was being done ("connecting to postgresql://host/db",
    "storing document x.md") so the one line a user sees says where it went wrong.
    """
    try:
        yield
    except RagstoreError:
        raise
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"{where}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"{where}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
