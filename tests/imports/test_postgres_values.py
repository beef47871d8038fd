"""A PostgreSQL source's values as the source spells them: a json/jsonb id number as its
text."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import create_database, run_cli
from tests.imports.helpers import checksum, vectors

DIM = 12


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    code = run_cli("import", *args, "--no-backup", "--json")
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


def _stored(url: str, coll: str) -> dict[str, dict[str, Any]]:
    """Each stored record's chunk metadata, by its id (its document's source)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.source, k.metadata FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = %s",
            (coll,),
        ).fetchall()
    return {str(source): dict(meta) for source, meta in rows}


@pytest.mark.parametrize("kind", ["json", "jsonb"])
def test_a_json_id_number_is_the_sources_text_of_it(
    kind: str, pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # a json/jsonb id holding a number was read as a Python number: json's 1e20 became
    # the id 100000000000000000000 and 1.0 the id 1, ids no SQL on the source matches
    url = create_database(pg_admin_uri, None)
    vecs = vectors(4, DIM, seed=31)
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE j (id {}, text text, embedding real[])").format(sql.SQL(kind))
        )
        for n, spelled in enumerate(["1e20", "1.0", '"abc"', "-0.50"]):
            conn.execute("INSERT INTO j VALUES (%s, 't', %s)", (spelled, vecs[n].tolist()))
        ids = [str(r[0]) for r in conn.execute("SELECT id #>> '{}' FROM j ORDER BY ctid")]
    if kind == "json":
        assert ids == ["1e20", "1.0", "abc", "-0.50"]
    else:  # jsonb keeps a number as numeric, and writes it as numeric does
        assert ids == ["100000000000000000000", "1.0", "abc", "-0.50"]
    coll = f"json-id-{kind}"
    code, report, err = _cli_json(
        capsys, url, "--table", "j", "-c", coll, "--model", "legacy@v1", "--dimension", str(DIM)
    )
    assert code == 0, err
    assert sorted(_stored(cli_env["RAGSTORE_DATABASE_URL"], coll)) == sorted(ids)
    assert report["verification"]["ok"] is True
    assert report["verification"]["source_checksum"] == checksum(ids, vecs)
