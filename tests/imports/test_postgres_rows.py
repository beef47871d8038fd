"""A PostgreSQL source's ids as the source spells them, and its rows without a vector."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from tests.conftest import create_database, run_cli
from tests.imports.helpers import checksum, collection_state, import_json, vectors

DIM = 24
# one id column per type, three rows; each column's values distinct
ID_COLUMNS = {
    "f8": ("float8", ["1e20", "NaN", "1.5e-07"]),
    "f4": ("real", ["0.1", "Infinity", "3.4e38"]),
    "num": ("numeric", ["1.50", "NaN", "1e20"]),
    "ts": ("timestamptz", ["2024-01-02 03:04:05.5+02", "infinity", "1999-12-31 23:59:59+00"]),
    "day": ("date", ["2024-01-02", "-infinity", "0044-03-15 BC"]),
    "uid": (
        "uuid",
        [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a13",
        ],
    ),
    "big": ("bigint", ["9007199254740993", "-1", "0"]),
    "span": ("interval", ["1 day", "-1 mons +2 days", "00:00:01.5"]),
}


@pytest.fixture(scope="module")
def typed_ids(pg_admin_uri: str) -> tuple[str, dict[str, list[str]], np.ndarray]:
    """A source table whose id may be any of several types, and each column's ids as
    the source itself spells them (``::text``)."""
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=21)
    columns = ", ".join(f"{name} {kind}" for name, (kind, _) in ID_COLUMNS.items())
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE typed ({columns}, text text, embedding real[])")
        for row in range(3):
            values = [spelled[row] for _, spelled in ID_COLUMNS.values()]
            holes = ", ".join(["%s"] * (len(values) + 2))
            conn.execute(
                f"INSERT INTO typed VALUES ({holes})", (*values, f"t{row}", vecs[row].tolist())
            )
        spelled = {
            name: [
                str(r[0])
                for r in conn.execute(
                    sql.SQL("SELECT {}::text FROM typed ORDER BY text").format(sql.Identifier(name))
                )
            ]
            for name in ID_COLUMNS
        }
    return url, spelled, vecs


@pytest.mark.parametrize("column", list(ID_COLUMNS))
def test_a_postgres_id_is_stored_as_the_source_spells_it(
    column: str,
    typed_ids: tuple[str, dict[str, list[str]], np.ndarray],
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # a float8 id 1e20 was stored as Python writes it (100000000000000000000, NaN as
    # nan), a real 0.1 as 0.10000000149011612, an interval as "1 day, 0:00:00": ids no
    # SQL on the source matches (WHERE id::text = ...), where PostgreSQL says 1e+20
    url, spelled, vecs = typed_ids
    ids = spelled[column]
    coll = f"pg-id-{column}"
    capsys.readouterr()
    code = run_cli(
        "import", url, "--table", "typed", "--id-column", column, "--text-column", "text",
        "--vector-column", "embedding", "--metadata-column", "text", "-c", coll,
        "--model", "legacy@v1", "--dimension", str(DIM), "--no-backup", "--json",
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        stored = conn.execute(
            "SELECT d.source, k.text FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = %s",
            (coll,),
        ).fetchall()
    assert sorted(stored) == sorted((rid, f"t{row}") for row, rid in enumerate(ids))
    verification = json.loads(out.out)["verification"]
    assert verification["ok"] is True
    assert verification["source_checksum"] == checksum(ids, vecs)
    # each stored id finds its own row of the source, by value and by text
    with psycopg.connect(url) as conn:
        kind = sql.SQL(ID_COLUMNS[column][0])
        for rid, text in stored:
            found = conn.execute(
                sql.SQL("SELECT text FROM typed WHERE {c} = %s::{k} AND {c}::text = %s").format(
                    c=sql.Identifier(column), k=kind
                ),
                (rid, rid),
            ).fetchall()
            assert found == [(text,)], rid


def _pending(pg_admin_uri: str) -> tuple[str, np.ndarray]:
    url = create_database(pg_admin_uri, None)
    vecs = vectors(2, DIM, seed=14)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE pending (id text, text text, embedding real[])")
        conn.execute(
            "INSERT INTO pending VALUES ('a', 't', %s), ('b', 't', NULL), ('c', 't', %s),"
            " ('d', 't', NULL)",
            (vecs[0].tolist(), vecs[1].tolist()),
        )
    return url, vecs


def test_postgres_rows_without_a_vector_are_refused_or_skipped_as_missing_vector(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # a row whose embedding is still to be made stopped the whole import, whatever
    # --on-invalid said: the only way past it was a view of the other rows
    url, vecs = _pending(pg_admin_uri)
    args = [url, "--table", "pending", "-c", "pg-pending2", "--model", "legacy@v1"]
    args += ["--dimension", str(DIM)]
    assert run_cli("import", *args, "--no-backup") == 65
    err = capsys.readouterr().err
    assert "error[import_invalid]: PostgreSQL table pending on " in err
    assert "2 missing_vector (first: b, d); nothing was written" in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "pg-pending2")["exists"]

    code, report, err = import_json(capsys, *args, "--on-invalid", "skip")
    assert code == 0, err
    assert report["skipped"] == 2
    issues = {i["kind"]: i for i in report["validation"]["issues"]}
    assert issues["missing_vector"]["count"] == 2
    assert issues["missing_vector"]["action"] == "skip"
    assert issues["missing_vector"]["first"] == ["b", "d"]
    v = report["verification"]
    assert v["ok"] is True and v["source_rows"] == v["stored_rows"] == 2
    assert v["source_checksum"] == checksum(["a", "c"], vecs)


def test_a_null_vector_in_a_jsonl_record_is_missing_vector_too(
    cli_env: dict[str, str], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # "vector": null said "no vector; expected one of the keys vector, ...", a key
    # the record had; it is a record without a vector, as a NULL column is
    vecs = vectors(2, DIM, seed=15)
    src = tmp_path / "pending.jsonl"
    lines = [
        {"id": "a", "text": "t", "vector": vecs[0].tolist()},
        {"id": "b", "text": "t", "vector": None},
        {"id": "c", "text": "t", "embedding": vecs[1].tolist()},
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = [str(src), "-c", "jsonl-pending", "--model", "legacy@v1", "--dimension", str(DIM)]
    code, _, err = import_json(capsys, *args)
    assert code == 65
    assert "1 missing_vector (first: b)" in err
    code, report, err = import_json(capsys, *args, "--policy", "missing_vector=skip")
    assert code == 0, err
    assert [i["kind"] for i in report["validation"]["issues"]] == ["missing_vector"]
    assert report["verification"]["source_checksum"] == checksum(["a", "c"], vecs)
