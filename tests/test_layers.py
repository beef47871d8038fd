"""The package's layers, read from the imports of src/ragstore (ARCHITECTURE.md, "Layers").

MCP and the worker's metrics port imported the HTTP API's package for the guards of a
server started without keys, and search, ingest and the Store imported the job queue's
package to name uploaded documents; the database layer took the filters' path grammar
from search, ingest took constants from the search and import services, the server's body
limit a header from the client's module, and /metrics the job queue's pool: each such
reach made one layer's change another's break. Every import is counted, at module level
or inside a function, ``TYPE_CHECKING`` ones too. An exception is listed in
:data:`EXCEPTIONS` with its reason, or not at all.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# the HTTP API's package is imported only by the surfaces built on it: the CLI (`serve`,
# its OpenAPI export) and the browser console, which the API serves
API_USERS = ("ragstore.api", "ragstore.cli", "ragstore.console")
# the job queue is above what it runs: nothing below it imports it
BELOW_JOBS = (
    "ragstore.search",
    "ragstore.ingest",
    "ragstore.db",
    "ragstore.store",
    "ragstore.client",
    "ragstore._requests",
    "ragstore.uploads",
    "ragstore.http",
)
# the layers shared by the surfaces import none of them
SHARED = ("ragstore.http", "ragstore.uploads")
SURFACES = (
    "ragstore.api",
    "ragstore.cli",
    "ragstore.console",
    "ragstore.integrations",
    "ragstore.observability",
    "ragstore.jobs",
    "ragstore.store",
    "ragstore.client",
)
# the HTTP client runs where no server does: it imports no server side
CLIENT = ("ragstore.client", "ragstore._requests")
SERVER_SIDE = (
    "ragstore.api",
    "ragstore.http",
    "ragstore.db",
    "ragstore.search",
    "ragstore.store",
    "ragstore.jobs",
    "ragstore.runtime",
    "ragstore.integrations",
    "ragstore.observability",
)

# the services, and the domain modules only they use: the HTTP client loads none of them.
# A folder's walk and the suffixes it takes are below both sides (files.py, formats.py):
# the client's upload of a folder imported ingest/files.py, so the ingest service, the
# database layer, the embedders and the parsers were loaded by a user of a thin client
SERVICE_PACKAGES = (
    "ragstore.ingest",
    "ragstore.parsing",
    "ragstore.chunking",
    "ragstore.embedding",
    "ragstore.search",
    "ragstore.imports",
    "ragstore.modelops",
    "ragstore.jobs",
    "ragstore.backup",
    "ragstore.integrity",
    "ragstore.store",
    "ragstore.runtime",
    "ragstore.db",
)

# the database layer is below every service and surface: it imports none of them (its
# own neighbours: the domain values, the settings, errors, metrics, the path grammar)
ABOVE_DB = (
    "ragstore.search",
    "ragstore.ingest",
    "ragstore.imports",
    "ragstore.modelops",
    "ragstore.jobs",
    "ragstore.api",
    "ragstore.http",
    "ragstore.cli",
    "ragstore.console",
    "ragstore.integrations",
    "ragstore.store",
    "ragstore.client",
    "ragstore._requests",
    "ragstore.uploads",
    "ragstore.runtime",
    "ragstore.backup",
    "ragstore.integrity",
)

# ingest is below the services built on it: an import stages its vectors through it and
# the sections evaluation ingests its corpus, so it imports neither (their constants it
# needed live in the layers below: models.py, db/documents.py)
ABOVE_INGEST = (
    "ragstore.search",
    "ragstore.imports",
    "ragstore.backup",
    "ragstore.integrity",
    "ragstore.store",
    "ragstore.api",
    "ragstore.cli",
    "ragstore.console",
    "ragstore.integrations",
)

# the services and what they stand on: the shared layers import none of them
SERVICES = tuple(
    p
    for p in SERVICE_PACKAGES
    # less the domain modules, which are not services themselves
    if p not in ("ragstore.parsing", "ragstore.chunking", "ragstore.embedding")
)
# besides the client itself, only the CLI (its commands sent to a server) imports it
CLIENT_USERS = (*CLIENT, "ragstore.cli")

# observability is cross-cutting: the surfaces hand it their figures (the API its job queue's
# pool, a worker its own), it reads only the database's and the caches' of its own accord
ABOVE_OBSERVABILITY = (
    "ragstore.jobs",
    "ragstore.search",
    "ragstore.ingest",
    "ragstore.imports",
    "ragstore.modelops",
    "ragstore.store",
    "ragstore.api",
    "ragstore.cli",
    "ragstore.console",
    "ragstore.integrations",
    "ragstore.client",
    "ragstore._requests",
)

# (importer, imported): why it may
EXCEPTIONS: dict[tuple[str, str], str] = {
    # the package's public names (``ragstore.Client``), loaded on first access
    ("ragstore", "ragstore.client"): "the package exports the client",
}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module(path: Path) -> tuple[str, str]:
    """The dotted name of the module at ``path``, and the package its relative imports
    start from."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports() -> list[tuple[str, str, int]]:
    """Every (importer, imported module, line) of src/ragstore; ``from ragstore.x import y``
    counts as ``ragstore.x.y`` too, as it may name a submodule."""
    found = []
    for path in sorted((SRC / "ragstore").rglob("*.py")):
        if "alembic" in path.parts:
            continue
        name, package = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                found.append((name, base, node.lineno))
                found += [(name, f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return [(a, b, line) for a, b, line in found if _under(b, ("ragstore",))]


def _excepted(importer: str, imported: str) -> bool:
    return any(a == importer and _under(imported, (b,)) for a, b in EXCEPTIONS)


def _breaches(
    importers: tuple[str, ...], forbidden: tuple[str, ...], *, but: tuple[str, ...] = ()
) -> list[str]:
    """Each import of a module under ``forbidden`` by one under ``importers`` (and not
    under ``but``), said."""
    return sorted(
        {
            f"{importer}:{line} imports {imported}"
            for importer, imported, line in imports()
            if _under(importer, importers)
            and not _under(importer, but)
            and _under(imported, forbidden)
            and not _excepted(importer, imported)
        }
    )


def test_the_import_graph_is_read() -> None:
    # the rules below pass vacuously on a graph that was never read
    found = {(a, b) for a, b, _ in imports()}
    assert len({a for a, _ in found}) > 150
    assert ("ragstore.api.app", "ragstore.http.guard") in found  # absolute
    assert ("ragstore.integrations.mcp", "ragstore.http.guard") in found


def test_only_its_surfaces_import_the_http_api() -> None:
    assert not _breaches(("ragstore",), ("ragstore.api",), but=API_USERS)


def test_nothing_below_the_job_queue_imports_it() -> None:
    assert not _breaches(BELOW_JOBS, ("ragstore.jobs",))


def test_the_shared_layers_import_no_surface() -> None:
    assert not _breaches(SHARED, SURFACES)


def test_the_database_layer_imports_nothing_above_it() -> None:
    # field indexes took the filters' path grammar from search: now in metadata_paths.py
    assert not _breaches(("ragstore.db",), ABOVE_DB)


def test_ingest_imports_no_service_above_it() -> None:
    # ingest/texts.py read VECTOR_ONLY_PROVIDER from search.service and the tsvector
    # bounds from imports.service
    assert not _breaches(("ragstore.ingest",), ABOVE_INGEST)


def test_the_client_imports_no_server_side() -> None:
    assert not _breaches(CLIENT, SERVER_SIDE)


def test_the_client_imports_no_service() -> None:
    # _requests.py walked a folder and named an unreadable file with ingest/files.py
    assert not _breaches(CLIENT, SERVICE_PACKAGES)


def _loaded_by(start: tuple[str, ...]) -> dict[str, str | None]:
    """Every module of src/ragstore that importing ``start`` can load, directly or through
    others (a module's packages too), each with the module that imports it. The package
    root is not followed: its names are loaded on first access (``ragstore.Store``)."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in imports():
        graph.setdefault(importer, set()).add(imported)
    followed = set(graph) - {"ragstore"}
    via: dict[str, str | None] = dict.fromkeys(start)
    todo = list(start)
    while todo:
        module = todo.pop()
        for imported in graph.get(module, ()):
            parts = imported.split(".")
            for name in [".".join(parts[:i]) for i in range(2, len(parts) + 1)]:
                if name not in via and (name in followed or _under(name, SERVICE_PACKAGES)):
                    via[name] = module
                    todo.append(name)
    return via


def test_nothing_the_client_loads_is_a_service() -> None:
    # not only the client's own imports: what it stands on (files.py, formats.py, wire.py,
    # validation.py, ...) must not pull a service in either, or a user of the client
    # loads the parsers again one module further down
    via = _loaded_by(CLIENT)
    assert "ragstore.validation" in via  # the graph was followed
    assert not sorted(
        f"{name} (imported by {via[name]})" for name in via if _under(name, SERVICE_PACKAGES)
    )


def test_no_server_side_imports_the_client() -> None:
    # the body limit (http/limits.py) and the API's middleware read the wire's headers from
    # the client's module: both sides read them from ragstore.wire now
    assert not _breaches(("ragstore",), CLIENT, but=CLIENT_USERS)


def test_the_shared_layers_import_no_service() -> None:
    # what the HTTP surfaces share and the upload names are below every service
    assert not _breaches(SHARED, SERVICES)


def test_observability_reaches_into_no_service() -> None:
    # /metrics imported the job queue for its pool's figures: the API gives them now
    assert not _breaches(("ragstore.observability",), ABOVE_OBSERVABILITY)


def test_every_exception_is_still_needed() -> None:
    # an exception whose import is gone is struck from the list, not kept "just in case"
    found = {(a, b) for a, b, _ in imports()}
    assert all(pair in found for pair in EXCEPTIONS), sorted(set(EXCEPTIONS) - found)


# SQL is the database layer's (db/): services call its functions (ARCHITECTURE.md, "Who
# owns which table"). A module elsewhere that holds SQL text, or composes statements with
# psycopg.sql, is named here with why, or not at all: the job queue's liveness statements,
# a runner's check of its collection, MCP's read of api_keys and a few session settings sat
# in services (now db/queue.py, db/jobs.py, auth/keys.py, db/session.py, ...)
SQL_OUTSIDE_DB: dict[str, str] = {
    "ragstore.search.service": "search composes its statements per query (plan, filters, "
    "index choice, the executor's settings): see ARCHITECTURE.md, 'Layers'",
    "ragstore.search.filters": "the filter compiler: a filter's tree compiled to SQL",
    "ragstore.search.bm25": "the BM25 statement builders, composed per query",
    "ragstore.search.single": "one mode's page of hits around a composed candidate list",
    "ragstore.auth.keys": "api_keys' own store module beside db/ (a self-contained feature)",
    "ragstore.backup": "pg_dump/pg_restore's scripts and the catalog reads around them, "
    "one feature with its own tool's SQL",
    "ragstore.imports.postgres": "reads another store's tables (LangChain, LlamaIndex, "
    "pgvector): SQL for a foreign schema, not ragstore's",
}

# a string that starts as a statement does (an English sentence naming a verb in capitals
# does not: "DELETE" alone is an HTTP method)
_SQL_TEXT = re.compile(
    r"\s*(SELECT|WITH|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|SET|LOCK\s+TABLE"
    r"|CREATE|DROP|ALTER|TRUNCATE|VACUUM|ANALYZE|COPY|LISTEN|NOTIFY|DO\s+\$\w*\$)\s+\S"
)


def _holds_sql(node: ast.AST) -> bool:
    """Whether ``node`` is SQL text (a string, or an f-string's piece, that starts as a
    statement) or an import of psycopg's statement composition."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _SQL_TEXT.match(node.value) is not None
    if isinstance(node, ast.ImportFrom):
        return node.module == "psycopg.sql" or (
            node.module == "psycopg" and any(a.name == "sql" for a in node.names)
        )
    if isinstance(node, ast.Import):
        return any(a.name == "psycopg.sql" for a in node.names)
    return False


def sql_holders() -> dict[str, list[int]]:
    """Every module of src/ragstore (the migrations aside) holding SQL, with the lines."""
    found: dict[str, list[int]] = {}
    for path in sorted((SRC / "ragstore").rglob("*.py")):
        if "alembic" in path.parts:
            continue
        name, _ = _module(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = sorted({getattr(n, "lineno", 0) for n in ast.walk(tree) if _holds_sql(n)})
        if lines:
            found[name] = lines
    return found


def test_sql_text_is_told_from_prose() -> None:
    # the scan below passes vacuously if it tells nothing apart
    said = [
        "SELECT 1",
        "\nWITH own AS (SELECT id FROM t)",
        "UPDATE ingest_jobs SET status = 'queued'",
        "DELETE FROM procrastinate_workers",
        "SET idle_session_timeout = 0",
        "LOCK TABLE emb_1 IN ACCESS SHARE MODE",
    ]
    prose = ["DELETE", "SELECT", "another session can be ended with SELECT pg_cancel_backend"]
    assert all(_holds_sql(ast.Constant(s)) for s in said)
    assert not any(_holds_sql(ast.Constant(s)) for s in prose)


def test_the_sql_scan_reads_the_database_layer() -> None:
    found = sql_holders()
    assert {"ragstore.db.jobs", "ragstore.db.queue", "ragstore.db.documents"} <= set(found)


def test_no_sql_outside_the_database_layer() -> None:
    # a new statement in a service, a surface or an integration goes into db/ (a function
    # with its types and docstring), or into SQL_OUTSIDE_DB with its reason
    outside = {
        f"{name}:{','.join(map(str, lines))}"
        for name, lines in sql_holders().items()
        if not _under(name, ("ragstore.db",)) and name not in SQL_OUTSIDE_DB
    }
    assert not sorted(outside)


def test_every_sql_exception_is_still_needed() -> None:
    found = sql_holders()
    assert all(name in found for name in SQL_OUTSIDE_DB), sorted(set(SQL_OUTSIDE_DB) - set(found))
