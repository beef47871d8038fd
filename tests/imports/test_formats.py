"""Each basic store, written for real by the test, imported end to end and verified."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ragstore.db.database import stored_json
from ragstore.errors import DatabaseUnavailableError
from ragstore.imports.postgres import PostgresTableSource
from tests.conftest import create_database, run_cli
from tests.imports.helpers import (
    checksum,
    collection_state,
    vectors,
    write_jsonl,
    write_npy_csv,
)

DIM = 24


def _import(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = run_cli("import", *args, "--no-backup", "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    report: dict[str, Any] = json.loads(out.out)
    return report


def _assert_verified(report: dict[str, Any], ids: list[str], vecs: np.ndarray) -> None:
    v = report["verification"]
    assert v["ok"] is True
    assert v["source_rows"] == v["stored_rows"] == len(ids)
    assert v["source_checksum"] == v["stored_checksum"] == checksum(ids, vecs)
    assert v["recall_at_10"] >= 0.95


def test_jsonl_file_is_imported_with_text_and_metadata(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"doc-{i}" for i in range(300)]
    vecs = vectors(300, DIM)
    src = write_jsonl(tmp_path / "store.jsonl", ids, vecs, extra=[{"source": "wiki"} for _ in ids])
    report = _import(
        capsys, str(src), "-c", "fmt-jsonl", "--model", "legacy@v1", "--dimension", str(DIM)
    )
    _assert_verified(report, ids, vecs)
    assert report["created"] is True and report["provider"] == "imported"
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.text, k.metadata FROM chunks k JOIN documents d ON"
            " d.id = k.document_id WHERE d.source = 'doc-7'"
        ).fetchone()
    assert row == ("text of doc-7", {"n": 7, "source": "wiki"})


def test_the_import_report_names_its_batch_and_a_filter_finds_its_documents(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # every imported document carries metadata import.batch, but neither report said it,
    # so an import's documents could not be told from another's
    args = ["--model", "legacy@v1", "--dimension", str(DIM), "--no-backup"]
    first = write_jsonl(tmp_path / "a.jsonl", ["a0", "a1"], vectors(2, DIM, seed=1))
    report = _import(capsys, str(first), "-c", "fmt-batch", *args[:-1])
    batch = report["batch"]
    assert len(batch) == 16
    later = write_jsonl(tmp_path / "b.jsonl", ["b0"], vectors(1, DIM, seed=2))
    capsys.readouterr()
    assert run_cli("import", str(later), "-c", "fmt-batch", *args) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("batch:"))
    other = line.split()[1]
    assert other != batch and len(other) == 16
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        found = conn.execute(
            "SELECT d.source, d.metadata #>> '{import,batch}' FROM documents d"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'fmt-batch'"
            " ORDER BY d.source"
        ).fetchall()
    assert found == [("a0", batch), ("a1", batch), ("b0", other)]
    # the filter the report names finds the documents of that import alone
    where = line.split("--where ", 1)[1].rsplit(" finds", 1)[0].strip("'")
    assert json.loads(where) == {"import.batch": other}
    capsys.readouterr()
    code = run_cli("search", "text", "-c", "fmt-batch", "--mode", "fulltext", "--where", where)
    code_json = run_cli(
        "search", "text", "-c", "fmt-batch", "--mode", "fulltext", "--where", where, "--json"
    )
    out = capsys.readouterr().out
    assert code == code_json == 0
    hits = json.loads(out[out.index("[") :])
    assert [h["source"] for h in hits] == ["b0"]


def test_npy_matrix_with_csv_sidecar(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [str(1000 + i) for i in range(200)]
    vecs = vectors(200, DIM, seed=1)
    src = write_npy_csv(tmp_path / "vecs.npy", ids, vecs)
    report = _import(
        capsys, str(src), "-c", "fmt-npy", "--model", "legacy@v1", "--dimension", str(DIM)
    )
    _assert_verified(report, ids, vecs)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        meta = conn.execute(
            "SELECT k.metadata FROM chunks k JOIN documents d ON"
            " d.id = k.document_id WHERE d.source = '1005'"
        ).fetchone()
    assert meta == ({"lang": "en"},)


def test_npz_with_jsonl_sidecar_and_l2_distance(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"n{i}" for i in range(150)]
    vecs = vectors(150, DIM, seed=2).astype(np.float64)  # float64 on disk, float32 stored
    np.savez(tmp_path / "store.npz", embeddings=vecs, other=np.arange(3))
    with (tmp_path / "side.jsonl").open("w") as fh:
        for rid in ids:
            fh.write(json.dumps({"id": rid, "text": f"t {rid}"}) + "\n")
    report = _import(
        capsys,
        str(tmp_path / "store.npz"),
        "--sidecar",
        str(tmp_path / "side.jsonl"),
        "-c",
        "fmt-npz",
        "--model",
        "legacy-l2@v1",
        "--dimension",
        str(DIM),
        "--distance",
        "l2",
    )
    _assert_verified(report, ids, vecs.astype(np.float32))
    assert report["distance"] == "l2"


def test_sidecar_with_fewer_rows_than_the_matrix_is_refused(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "m.npy", vectors(5, DIM))
    (tmp_path / "m.csv").write_text("id,text\na,x\nb,y\n")
    assert (
        run_cli(
            "import",
            str(tmp_path / "m.npy"),
            "-c",
            "fmt-bad",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--no-backup",
        )
        == 65
    )
    err = capsys.readouterr().err
    assert "error[import_source_invalid]" in err
    assert "describes 2 rows but" in err and "has 5" in err


@pytest.fixture(scope="module")
def legacy_url(pg_admin_uri: str) -> str:
    """A legacy PostgreSQL store on the embedded server: vectors in five column types."""
    url = create_database(pg_admin_uri, None)
    vecs = vectors(120, DIM, seed=3).astype(np.float64)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE legacy_docs (id integer PRIMARY KEY, content text,"
            " emb float8[], emb_real real[], emb_json jsonb, emb_bytea bytea,"
            " emb_text text, metadata jsonb)"
        )
        with conn.cursor().copy("COPY legacy_docs FROM STDIN") as copy:
            for i, v in enumerate(vecs):
                copy.write_row(
                    (
                        i,
                        f"legacy text {i}",
                        v.tolist(),
                        v.tolist(),
                        json.dumps(v.tolist()),
                        v.astype("<f4").tobytes(),
                        json.dumps(v.tolist()),
                        json.dumps({"row": i}),
                    )
                )
    return url


@pytest.mark.parametrize("column", ["emb", "emb_real", "emb_json", "emb_bytea", "emb_text"])
def test_postgres_table_each_vector_column_type(
    column: str, legacy_url: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [str(i) for i in range(120)]
    vecs = vectors(120, DIM, seed=3)
    report = _import(
        capsys,
        legacy_url,
        "--table",
        "legacy_docs",
        "--vector-column",
        column,
        "-c",
        f"pg-{column.replace('_', '-')}",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
    )
    _assert_verified(report, ids, vecs)
    assert report["source"].startswith("PostgreSQL table legacy_docs on postgresql://")
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.text, k.metadata FROM chunks k JOIN documents d ON"
            " d.id = k.document_id JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = %s AND d.source = '42'",
            (f"pg-{column.replace('_', '-')}",),
        ).fetchone()
    assert row == ("legacy text 42", {"row": 42})


def test_postgres_table_without_a_clear_vector_column_names_the_flag(
    legacy_url: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli(
            "import",
            legacy_url,
            "--table",
            "legacy_docs",
            "-c",
            "pg-x",
            "--model",
            "legacy@v1",
            "--dimension",
            str(DIM),
            "--no-backup",
        )
        == 65
    )
    err = capsys.readouterr().err
    assert "cannot tell which column of legacy_docs holds the vectors" in err
    assert "--vector-column" in err


def test_chroma_directory_written_by_chromadb(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    ids = [f"c{i}" for i in range(250)]
    vecs = vectors(250, DIM, seed=4)
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    coll = client.get_or_create_collection(
        "notes", embedding_function=None, metadata={"hnsw:space": "cosine"}
    )
    coll.add(
        ids=ids,
        embeddings=vecs.tolist(),
        documents=[f"chroma {i}" for i in ids],
        metadatas=[{"topic": "t", "i": n} for n in range(250)],
    )
    # Chroma hands vectors back through float64, 1 ulp off what was given: what it returns is
    # the source the checksum must match
    got = coll.get(ids=ids, include=["embeddings"])
    ids, vecs = list(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)
    del coll, client
    report = _import(
        capsys,
        str(tmp_path / "chroma"),
        "-c",
        "fmt-chroma",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
    )
    _assert_verified(report, ids, vecs)
    assert report["source"] == f"Chroma collection notes in {tmp_path / 'chroma'}"
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.text, k.metadata FROM chunks k JOIN documents d ON"
            " d.id = k.document_id WHERE d.source = 'c9'"
        ).fetchone()
    assert row == ("chroma c9", {"topic": "t", "i": 9})


def test_ids_are_carried_exactly_even_where_they_differ_only_by_spaces_case_or_form(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # distinct ids of a source store, each its own record: none stripped, folded or
    # normalised into another (" a" and "a" were both stored as "a", refused as a
    # duplicate the store did not have)
    ids = ["a", "a ", " a", "A", "\u00e9", "e\u0301", "\tb\n", "7"]
    vecs = vectors(len(ids), DIM, seed=7)
    src = write_jsonl(tmp_path / "ids.jsonl", ids, vecs)
    report = _import(
        capsys, str(src), "-c", "fmt-ids", "--model", "legacy@v1", "--dimension", str(DIM)
    )
    _assert_verified(report, ids, vecs)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        stored = conn.execute(
            "SELECT d.source, k.text FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'fmt-ids'"
        ).fetchall()
    assert sorted(stored) == sorted((rid, f"text of {rid}") for rid in ids)


@pytest.mark.parametrize("table", ['"MyDocs"', 'public."MyDocs"', "MyDocs", "app.MyDocs"])
def test_postgres_table_with_a_mixed_case_name(
    table: str, pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # an ORM's table ("MyDocs", quoted when made): found by the column lookup, then read
    # as a relation named '"MyDocs"' that did not exist, so it could not be imported
    url = create_database(pg_admin_uri, None)
    vecs = vectors(20, DIM, seed=8)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE SCHEMA app")
        for schema in ("public", "app"):
            conn.execute(
                f'CREATE TABLE {schema}."MyDocs" (id text PRIMARY KEY, body text, emb real[])'
            )
            with conn.cursor().copy(f'COPY {schema}."MyDocs" FROM STDIN') as copy:
                for i, v in enumerate(vecs):
                    copy.write_row((f"{schema}-{i}", f"text {i}", v.tolist()))
    name = f"pg-case-{len(table)}"  # each parameter is of another length
    report = _import(
        capsys, url, "--table", table, "-c", name, "--model", "legacy@v1", "--dimension", str(DIM)
    )
    schema = "app" if table.startswith("app.") else "public"
    _assert_verified(report, [f"{schema}-{i}" for i in range(20)], vecs)


def test_jsonl_keeps_an_underscore_id_beside_the_id_as_metadata(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a MongoDB export: its "_id" beside the application's "id" was dropped from every
    # record's metadata; "_id" is the id only where there is no "id"
    vecs = vectors(2, DIM, seed=9)
    src = tmp_path / "mongo.jsonl"
    src.write_text(
        json.dumps({"id": "doc-1", "_id": "65f0a1", "text": "one", "vector": vecs[0].tolist()})
        + "\n"
        + json.dumps({"_id": "65f0a2", "text": "two", "vector": vecs[1].tolist()})
        + "\n"
    )
    report = _import(
        capsys, str(src), "-c", "fmt-mongo", "--model", "legacy@v1", "--dimension", str(DIM)
    )
    _assert_verified(report, ["doc-1", "65f0a2"], vecs)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT d.source, k.metadata FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'fmt-mongo'"
            " ORDER BY d.source"
        ).fetchall()
    assert rows == [("65f0a2", {}), ("doc-1", {"_id": "65f0a1"})]


def test_chroma_collection_written_to_while_it_is_read_is_read_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chroma pages by offset: a record deleted by a writer between two pages shifted the
    # next page past a record that was there all along, and the import verified the set
    # it had read, one record short, as the whole store. Chroma's client now reads a
    # private copy: every record of the directory as it was when the read began.
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from ragstore.imports import chroma

    monkeypatch.setattr(chroma, "PAGE", 2)
    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    coll = client.get_or_create_collection("live", embedding_function=None)
    ids = [f"r{i}" for i in range(6)]
    coll.add(ids=ids, embeddings=vectors(6, DIM).tolist(), documents=ids)
    read = chroma.ChromaSource(tmp_path / "chroma").records()
    first = [next(read).id, next(read).id]
    coll.delete(ids=[first[0]])  # a writer, between the first page and the second
    assert sorted([*first, *(r.id or "" for r in read)]) == ids
    # read again: the store as it is now
    assert sorted(r.id or "" for r in chroma.ChromaSource(tmp_path / "chroma").records()) == ids[1:]


def _chroma_dir_of_an_older_chroma(path: Path) -> None:
    """A Chroma directory as a chromadb before metadb migration 6 left it: written by the
    installed one, that migration then undone."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
    )
    coll = client.get_or_create_collection("old", embedding_function=None)
    ids = [f"o{i}" for i in range(30)]
    coll.add(ids=ids, embeddings=vectors(30, DIM, seed=12).tolist(), documents=ids)
    client.close()
    with sqlite3.connect(path / "chroma.sqlite3") as db:
        db.execute("DROP TABLE embedding_metadata_array")
        db.execute("DELETE FROM migrations WHERE dir = 'metadb' AND version = 6")
    db.close()


def _files(path: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(f.relative_to(path)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def test_chroma_directory_is_imported_without_a_byte_of_it_written(
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chroma's client upgraded a directory of an older Chroma in place (its migrations
    # applied), after which that Chroma might not open it again, and wrote to every
    # directory it read (a lock row in chroma.sqlite3, the HNSW files rewritten)
    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = _files(source)
    report = _import(
        capsys, str(source), "-c", "fmt-chroma-old", "--model", "legacy@v1", "--dimension", "24"
    )
    assert report["verification"]["ok"] is True
    assert report["verification"]["source_rows"] == 30
    assert _files(source) == before
    with sqlite3.connect(f"{(source / 'chroma.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM migrations WHERE dir = 'metadb'").fetchone() == (5,)
    db.close()
    assert list((tmp_path / "tmp").iterdir()) == []  # the private copy is gone


def test_chroma_directory_with_a_crashed_writers_journal_is_read_as_last_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a writer killed mid-transaction leaves chroma.sqlite3-journal, which a read-only
    # connection may not roll back: the copy is rolled back instead, the source left as is
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA cache_size=1')\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "db.execute(\"UPDATE embeddings SET embedding_id = embedding_id || '-torn'\")\n"
            "db.execute('CREATE TABLE junk AS SELECT * FROM embeddings')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
            str(source / "chroma.sqlite3"),
        ],
        check=False,
    )
    assert killed.returncode == -9 and (source / "chroma.sqlite3-journal").stat().st_size > 0
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = _files(source)
    ids = sorted(r.id or "" for r in chroma.ChromaSource(source).records())
    assert ids == sorted(f"o{i}" for i in range(30))
    assert _files(source) == before
    assert list((tmp_path / "tmp").iterdir()) == []


def test_chroma_directory_in_wal_mode_is_read_without_files_left_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a chroma.sqlite3 put in WAL mode: even a read-only SQLite connection creates its
    # -wal and -shm files beside it, and left them in the source
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    with sqlite3.connect(source / "chroma.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    db.close()
    assert sorted(p.name for p in source.iterdir() if p.is_file()) == ["chroma.sqlite3"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = _files(source)
    ids = sorted(r.id or "" for r in chroma.ChromaSource(source).records())
    assert ids == sorted(f"o{i}" for i in range(30))
    assert _files(source) == before
    assert list((tmp_path / "tmp").iterdir()) == []


def test_chroma_directory_with_a_segment_linked_from_elsewhere_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a segment folder moved to another disk and linked back: the copy left it out, and
    # Chroma, its log purged, failed to find the vectors
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    client = chromadb.PersistentClient(
        path=str(source), settings=ChromaSettings(anonymized_telemetry=False)
    )
    coll = client.get_or_create_collection("big", embedding_function=None)
    ids = [f"b{i}" for i in range(1500)]  # past Chroma's sync threshold: its log purged
    coll.add(ids=ids, embeddings=vectors(1500, 4).tolist())
    client.close()
    (segment,) = [p for p in source.iterdir() if p.is_dir()]
    segment.rename(tmp_path / "elsewhere")
    segment.symlink_to(tmp_path / "elsewhere")
    before = _files(source)
    assert sorted(r.id or "" for r in chroma.ChromaSource(source).records()) == sorted(ids)
    assert _files(source) == before


def test_chroma_directory_losing_a_file_while_it_is_copied_is_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file removed between the listing and its copy (a writer deleting a collection)
    # was refused as a permission problem: it is a change, and the copy is taken again
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    (source / "notes.txt").write_text("the team's own file")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    copyfile = shutil.copyfile

    def copy_beside_a_remover(src: Path, dst: Path) -> Any:
        if Path(src).name == "notes.txt":
            Path(src).unlink()  # gone between the listing and its copy
        return copyfile(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_beside_a_remover)
    assert len(list(chroma.ChromaSource(source).records())) == 30
    assert not (source / "notes.txt").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_chroma_directory_without_chromadb_installed_is_refused_before_it_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the private copy (of many gigabytes, maybe) was taken before the import found out
    # that chromadb, which reads it, is not installed
    from ragstore.errors import ImportSourceError
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    copies: list[Path] = []
    monkeypatch.setattr(chroma, "_copy_once", lambda path, dest: copies.append(dest) or True)
    monkeypatch.setitem(sys.modules, "chromadb", None)  # what an import of it then raises
    with pytest.raises(ImportSourceError, match=r"needs the chromadb package: pip install"):
        list(chroma.ChromaSource(source).records())
    assert copies == []


def test_chroma_copy_that_does_not_fit_says_where_and_how_to_move_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's "database or disk is full" from the copy of chroma.sqlite3 was named as
    # Chroma failing to read the source ("written by a compatible Chroma version?")
    from ragstore.errors import ImportSourceError
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def backup_onto_a_full_disk(database: Path, target: Path) -> None:
        source = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
        copy = sqlite3.connect(target)
        copy.execute("PRAGMA max_page_count = 1")  # SQLite's own SQLITE_FULL
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()

    monkeypatch.setattr(chroma, "_backup", backup_onto_a_full_disk)
    with pytest.raises(ImportSourceError) as refused:
        list(chroma.ChromaSource(source).records())
    assert str(refused.value) == (
        f"reading {source} without changing it takes a private copy of it, and "
        f"{tmp_path / 'tmp'} has no room for one (database or disk is full); set TMPDIR to "
        "a directory with room for a copy of it"
    )
    assert list((tmp_path / "tmp").iterdir()) == []


def test_chroma_directory_changing_while_it_is_copied_is_copied_again_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a writer at work while the directory is copied would leave a copy mixing two of its
    # states: it is copied again, and refused where it keeps changing
    from ragstore.errors import ImportSourceError
    from ragstore.imports import chroma

    source = tmp_path / "chroma"
    _chroma_dir_of_an_older_chroma(source)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    writes = {"left": 1}
    copyfile = shutil.copyfile

    def copy_beside_a_writer(src: Path, dst: Path) -> Any:
        if writes["left"]:
            writes["left"] -= 1
            with sqlite3.connect(source / "chroma.sqlite3") as db:  # a real write, meanwhile
                db.execute("UPDATE collections SET name = name")
            db.close()
        return copyfile(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_beside_a_writer)
    assert len(list(chroma.ChromaSource(source).records())) == 30
    assert writes["left"] == 0
    writes["left"] = 1_000  # a writer that never stops
    with pytest.raises(ImportSourceError, match=r"kept changing while it was read \(3 tries\)"):
        list(chroma.ChromaSource(source).records())
    assert list((tmp_path / "tmp").iterdir()) == []


def test_csv_sidecar_with_a_long_text_is_imported_and_a_broken_one_named(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the csv module refuses a field over 128 KiB and a line ending in a bare CR: its
    # error escaped as a traceback, and a long text could not be imported at all
    vecs = vectors(2, DIM, seed=10)
    np.save(tmp_path / "long.npy", vecs)
    long_text = "word " * 60_000  # 300 KB in one field
    with (tmp_path / "long.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([["id", "text"], ["a", long_text], ["b", "short"]])
    report = _import(
        capsys,
        str(tmp_path / "long.npy"),
        "-c",
        "fmt-csv-long",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
    )
    _assert_verified(report, ["a", "b"], vecs)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.text FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = 'fmt-csv-long' AND d.source = 'a'"
        ).fetchone()
    assert row == (long_text,)
    np.save(tmp_path / "cr.npy", vectors(3, DIM))
    (tmp_path / "cr.csv").write_bytes(b"id,text\na,x\nb,y\rc,z\n")
    args = ["import", str(tmp_path / "cr.npy"), "-c", "fmt-csv-cr", "--model", "legacy@v1"]
    assert run_cli(*args, "--dimension", str(DIM), "--no-backup") == 65
    err = capsys.readouterr().err
    assert f"error[import_source_invalid]: {tmp_path / 'cr.csv'} line 3: not a readable CSV" in err


def test_chroma_directory_chroma_cannot_read_is_named(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a chroma.sqlite3 that is no database (or a directory of another Chroma version):
    # Chroma's own exception escaped as a traceback
    (tmp_path / "chroma").mkdir()
    (tmp_path / "chroma" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    args = ["import", str(tmp_path / "chroma"), "-c", "fmt-chroma-bad", "--model", "legacy@v1"]
    assert run_cli(*args, "--dimension", str(DIM), "--no-backup") == 65
    err = capsys.readouterr().err
    assert f"error[import_source_invalid]: Chroma could not read {tmp_path / 'chroma'} (" in err
    assert "file is not a database" in err and "chromadb 1." in err


def test_postgres_source_is_read_in_a_read_only_transaction(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # an import must never write to its source: a view whose reading writes (a function
    # logging each read) was read in a read-write transaction, which the import then
    # committed, and the source database had rows it did not have before
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE reads (at timestamptz)")
        conn.execute(
            "CREATE FUNCTION logged() RETURNS boolean LANGUAGE plpgsql AS"
            " $$BEGIN INSERT INTO reads VALUES (now()); RETURN true; END$$"
        )
        conn.execute("CREATE TABLE base (id text PRIMARY KEY, text text, emb real[])")
        conn.execute("INSERT INTO base VALUES ('a', 'x', %s)", (vectors(1, DIM)[0].tolist(),))
        conn.execute("CREATE VIEW logged_base AS SELECT * FROM base WHERE logged()")
    args = ["import", url, "--table", "logged_base", "-c", "pg-logged", "--model", "legacy@v1"]
    assert run_cli(*args, "--dimension", str(DIM), "--no-backup") == 65
    err = capsys.readouterr().err
    assert "error[import_source_invalid]: reading PostgreSQL table logged_base on " in err
    assert "read-only transaction" in err and "writes to the source" in err
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM reads").fetchone() == (0,)


def test_postgres_char_columns_are_read_without_their_padding(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # char(n) pads what it stores; SQL compares it without the padding, and so is it read
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, DIM, seed=11)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE padded (id char(8) PRIMARY KEY, text char(12), emb real[])")
        for i, v in enumerate(vecs):
            conn.execute("INSERT INTO padded VALUES (%s, %s, %s)", (f"p{i}", f"t{i}", v.tolist()))
    report = _import(
        capsys,
        url,
        "--table",
        "padded",
        "-c",
        "pg-padded",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
    )
    _assert_verified(report, ["p0", "p1", "p2"], vecs)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT d.source, k.text FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'pg-padded'"
            " ORDER BY 1"
        ).fetchall()
    assert rows == [("p0", "t0"), ("p1", "t1"), ("p2", "t2")]


def test_postgres_numeric_columns_stay_numbers_in_the_metadata(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # numeric came back from psycopg as Decimal and was stored as its string form: a
    # price 9.99 became "9.99", which no numeric filter matches
    url = create_database(pg_admin_uri, None)
    vec = vectors(1, DIM, seed=12)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE priced (id text, body text, emb real[], price numeric(10, 2),"
            " qty numeric, precise numeric, ratio float8, flag boolean, made date)"
        )
        conn.execute(
            "INSERT INTO priced VALUES ('p', 'a thing', %s, 9.99, 3, 0.12345678901234567890,"
            " 0.5, true, '2024-01-02')",
            (vec[0].tolist(),),
        )
    report = _import(
        capsys,
        url,
        "--table",
        "priced",
        "-c",
        "pg-priced",
        "--model",
        "legacy@v1",
        "--dimension",
        str(DIM),
    )
    _assert_verified(report, ["p"], vec)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.metadata FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'pg-priced'"
        ).fetchone()
    assert row == (
        {
            "price": 9.99,
            "qty": 3,
            "precise": "0.12345678901234567890",  # more digits than a float: exact text
            "ratio": 0.5,
            "flag": True,
            "made": "2024-01-02",
        },
    )


def test_postgres_numbers_beyond_64_bits_are_read_as_the_floats_ragstore_reads(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # jsonb keeps 1e20 as numeric and gives it back as 100000000000000000000, which the
    # source's connection read as that integer (ragstore's own read it as a float), and
    # a numeric column's 1e20 became the same integer: the import refused both as beyond
    # 64 bits ("unstorable"), so such a source could not be imported at all
    url = create_database(pg_admin_uri, None)
    vec = vectors(1, DIM, seed=13)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE wide (id text, body text, emb real[], tags jsonb, extra json,"
            " big numeric)"
        )
        conn.execute(
            "INSERT INTO wide VALUES ('w', 'a thing', %s, '{\"x\": 1e20, \"n\": 7}',"
            " '{\"y\": 100000000000000000000}', 1e20)",
            (vec[0].tolist(),),
        )
    report = _import(
        capsys, url, "--table", "wide", "-c", "pg-wide", "--model", "legacy@v1",
        "--dimension", str(DIM),
    )  # fmt: skip
    _assert_verified(report, ["w"], vec)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT k.metadata::text FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = 'pg-wide'"
        ).fetchone()
    assert row is not None
    assert stored_json(row[0]) == {"tags": {"x": 1e20, "n": 7}, "extra": {"y": 1e20}, "big": 1e20}


def test_a_postgres_source_written_while_it_is_read_is_read_as_it_was(
    pg_admin_uri: str,
) -> None:
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE live (id int, text text, emb real[])")
        for i in range(6):
            conn.execute("INSERT INTO live VALUES (%s, 't', %s)", (i, vectors(1, DIM)[0].tolist()))
    read = PostgresTableSource(url, "live", batch_rows=2).records()
    first = next(read)
    with psycopg.connect(url) as conn:  # committed between two fetches of the read
        conn.execute("INSERT INTO live VALUES (9, 'new', %s)", (vectors(1, DIM)[0].tolist(),))
        conn.execute("DELETE FROM live WHERE id = 5")
        conn.execute("UPDATE live SET text = 'changed' WHERE id = 4")
    got = [(r.id, r.text) for r in [first, *read]]
    assert got == [(str(i), "t") for i in range(6)]


def test_a_postgres_source_lost_mid_read_is_unavailable_not_invalid(pg_admin_uri: str) -> None:
    # the source's backend terminated between two fetches was reported as a source that
    # is invalid (exit 65, "fix the source"), naming no place; it is the source being
    # away (69), said with the row the read got to and that nothing was imported
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE gone (id int, text text, emb real[])")
        for i in range(6):
            conn.execute("INSERT INTO gone VALUES (%s, 't', %s)", (i, vectors(1, DIM)[0].tolist()))
        dbname = conn.info.dbname
    read = PostgresTableSource(url, "gone", batch_rows=2).records()
    assert next(read).id == "0"
    with psycopg.connect(pg_admin_uri, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND state = 'idle in transaction'",
            (dbname,),
        ).fetchone()
    assert killed == (1,)
    with pytest.raises(DatabaseUnavailableError) as err:
        list(read)
    said = str(err.value)
    assert said.startswith("reading PostgreSQL table gone on postgresql://")
    assert "the connection to the source was lost after the row id=" in said
    assert "nothing was imported: run the import again" in said
    assert err.value.exit_code == 69


def test_a_postgres_source_lost_before_its_first_row_is_unavailable_too(
    pg_admin_uri: str,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the connection terminated between its opening and the look at the table's columns
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE gone (id int, text text, emb real[])")
    connect = PostgresTableSource._connect

    def connect_then_lose(self: PostgresTableSource) -> psycopg.Connection[tuple[Any, ...]]:
        conn = connect(self)
        with psycopg.connect(pg_admin_uri, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return conn

    monkeypatch.setattr(PostgresTableSource, "_connect", connect_then_lose)
    args = ["-c", "pg-gone", "--model", "legacy@v1", "--dimension", str(DIM), "--no-backup"]
    assert run_cli("import", url, "--table", "gone", *args) == 69
    err = capsys.readouterr().err
    assert "error[database_unavailable]: reading PostgreSQL table gone on " in err
    assert "the connection to the source was lost before the first row (" in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "pg-gone")["exists"]


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("text", {"en": "hello"}, 'the text is an object ({"en": "hello"})'),
        ("text", ["a", "b"], 'the text is a list (["a", "b"])'),
        ("id", True, "the id is a boolean (true)"),
        ("id", {"k": 1}, 'the id is an object ({"k": 1})'),
    ],
)
def test_an_id_or_text_that_is_no_string_is_named_not_stored_as_its_repr(
    field: str,
    value: object,
    shown: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An object, list or boolean as a record's id or text was stored as Python's repr of it
    (the text ``{'en': 'hello'}``), and the import said it was verified."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    vecs = vectors(2, DIM)
    src = tmp_path / "odd.jsonl"
    with src.open("w") as fh:
        fh.write(json.dumps({"id": "fine", "text": "t", "vector": vecs[0].tolist()}) + "\n")
        odd = {"id": "odd", "text": "t", "vector": vecs[1].tolist(), field: value}
        fh.write(json.dumps(odd) + "\n")
    before = collection_state(url, "fmt-odd")
    code = run_cli(
        "import", str(src), "-c", "fmt-odd", "--model", "legacy@v1", "--dimension", str(DIM),
        "--no-backup",
    )  # fmt: skip
    assert code == 65
    err = capsys.readouterr().err
    assert "error[import_source_invalid]" in err
    assert f"{src} line 2: {shown}" in err
    assert collection_state(url, "fmt-odd") == before


def test_a_csv_sidecar_row_with_more_fields_than_the_header_is_named(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fields beyond the header became metadata under the key None, and the record
    was refused as unstorable for "a key that is not a string (None, ...)"."""
    np.save(tmp_path / "m.npy", vectors(2, DIM))
    (tmp_path / "m.csv").write_text("id,text\na,x\nb,one, two\n")
    code = run_cli(
        "import", str(tmp_path / "m.npy"), "-c", "fmt-wide", "--model", "legacy@v1",
        "--dimension", str(DIM), "--no-backup",
    )  # fmt: skip
    assert code == 65
    err = capsys.readouterr().err
    assert "error[import_source_invalid]" in err
    assert f"{tmp_path / 'm.csv'} line 3: 3 fields, but the header names 2 columns" in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "fmt-wide")["exists"]


@pytest.mark.parametrize(
    ("space", "made"),
    [
        ("ip", {"metadata": {"hnsw:space": "ip"}}),
        ("l2", {"metadata": {"hnsw:space": "l2"}}),
        ("l2", {}),  # Chroma's default
        # Chroma 1.x's own way: the space in the configuration alone, the metadata None
        # (read from the metadata only, imported as l2)
        ("cosine", {"configuration": {"hnsw": {"space": "cosine"}}}),
        ("ip", {"configuration": {"spann": {"space": "ip"}}}),
    ],
)
def test_a_chroma_collection_is_searched_by_the_distance_chroma_searched_it_by(
    space: str,
    made: dict[str, Any],
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Chroma's ``hnsw:space`` was read and dropped: a collection that Chroma searched by
    inner product or l2 (its default) was imported as cosine, ranking the same vectors
    otherwise, unsaid. A new model without --distance now takes the collection's."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    coll = client.get_or_create_collection("notes", embedding_function=None, **made)
    ids = [f"s{i}" for i in range(20)]
    coll.add(ids=ids, embeddings=vectors(20, DIM).tolist(), documents=ids)
    del coll, client
    report = _import(
        capsys, str(tmp_path / "chroma"), "-c", f"fmt-space-{space}-{len(str(made))}",
        "--model", f"spaced-{space}-{len(str(made))}@v1", "--dimension", str(DIM),
    )  # fmt: skip
    assert report["distance"] == space
    assert report["verification"]["ok"]


def test_a_chroma_directory_without_a_collection_says_so(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # it said "holds 0 Chroma collections (none); choose one with --chroma-collection",
    # sending the user to choose among none
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(tmp_path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    client.get_or_create_collection("gone", embedding_function=None)
    client.delete_collection("gone")
    del client
    assert (tmp_path / "chroma" / "chroma.sqlite3").exists()
    args = ["import", str(tmp_path / "chroma"), "-c", "fmt-chroma-empty", "--model"]
    args += ["legacy@v1", "--dimension", str(DIM), "--no-backup"]
    for extra in ([], ["--chroma-collection", "gone"]):
        code = run_cli(*args, *extra)
        err = " ".join(capsys.readouterr().err.split())
        assert code == 65, err
        assert (
            f"{tmp_path / 'chroma'} holds no Chroma collection: there is nothing to import" in err
        )
        assert "choose one" not in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "fmt-chroma-empty")["exists"]


def test_a_postgres_bytea_id_is_named_not_stored_as_its_repr(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bytea id column was stored as Python's repr of the bytes (``b'\\xde\\xad'``): an id
    no application looks its documents up by, called verified."""
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE hashed (id bytea, text text, emb real[])")
        conn.execute(
            "INSERT INTO hashed VALUES ('\\xdead'::bytea, 't', %s)", (vectors(1, DIM)[0].tolist(),)
        )
    code = run_cli(
        "import", url, "--table", "hashed", "--vector-column", "emb", "-c", "pg-hashed",
        "--model", "legacy@v1", "--dimension", str(DIM), "--no-backup",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 65, err
    assert "the id is a byte string, not a string or a number" in err
    assert "encode(id, 'hex') AS id" in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "pg-hashed")["exists"]


def _numpy_damaged(path: Path) -> None:
    np.savez(path.with_suffix(".npz"), vectors=vectors(2, DIM))
    data = path.with_suffix(".npz").read_bytes()
    path.with_suffix(".npz").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "write", "said"),
    [
        ("empty.npy", lambda p: p.write_bytes(b""), "not a readable NumPy file"),
        ("cut.npz", _numpy_damaged, "not a readable NumPy file (File is not a zip file)"),
        (
            "complex.npy",
            lambda p: np.save(p, vectors(2, DIM) + 1j),
            "the matrix holds complex64 values, not real numbers",
        ),
        (
            "words.npy",
            lambda p: np.save(p, np.array([["0.5"] * DIM] * 2)),
            "the matrix holds <U3 values, not real numbers",
        ),
    ],
)
def test_a_numpy_file_damaged_or_of_no_real_numbers_is_named(
    name: str, write: Any, said: str, tmp_path: Path
) -> None:
    """An empty .npy (EOFError) and a cut .npz (BadZipFile) escaped as tracebacks; a
    complex matrix lost its imaginary parts and strings were parsed, imported as verified."""
    from ragstore.errors import ImportSourceError
    from ragstore.imports import SourceOptions, open_source

    path = tmp_path / name
    write(path)
    path.with_suffix(".jsonl").write_text('{"id": "a", "text": "t"}\n{"id": "b", "text": "t"}\n')
    with pytest.raises(ImportSourceError) as info:
        list(open_source(str(path), SourceOptions()).records())
    assert str(info.value).startswith(f"{path}: ") and said in str(info.value)


# a NumPy file's import with no descriptor left: opening the matrix (``load``: .npy
# mapped, .npz read) or, once it is mapped, reading its rows (``rows``) fails with EMFILE
_NUMPY_WITHOUT_DESCRIPTORS = """
import json, os, resource, sys
from pathlib import Path
from ragstore.imports import files

path, when = Path(sys.argv[1]), sys.argv[2]
matrix = files._load_matrix(path, None) if when == "rows" else None
fd = os.open(os.devnull, os.O_RDONLY)
os.close(fd)  # the lowest free descriptor: with the limit there, the next open fails
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))
try:
    if when == "rows":
        list(files._matrix_rows(path, matrix))
    else:
        files._load_matrix(path, None)
    got = None
except Exception as exc:
    got = exc
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(json.dumps({"code": getattr(got, "code", None), "message": str(got)}))
"""


@pytest.mark.parametrize(
    ("name", "when"), [("m.npy", "load"), ("m.npz", "load"), ("m.npy", "rows")]
)
def test_a_numpy_file_the_process_cannot_open_is_not_blamed(
    tmp_path: Path, name: str, when: str
) -> None:
    """Every OSError of a NumPy file's load was "not a readable NumPy file"
    (``import_source_invalid``): a healthy matrix blamed for the process's EMFILE, and an
    EMFILE reading its rows escaped raw. Both now say what the JSONL import and an ingest
    say (``ragstore.files.unreadable``): not the file, import it again, raise ulimit -n."""
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, vectors=vectors(2, DIM))
    else:
        np.save(path, vectors(2, DIM))
    done = subprocess.run(
        [sys.executable, "-c", _NUMPY_WITHOUT_DESCRIPTORS, str(path), when],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["code"] == "resources_exhausted", got
    assert got["message"].startswith(
        f"{path}: reading it failed in this process, not because of the file (OSError: "
        "[Errno 24] Too many open files"
    ), got
    assert got["message"].endswith(
        "it was not stored: import it again; raise the open-files limit (ulimit -n) or "
        "import fewer files at once"
    ), got


@pytest.mark.parametrize("name", ["m.npy", "m.npz"])
def test_a_numpy_file_the_system_cannot_read_is_file_unreadable(tmp_path: Path, name: str) -> None:
    """A read the system refuses (here an I/O error: a link to ``/proc/self/mem``, whose
    first page is mapped by no process; EACCES alike) is ``file_unreadable`` with the
    system's reason, not "not a readable NumPy file" (``import_source_invalid``, the
    content blamed)."""
    from ragstore.errors import FileUnreadableError
    from ragstore.imports import SourceOptions, open_source

    path = tmp_path / name
    path.symlink_to("/proc/self/mem")
    path.with_suffix(".jsonl").write_text('{"id": "a", "text": "t"}\n')
    with pytest.raises(FileUnreadableError) as info:
        list(open_source(str(path), SourceOptions()).records())
    assert str(info.value) == (
        f"{path}: cannot read: Input/output error; check the file's permissions for the "
        "user running ragstore"
    )


_READ_WHILE_CUT = """
import sys
from pathlib import Path
import numpy as np
from ragstore.imports import files
from ragstore.errors import ImportSourceError
files.NPY_BLOCK_BYTES = 3 * 4 * 4  # three rows of four float32 a block
files.NPY_COLUMN_READ_BYTES = 4  # and in Fortran order too
path = Path(sys.argv[1])
rows = files.NumpySource(path).records()
got = [next(rows).vector for _ in range(int(sys.argv[2]))]
assert (np.vstack(got) == np.load(path)[: len(got)]).all(), "rows read wrongly"
if sys.argv[3] == "cut":
    path.open("wb").close()  # np.save rewriting it truncates it first
try:
    got += [r.vector for r in rows]
except ImportSourceError as exc:
    sys.exit(str(exc))
assert (np.vstack(got) == np.load(path)).all(), "rows read wrongly"
print(len(got))
"""


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_npy_file_cut_while_it_is_read_is_named_not_a_bus_error(
    order: str, tmp_path: Path
) -> None:
    """Its rows were read through a memory map: a .npy cut short while the import read it
    (an export run again rewrites it) killed the process with SIGBUS, saying nothing. A
    matrix in Fortran order (saved transposed) still was, after C order was fixed."""
    path = tmp_path / "m.npy"
    for how, expected in (("keep", "10\n"), ("cut", "")):
        np.save(path, np.arange(40, dtype=np.float32).reshape(10, 4).copy(order=order))
        assert np.load(path, mmap_mode="r").flags.f_contiguous == (order == "F")
        path.with_suffix(".csv").write_text("id,text\n" + "".join(f"r{i},t\n" for i in range(10)))
        done = subprocess.run(
            [sys.executable, "-c", _READ_WHILE_CUT, str(path), "4", how],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, done.stdout) == (0 if how == "keep" else 1, expected), done
        if how == "cut":
            assert done.stderr == (
                f"{path} changed while it was read (it is shorter than its header says, or "
                "was written to); import it once it is written whole. Nothing was written\n"
            )


@pytest.mark.parametrize("sidecar", ["", ".jsonl", ".csv"])
def test_a_jsonl_file_or_sidecar_written_to_while_it_is_read_is_refused(
    sidecar: str, tmp_path: Path
) -> None:
    """A JSONL file (or a NumPy matrix's JSONL or CSV sidecar) appended to while the
    import read it was imported as whatever part of it the read met, unlike a .npy
    matrix or a Chroma directory: its size and modification time are now compared."""
    from ragstore.errors import ImportSourceError
    from ragstore.imports.files import JsonlSource, NumpySource

    ids = [f"w{i}" for i in range(4)]
    if sidecar:
        written = write_npy_csv(tmp_path / "m.npy", ids, vectors(4, DIM))
        path = written.with_suffix(sidecar)
        if sidecar == ".jsonl":
            path.with_suffix(".csv").unlink()
            path.write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in ids))
        source: JsonlSource | NumpySource = NumpySource(written, path)
        added = json.dumps({"id": "late"}) + "\n" if sidecar == ".jsonl" else "late,t,en\n"
    else:
        path = write_jsonl(tmp_path / "w.jsonl", ids, vectors(4, DIM))
        source = JsonlSource(path)
        added = json.dumps({"id": "late", "vector": [0.5] * DIM}) + "\n"
    assert [r.id for r in source.records()] == ids  # unchanged: read whole
    rows = source.records()
    assert next(rows).id == "w0"
    with path.open("a") as fh:  # an export appending to it meanwhile
        fh.write(added)
    with pytest.raises(ImportSourceError) as caught:
        list(rows)
    assert str(caught.value).startswith(f"{path} changed while it was read")
    assert "Nothing was written" in str(caught.value)


def test_a_pipe_or_a_looping_link_as_the_source_is_named_without_waiting(tmp_path: Path) -> None:
    """A FIFO named x.jsonl was opened, and the import waited for a writer forever; a link
    that loops was "no such file or directory"."""
    import contextlib
    import os
    import threading

    from ragstore.errors import FileUnreadableError, PathNotFoundError
    from ragstore.imports import SourceOptions, open_source

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)

    def unblock() -> None:  # without the fix: ends the wait, so that the test fails, not hangs
        with contextlib.suppress(OSError):  # ENXIO: no reader, nothing waits
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(3, unblock)
    timer.start()
    try:
        with pytest.raises(FileUnreadableError, match="not a regular file or folder"):
            list(open_source(str(fifo), SourceOptions()).records())
    finally:
        timer.cancel()
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(PathNotFoundError, match="a symbolic link that loops"):
        open_source(str(loop), SourceOptions())


def test_postgres_json_python_cannot_read_is_named_and_a_bad_url_hides_its_password(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A vector kept as text nested thousands deep or with a 5,000-digit integer, and a
    jsonb metadata nested thousands deep, escaped as RecursionError / ValueError tracebacks;
    a source URL libpq cannot parse was printed with the password it quoted; a database
    without LangChain's tables was told to give --table, which that format refuses."""
    url = create_database(pg_admin_uri, None)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE deep (id text, text text, embedding text)")
        conn.execute("INSERT INTO deep VALUES ('d1', 't', %s)", ("[" * 5000 + "]" * 5000,))
        conn.execute("CREATE TABLE huge (id text, text text, embedding text)")
        conn.execute("INSERT INTO huge VALUES ('h1', 't', %s)", ("[1" + "0" * 5000 + "]",))
        conn.execute("CREATE TABLE meta (id text, text text, embedding real[], metadata jsonb)")
        deep_meta = '{"x": ' + "[" * 3000 + "]" * 3000 + "}"
        conn.execute("INSERT INTO meta VALUES ('m1', 't', '{1,2}', %s)", (deep_meta,))
    common = ["-c", "pg-hostile", "--model", "hostile@v1", "--dimension", "2", "--dry-run"]
    said = {
        "deep": "deep row id=d1: the text cannot be read as a JSON array (nested too deeply)",
        "huge": "huge row id=h1: the text cannot be read as a JSON array (Exceeds the limit",
        "meta": "the first row holds a JSON value Python cannot read (nested too deeply)",
    }
    for table, expected in said.items():
        assert run_cli("import", url, "--table", table, *common) == 65
        err = capsys.readouterr().err
        assert err.startswith("error[import_source_invalid]: ") and expected in err, err
    lc = run_cli("import", url, "--format", "langchain-pgvector", *common)
    err = capsys.readouterr().err
    assert lc == 65 and "--table NAME or --table SCHEMA" not in err, err
    assert "is this the database LangChain's PGVector writes to" in err
    bad = "postgresql://u:p%zzs3cret@localhost/db"
    assert run_cli("import", bad, "--table", "x", *common) == 69
    err = capsys.readouterr().err
    assert "not a valid PostgreSQL URL: invalid percent-encoded token" in err
    assert "s3cret" not in err
    assert not collection_state(cli_env["RAGSTORE_DATABASE_URL"], "pg-hostile")["exists"]


def test_a_csv_column_that_writes_out_the_metadatas_value_agrees_with_it(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV column is text: a pandas export writing ``page`` as a column and inside the
    ``metadata`` JSON (``3`` beside ``{"page": 3}``) was refused as two values of one key;
    it is one, stored typed. A column that says another value is still refused."""
    np.save(tmp_path / "m.npy", vectors(2, DIM))
    (tmp_path / "m.csv").write_text(
        'id,text,page,metadata\na,x,3,"{""page"": 3, ""lang"": ""en""}"\nb,y,4,"{""page"": 4}"\n'
    )
    code = run_cli(
        "import", str(tmp_path / "m.npy"), "-c", "fmt-cols", "--model", "legacy@v1",
        "--dimension", str(DIM), "--no-backup",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        meta = conn.execute(
            "SELECT k.metadata FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id"
            " WHERE d.source = 'a' AND c.name = 'fmt-cols'"
        ).fetchone()
    assert meta == ({"page": 3, "lang": "en"},)
    (tmp_path / "m.csv").write_text('id,text,page,metadata\na,x,5,"{""page"": 3}"\nb,y,4,\n')
    code = run_cli(
        "import", str(tmp_path / "m.npy"), "-c", "fmt-cols2", "--model", "legacy@v1",
        "--dimension", str(DIM), "--no-backup",
    )  # fmt: skip
    assert code == 65
    assert "the key 'page' is in the metadata (3) and beside it" in capsys.readouterr().err
