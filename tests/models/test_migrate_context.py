"""A model migration embeds exactly what a fresh ingest under the target model embeds,
also for headings over 200 characters and nested sections (the chunker cuts each section
path part to 200 characters and drops the top of paths that do not fit): the backfill
reads the context the chunker stored, it does not rebuild it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from psycopg import sql

from ragstore.db import migrations, repository
from ragstore.embedding.registry import TRUNCATED_MODEL
from ragstore.ingest import ingest_paths
from ragstore.modelops import find_model, migrate
from ragstore.runtime import Runtime

LONG = "a heading that goes on and on about the {} " + "and its many qualifications " * 8


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for d, topic in enumerate(["glaciers", "violins", "sourdough"]):
        lines = [f"# {LONG.format(topic)} top {d}", ""]
        for s in range(2):
            lines += [
                f"## {LONG.format(topic)} section {s}",
                "",
                f"Intro {s} of {topic}: how {topic} behave in season {s}.",
                "",
            ]
            for sub in range(2):
                lines += [
                    f"### Detail {sub} of {topic} {s}",
                    "",
                    f"Paragraph about {topic}, part {s}.{sub}, number {d * 10 + sub}.",
                    "",
                    f"- a list item on {topic} {s}.{sub}",
                    "",
                ]
        (folder / f"doc{d}.md").write_text("\n".join(lines))
    return folder


def _vectors(rt: Runtime, coll: repository.Collection) -> dict[tuple[str, int], np.ndarray]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT d.source, c.ordinal, e.embedding FROM {} e"
                " JOIN chunks c ON c.id = e.chunk_id"
                " JOIN documents d ON d.id = c.document_id"
            ).format(sql.Identifier(coll.table))
        ).fetchall()
    return {(str(r[0]), int(r[1])): np.asarray(r[2].to_numpy()) for r in rows}


def _contexts(rt: Runtime, name: str) -> dict[tuple[str, int], str]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, c.ordinal, c.context FROM chunks c JOIN documents d"
            " ON d.id = c.document_id JOIN collections k ON k.id = c.collection_id"
            " WHERE k.name = %s",
            (name,),
        ).fetchall()
    return {(str(r[0]), int(r[1])): str(r[2]) for r in rows}


def test_migrated_vectors_equal_a_fresh_ingest_under_the_target(
    rt: Runtime, tmp_path: Path
) -> None:
    folder = _corpus(tmp_path / "docs")
    report = ingest_paths(rt, [folder], "ctx-src")
    assert not report.failed
    contexts = _contexts(rt, "ctx-src")
    # the corpus exercises both rules: parts cut to 200 characters, and the top dropped
    assert any(any(len(p) == 200 for p in c.split(" > ")) for c in contexts.values())
    # "### Detail" sits under two long headings: the path does not fit a quarter of the
    # budget, so its top part is dropped and two of three parts remain
    assert any(c.count(" > ") == 1 and "Detail" in c for c in contexts.values())

    assert migrate(rt, "ctx-src", TRUNCATED_MODEL).switched
    target = find_model(rt, TRUNCATED_MODEL).spec
    with rt.db.connection() as conn:
        repository.create_collection(conn, "ctx-fresh", target)
    ingest_paths(rt, [folder], "ctx-fresh")

    migrated = _vectors(rt, rt.collection("ctx-src"))
    fresh = _vectors(rt, rt.collection("ctx-fresh"))
    assert rt.collection("ctx-src").model == rt.collection("ctx-fresh").model
    # the short sections share chunks (chunking v2): at least one per document
    assert migrated.keys() == fresh.keys() and len(fresh) >= 3
    worst = max(float(np.abs(migrated[k] - fresh[k]).max()) for k in fresh)
    assert worst < 1e-5, f"a migrated vector differs from the fresh ingest's by {worst}"


def test_the_schema_migration_fills_the_context_of_existing_chunks(rt: Runtime) -> None:
    before = _contexts(rt, "ctx-fresh")
    assert any(before.values())
    migrations.downgrade(rt.db, "0004")
    migrations.upgrade(rt.db)
    assert _contexts(rt, "ctx-fresh") == before
