"""A store holding data taken down to an older revision and up again (what an upgrade from
that revision does): every row kept, searches answer the same, `db check` finds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import jobs, migrations
from ragstore.db.database import Database
from ragstore.db.jobs import JobFile
from ragstore.integrity import check
from ragstore.runtime import Runtime
from tests.migrations.test_roundtrip import schema_dump

QUERIES = ["pruning roses in winter", "water ferns", "orchids", "tulips part 3"]


def _postings(db: Database) -> list[str]:
    """The BM25 postings by collection and lexeme (term ids are the table's own numbering,
    which a rebuild of the terms may give afresh)."""
    with db.connect() as conn:
        return [
            str(r)
            for r in conn.execute(
                "SELECT t.collection_id, t.lexeme, p.impact, p.chunk_id, p.tf, p.len"
                " FROM bm25_postings p JOIN bm25_terms t USING (term_id) ORDER BY 1, 2, 4"
            )
        ]


def _rows(db: Database) -> dict[str, list[str]]:
    """Every row of every table as JSON (by column name: revision 0012's downgrade adds
    ``chunks.tsv`` back at the end, so its position is not the head's after a round trip)."""
    with db.connect() as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename NOT IN ('alembic_version', 'bm25_postings', 'bm25_terms')"
            )
        ]
        rows = {
            t: [
                str(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT to_jsonb(x)::text FROM {} x ORDER BY 1").format(
                        sql.Identifier(t)
                    )
                )
            ]
            for t in tables
        }
    rows["postings by lexeme"] = _postings(db)
    return rows


def _schema(url: str) -> list[str]:
    """The schema's lines in order of their text (a column's position aside)."""
    return sorted(line.rstrip(",") for line in schema_dump(url).splitlines())


def _searches(settings: Settings) -> list[Any]:
    out: list[Any] = []
    with Store(settings=settings) as store:
        for q in QUERIES:
            for mode in ("vector", "fulltext", "hybrid"):
                hits = store.search("rt", q, k=10, mode=mode, sections=False)["data"]
                out.append((q, mode, [(h["chunk_id"], round(h["score"], 5)) for h in hits]))
    return out


@pytest.mark.parametrize("target", ["0010", "0020", "0028", "0033"])
def test_an_old_revision_holding_data_upgrades_keeping_it(
    target: str, upgraded: tuple[Database, Settings], tmp_path: Path
) -> None:
    db, settings = upgraded
    folder = tmp_path / "docs"
    (folder / "api").mkdir(parents=True)
    for i in range(8):
        (folder / "api" / f"p{i}.md").write_text(
            f"# Page {i}\n\nRoses need pruning in winter, part {i}.\n\n## More\n\nTulips {i}.\n"
        )
    (folder / "guide.md").write_text("# Guide\n\nHow to water ferns.\n")
    with Store(settings=settings) as store:
        store.ingest("rt", folder)
        store.add_texts("rt", ["a loose text about orchids"], ids=["t1"])
        store.add_texts("other", ["orchids and ferns"], ids=["o1"])
        store.index_field("path", "string")
    with db.connect() as conn:
        jobs.create(conn, "rt", [JobFile("queued.md", b"# Queued\n\nlilies", {"k": 1})])
        # postings written as the data came in carry the average length of their day;
        # revision 0021's upgrade rebuilds them at today's (on purpose): so does this
        conn.execute("SELECT ragstore_bm25_rebuild(collection_id) FROM bm25_collection_stats")
        conn.commit()
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    before, schema, found = _rows(db), _schema(url), _searches(settings)
    migrations.downgrade(db, target)
    migrations.upgrade(db)
    after = _rows(db)
    for table in before:
        a, b = set(after.get(table, [])), set(before[table])
        assert after.get(table) == before[table], (table, sorted(b - a)[:8], sorted(a - b)[:8])
    assert _schema(url) == schema
    with Runtime(settings) as rt:
        report = check(rt, None)
        assert report.ok, report
    assert _searches(settings) == found
    assert before["ingest_jobs"] and before["ingest_job_files"]
