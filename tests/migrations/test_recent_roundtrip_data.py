"""Revisions 0028-0038 down and up again on a store holding data: every document, chunk,
vector and posting is there afterwards, `db check` finds nothing, and searches and
filters read the indexes the head builds."""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.integrity import check
from ragstore.runtime import Runtime
from tests.migrations.test_roundtrip import schema_dump


def _contents(db: Database, without: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every row of every table of the schema (but the revision), as text; ``without``:
    columns left out (those an older revision lacks: ``documents.origin``, 0035)."""
    with db.connect() as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'alembic_version' ORDER BY 1"
            )
        ]
        return {
            t: [
                str(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT (to_jsonb(x) - %s::text[])::text FROM {} x ORDER BY 1").format(
                        sql.Identifier(t)
                    ),
                    (list(without),),
                )
            ]
            for t in tables
        }


def test_newest_revisions_round_trip_with_data(
    upgraded: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, settings = upgraded
    folder = tmp_path / "docs"
    (folder / "api").mkdir(parents=True)
    for i in range(6):
        (folder / "api" / f"p{i}.md").write_text(
            f"# Page {i}\n\nRoses need pruning in winter, part {i}.\n\n## More\n\nTulips {i}.\n"
        )
    (folder / "guide.md").write_text("# Guide\n\nHow to water ferns.\n")
    with Store(settings=settings) as store:
        store.ingest("rt", folder)
        store.add_texts("rt", ["a loose text about orchids"], ids=["t1"])
        store.index_field("path", "string")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    before, schema = _contents(db), schema_dump(url)
    without_origin = _contents(db, ("origin",))
    for target in ("0032", "0027"):
        migrations.downgrade(db, target)
        down = _contents(db, ("origin",))
        # a table newer than the target goes (document_tombstones, 0038: empty here)
        assert set(without_origin) - set(down) == {"document_tombstones"}, f"down to {target}"
        assert down == {t: without_origin[t] for t in down}, f"down to {target}"
        migrations.upgrade(db)
        assert _contents(db) == before, f"down to {target} and up again"
        assert schema_dump(url) == schema, f"down to {target} and up again"
    with Runtime(settings) as rt:
        report = check(rt, None)
        assert report.ok, report
    with Store(settings=settings) as store:
        assert store.search("rt", "pruning roses", k=3)["data"]
