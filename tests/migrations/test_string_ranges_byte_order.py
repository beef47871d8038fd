"""Revision 0033: ``documents.source`` and every string field index in byte order
(``COLLATE "C"``), which filters' string ranges now compare in. Down to 0032 both are in
the database's collation again, up again in C; the documents and the field's label stay,
and at the head a folder's range and an indexed string field's range are found through
the indexes (their bounds in the index condition), not by reading every document."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import field_indexes, migrations
from ragstore.db.database import Database
from ragstore.db.field_indexes import FieldIndex
from ragstore.search import compile_filter

FOLDER = {"$gte": "docs/api/", "$lt": "docs/api0"}
FIELD = FieldIndex(("path",), "string")
SOURCES = ["docs/api/a.md", "docs/api/b.md", "docs/guide.md"]


def _state(db: Database) -> tuple[str | None, list[str], list[Any], list[Any]]:
    """The source column's collation, the field's index definitions, its labels, and the
    documents."""
    with db.connect() as conn:
        column = conn.execute(
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_name = 'documents' AND column_name = 'source'"
        ).fetchone()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = ANY(%s) ORDER BY indexname",
            ([FIELD.name("documents"), FIELD.name("chunks")],),
        ).fetchall()
        labels = conn.execute(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c"
            " WHERE relname = ANY(%s) ORDER BY relname",
            ([FIELD.name("documents"), FIELD.name("chunks")],),
        ).fetchall()
        rows = conn.execute(
            "SELECT source, metadata, content_hash FROM documents ORDER BY id"
        ).fetchall()
    assert column is not None
    return column[0], [str(r[0]) for r in indexes], [r[0] for r in labels], rows


def _plan(db: Database, where: dict[str, Any], cid: int) -> str:
    compiled = compile_filter(where, indexed=[FIELD])
    assert compiled.candidates is not None
    with db.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute(
            sql.SQL("EXPLAIN {}").format(compiled.candidates), {**compiled.params, "cid": cid}
        ).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def test_sources_and_string_fields_go_to_byte_order_and_back(
    upgraded: tuple[Database, Settings],
) -> None:
    db, own = upgraded
    with Store(settings=own) as store:
        for source in SOURCES:
            store.add_document("files", source, f"# {source}\n\nNotes on {source}.\n")
        cid = store._rt.collection("files").id
    with db.connect() as conn:
        conn.execute("UPDATE documents SET metadata = jsonb_build_object('path', source)")
        conn.commit()
    with db.connect(autocommit=True) as conn:
        assert field_indexes.add(conn, FIELD)
    column, indexes, labels, rows = _state(db)
    assert column == "C" and len(indexes) == 2 and all('COLLATE "C"' in i for i in indexes)

    migrations.downgrade(db, "0032")
    down = _state(db)
    assert down[0] is None  # the database's default again
    assert len(down[1]) == 2 and not any("COLLATE" in i for i in down[1])
    assert down[2:] == (labels, rows)
    with db.connect() as conn:
        assert field_indexes.indexed(conn) == [FIELD]

    assert migrations.upgrade(db).is_current
    assert _state(db) == (column, indexes, labels, rows)
    plan = _plan(db, {"source": FOLDER}, cid)
    assert "documents_collection_id_source_key" in plan, plan
    assert any("Index Cond" in line and "source >=" in line for line in plan.splitlines()), plan
    plan = _plan(db, {"path": FOLDER}, cid)
    for table in ("documents", "chunks"):
        assert f"Index Scan using {FIELD.name(table)}" in plan or (
            f"Bitmap Index Scan on {FIELD.name(table)}" in plan
        ), plan
