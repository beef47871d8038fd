"""Revision 0026: a chunk's vectors go with it by a statement trigger on ``chunks`` instead
of each space table's foreign key. Down to 0025 the keys come back (vectors whose chunk is
gone deleted first) and a deleted document's vectors still go, by the keys; back up, the
keys are dropped (and the empty tables 0025's bulk swaps left), and the trigger removes
vectors in every space of the collection."""

from __future__ import annotations

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database

DOC = "# Guide\n\n## Running\n\nThe runners were running quickly.\n\nCats chase mice.\n"


def _keys(db: Database) -> list[str]:
    """Foreign keys that space tables have on ``chunks``."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT c.conrelid::regclass::text FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.confrelid = 'chunks'::regclass"
            " AND c.conrelid <> 'chunks'::regclass ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def _vectors(db: Database) -> dict[str, int]:
    """Vectors per space table, and those whose chunk is gone (``orphans``)."""
    with db.connect() as conn:
        tables = [str(r[0]) for r in conn.execute("SELECT table_name FROM embedding_spaces")]
        out: dict[str, int] = {"orphans": 0}
        for t in tables:
            row = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE NOT EXISTS"
                f" (SELECT 1 FROM chunks c WHERE c.id = e.chunk_id)) FROM {t} e"
            ).fetchone()
            assert row is not None
            out[t] = int(row[0])
            out["orphans"] += int(row[1])
    return out


def test_vectors_go_with_their_chunks_on_both_sides_of_the_revision(
    upgraded: tuple[Database, Settings],
) -> None:
    db, own = upgraded
    with Store(settings=own) as store:
        for name in ("a", "b"):
            store.add_document(name, "guide.md", DOC)
            store.add_document(name, "other.md", DOC.replace("Cats", "Dogs"))
    assert _keys(db) == []
    before = _vectors(db)
    assert len(before) == 3 and before["orphans"] == 0
    assert all(n > 0 for t, n in before.items() if t != "orphans")

    migrations.downgrade(db, "0025")
    keys = _keys(db)
    assert len(keys) == 2 and all(k.startswith("emb_") for k in keys)
    with db.connect() as conn:
        conn.execute("DELETE FROM documents WHERE source LIKE '%/other.md'")
    down = _vectors(db)
    assert down["orphans"] == 0
    assert all(down[t] < before[t] for t in before if t != "orphans")

    with db.connect() as conn:  # what 0025's bulk swap left when a reader held it
        conn.execute(f"CREATE TABLE ragstore_old_{keys[0]} (LIKE {keys[0]} INCLUDING ALL)")
    assert migrations.upgrade(db).is_current
    assert _keys(db) == []
    with db.connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'ragstore%%old%%'"
        ).fetchone()
    assert left == (0,)
    with db.connect() as conn:
        conn.execute("DELETE FROM documents WHERE source LIKE '%/guide.md'")
    after = _vectors(db)
    assert after == {t: 0 for t in after}
