"""Revision 0035: documents carry their origin. Rows stored before it are told apart on
the way up (an upload by its ``uploads/<collection>/`` folder, a text by an id that is no
absolute path); down to 0034 the column goes, and back up the same origins come back."""

from __future__ import annotations

from pathlib import Path

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database


def _origins(db: Database) -> list[tuple[str, str]]:
    with db.connect() as conn:
        rows = conn.execute("SELECT source, origin FROM documents ORDER BY source").fetchall()
    return sorted((Path(str(s)).name, str(o)) for s, o in rows)


def test_origins_are_told_apart_on_the_way_up(
    upgraded: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, settings = upgraded
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text("# Guide\n\nHow to water ferns.\n")
    with Store(settings=settings) as store:
        store.ingest("og", folder)
        store.add_document("og", "notes/up.md", "# Up\n\nUploaded orchids.\n")
        store.add_texts("og", ["a loose text about orchids"], ids=["t1"])
    stored = _origins(db)
    assert stored == [("guide.md", "file"), ("t1", "text"), ("up.md", "upload")]
    migrations.downgrade(db, "0034")
    with db.connect() as conn:
        gone = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'documents' AND column_name = 'origin'"
        ).fetchone()
    assert gone == (0,)
    migrations.upgrade(db)
    assert _origins(db) == stored
