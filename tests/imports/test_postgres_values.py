"""A PostgreSQL source's values as the source spells them: a json/jsonb id number as its
text, dates and times as ISO 8601, and NaN metadata refused."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from psycopg import sql

from ragstore.search.filters import compile_filter
from tests.conftest import create_database
from tests.imports.helpers import checksum, collection_state, import_json, stored_metadata, vectors

DIM = 12


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
    code, report, err = import_json(
        capsys, url, "--table", "j", "-c", coll, "--model", "legacy@v1", "--dimension", str(DIM)
    )
    assert code == 0, err
    assert sorted(stored_metadata(cli_env["RAGSTORE_DATABASE_URL"], coll)) == sorted(ids)
    assert report["verification"]["ok"] is True
    assert report["verification"]["source_checksum"] == checksum(ids, vecs)


# each metadata column's source values, one a row, and the ISO 8601 each is stored as
# (None: the column left out of that record, as a NULL column is)
TIMELY = {
    "at": (
        "timestamptz",
        ["2024-01-02 03:04:05.5+02", "infinity", "2023-12-31 23:00:00-05"],
        ["2024-01-02T01:04:05.5+00:00", "infinity", "2024-01-01T04:00:00+00:00"],
    ),
    "ts": (
        "timestamp",
        ["2024-01-02 03:04:05", "-infinity", "2024-01-02 03:04:05.123"],
        ["2024-01-02T03:04:05", "-infinity", "2024-01-02T03:04:05.123"],
    ),
    "day": ("date", ["2024-01-02", "infinity", None], ["2024-01-02", "infinity", None]),
    "span": (
        "interval",
        ["1 day 2 hours", "-1 mons +2 days -00:00:01.5", "0"],
        ["P1DT2H", "P-1M2DT-1.5S", "PT0S"],
    ),
    "ats": (
        "timestamptz[]",
        ["{2024-01-02 03:04:05+02,infinity}", "{}", None],
        [["2024-01-02T01:04:05+00:00", "infinity"], [], None],
    ),
}


@pytest.fixture(scope="module")
def timely(pg_admin_uri: str) -> tuple[str, np.ndarray]:
    """A source table with date and time metadata columns (its session in another time
    zone than UTC, as a server may be), three rows."""
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=32)
    columns = ", ".join(f"{name} {kind}" for name, (kind, _, _) in TIMELY.items())
    with psycopg.connect(url) as conn:
        conn.execute(f"CREATE TABLE timely (id text, text text, embedding real[], {columns})")
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'").format(
                sql.Identifier(dbname)
            )
        )
        for row in range(3):
            values = [given[row] for _, given, _ in TIMELY.values()]
            holes = ", ".join(["%s"] * (len(values) + 3))
            conn.execute(
                f"INSERT INTO timely VALUES ({holes})",
                (f"r{row}", "t", vecs[row].tolist(), *values),
            )
    return url, vecs


def test_postgres_dates_and_times_are_iso_8601_and_a_range_filter_orders_them(
    timely: tuple[str, np.ndarray], cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # they were stored as Python writes them (2024-01-02 03:04:05+00:00, an interval
    # "1 day, 2:00:00" and a month as 30 days), and an infinity refused the whole table
    url, _ = timely
    code, report, err = import_json(
        capsys, url, "--table", "timely", "-c", "timely", "--model", "legacy@v1",
        "--dimension", str(DIM),
    )  # fmt: skip
    assert code == 0, err
    assert report["verification"]["ok"] is True
    db = cli_env["RAGSTORE_DATABASE_URL"]
    stored = stored_metadata(db, "timely")
    for row in range(3):
        expected = {name: iso[row] for name, (_, _, iso) in TIMELY.items() if iso[row] is not None}
        assert stored[f"r{row}"] == expected, row
    # the durations are the ones PostgreSQL itself writes in ISO 8601
    with psycopg.connect(url) as conn:
        conn.execute("SET IntervalStyle = iso_8601")
        spans = [r[0] for r in conn.execute("SELECT span::text FROM timely ORDER BY id")]
    assert spans == TIMELY["span"][2]
    # a range of UTC timestamps finds the rows in it, whatever offset each was written with
    spec = {"at": {"$gte": "2024-01-01T03:00:00+00:00", "$lt": "2024-01-02T02:00:00+00:00"}}
    found = compile_filter(spec)
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT d.source FROM chunks c JOIN documents d ON d.id = c.document_id"
                " JOIN collections k ON k.id = d.collection_id WHERE k.name = 'timely' AND {}"
                " ORDER BY d.source"
            ).format(found.condition),
            found.params,
        ).fetchall()
    assert [r[0] for r in rows] == ["r0", "r2"]


def test_postgres_nan_metadata_is_refused_as_unstorable(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # a float8 or numeric NaN (or infinity) column has no JSON form: refused naming the
    # row and key (as a JSONL NaN is), and left out with unstorable=skip; never null
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=35)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE scored (id text, text text, embedding real[], f float8, n numeric)"
        )
        for rid, f, n, vec in zip(
            ["a", "b", "c"], ["0.25", "NaN", "1"], ["1.10", "2", "-Infinity"], vecs, strict=True
        ):
            conn.execute(
                "INSERT INTO scored VALUES (%s, 't', %s, %s, %s)", (rid, vec.tolist(), f, n)
            )
    args = [url, "--table", "scored", "-c", "pg-nan-meta", "--model", "legacy@v1"]
    args += ["--dimension", str(DIM)]
    code, _, err = import_json(capsys, *args)
    assert code == 65
    assert "2 unstorable (first: b (metadata: " in err
    db = cli_env["RAGSTORE_DATABASE_URL"]
    assert not collection_state(db, "pg-nan-meta")["exists"]
    code, report, err = import_json(capsys, *args, "--policy", "unstorable=skip")
    assert code == 0, err
    assert stored_metadata(db, "pg-nan-meta") == {"a": {"f": 0.25, "n": 1.1}}
    assert report["verification"]["source_checksum"] == checksum(["a"], vecs[:1])


def test_a_jsonb_integer_beyond_64_bits_is_refused_not_rounded(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # read as ragstore reads its own database, a foreign jsonb integer beyond 64 bits was
    # taken for a float: {"order_id": 12345678901234567890} was stored as
    # 1.2345678901234567e19 and the import reported success. A float jsonb wrote back as
    # an integer (1e20) is still the float.
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=36)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE orders (id text, text text, embedding real[], metadata jsonb)")
        for rid, meta, vec in zip(
            ["a", "b", "c"],
            ['{"order_id": 7}', '{"order_id": 12345678901234567890}', '{"order_id": 1e20}'],
            vecs,
            strict=True,
        ):
            conn.execute("INSERT INTO orders VALUES (%s, 't', %s, %s)", (rid, vec.tolist(), meta))
    args = [url, "--table", "orders", "-c", "pg-big-int", "--model", "legacy@v1"]
    args += ["--dimension", str(DIM)]
    code, _, err = import_json(capsys, *args)
    assert code == 65, err
    assert "1 unstorable (first: b (metadata: " in err
    db = cli_env["RAGSTORE_DATABASE_URL"]
    assert not collection_state(db, "pg-big-int")["exists"]
    code, report, err = import_json(capsys, *args, "--policy", "unstorable=skip")
    assert code == 0, err
    assert stored_metadata(db, "pg-big-int") == {"a": {"order_id": 7}, "c": {"order_id": 1e20}}
    assert report["verification"]["source_checksum"] == checksum(["a", "c"], vecs[[0, 2]])


def test_a_numeric_integer_beyond_64_bits_is_refused_not_stored_as_text(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # a numeric column's integer beyond 64 bits became its string form: 12345678901234567890
    # was stored as "12345678901234567890" and the import reported success (a jsonb one is
    # refused, above). One a float holds exactly (1e20) is that float.
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=37)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE sums (id text, text text, embedding real[], total numeric)")
        for rid, total, vec in zip(
            ["a", "b", "c"], ["7", "12345678901234567890", "1e20"], vecs, strict=True
        ):
            conn.execute("INSERT INTO sums VALUES (%s, 't', %s, %s)", (rid, vec.tolist(), total))
    args = [url, "--table", "sums", "-c", "pg-big-numeric", "--model", "legacy@v1"]
    args += ["--dimension", str(DIM)]
    code, _, err = import_json(capsys, *args)
    assert code == 65, err
    assert "1 unstorable (first: b (metadata: " in err
    db = cli_env["RAGSTORE_DATABASE_URL"]
    assert not collection_state(db, "pg-big-numeric")["exists"]
    code, report, err = import_json(capsys, *args, "--policy", "unstorable=skip")
    assert code == 0, err
    assert stored_metadata(db, "pg-big-numeric") == {"a": {"total": 7}, "c": {"total": 1e20}}
    assert report["verification"]["source_checksum"] == checksum(["a", "c"], vecs[[0, 2]])
