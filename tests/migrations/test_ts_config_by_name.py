"""Revision 0025 stores a chunk's text search configuration by name: the stored chunks keep
their configuration and tsvector down to 0024 (a regconfig again) and back up, and a chunk
written after the upgrade gets its collection's configuration."""

from __future__ import annotations

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database

DOC = "# Guide\n\n## Running\n\nThe runners were running quickly.\n\nCats chase mice.\n"


def _chunks(db: Database) -> list[tuple[str, str, str, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT k.name, c.ts_config::text, c.tsv::text,"
            " format_type(a.atttypid, NULL) FROM chunks c"
            " JOIN collections k ON k.id = c.collection_id"
            " JOIN pg_attribute a ON a.attrelid = 'chunks'::regclass AND a.attname = 'ts_config'"
            " ORDER BY c.id"
        ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def test_configurations_survive_the_downgrade_and_the_upgrade(
    upgraded: tuple[Database, Settings],
) -> None:
    db, own = upgraded
    with Store(settings=own) as store:
        store.create_collection("plain", settings={"ts_config": "simple"})
        store.add_document("plain", "guide.md", DOC)
        store.add_document("stemmed", "guide.md", DOC)
    before = _chunks(db)
    assert {(name, cfg, kind) for name, cfg, _, kind in before} == {
        ("plain", "simple", "text"),
        ("stemmed", "english", "text"),
    }
    assert any("'running'" in tsv for name, _, tsv, _ in before if name == "plain")
    assert not any("'running'" in tsv for name, _, tsv, _ in before if name == "stemmed")

    migrations.downgrade(db, "0024")
    down = _chunks(db)
    assert [r[:3] for r in down] == [r[:3] for r in before]
    assert {r[3] for r in down} == {"regconfig"}

    assert migrations.upgrade(db).is_current
    assert _chunks(db) == before
    with Store(settings=own) as store:  # the trigger names the collection's configuration
        store.add_document("plain", "more.md", "# More\n\nMore runners running.\n")
    with db.connect() as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE c.ts_config = 'simple'"
            " AND c.tsv @@ 'running'::tsquery) FROM chunks c"
            " JOIN documents d ON d.id = c.document_id WHERE d.source LIKE '%%more.md'"
            " AND c.chunk_type <> 'heading'"
        ).fetchone()
    assert row is not None and row[0] > 0 and row[0] == row[1]
