"""The tables LangChain's PGVector and LlamaIndex's PGVectorStore write, made for real with
plain SQL in those libraries' layouts on the embedded server (pgvector), imported by
``--format langchain-pgvector`` / ``--format llamaindex-pgvector`` and searched by text."""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest

from ragstore.embedding.registry import resolve_spec
from ragstore.runtime import Runtime
from tests.conftest import create_database, run_cli
from tests.imports.helpers import checksum, vectors

MODEL = "all-MiniLM-L6-v2"
NOTES = [
    "Cats sleep for most of the day.",
    "The stock market fell sharply on Monday.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Recipes for baking sourdough bread at home.",
]
OTHER = ["A guide to rolling back a database schema migration."]


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


def _import(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = run_cli("import", *args, "--no-backup", "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    report: dict[str, Any] = json.loads(out.out)
    assert report["verification"]["ok"] is True
    return report


def _stored(url: str, collection: str) -> dict[str, tuple[str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.source, k.text, k.metadata FROM chunks k JOIN documents d"
            " ON d.id = k.document_id JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = %s",
            (collection,),
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _top_source(capsys: pytest.CaptureFixture[str], query: str, collection: str) -> str:
    capsys.readouterr()
    assert run_cli("search", query, "-c", collection, "-k", "1", "--json") == 0
    return str(json.loads(capsys.readouterr().out)[0]["source"])


@pytest.fixture(scope="module")
def langchain_url(pg_admin_uri: str, rt: Runtime) -> str:
    """langchain-postgres' PGVector: two collections, MiniLM vectors of the documents."""
    url = create_database(pg_admin_uri, None)
    embed = rt.embedder(resolve_spec(MODEL)).embed
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(
            "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY,"
            " name varchar NOT NULL UNIQUE, cmetadata json)"
        )
        conn.execute(
            "CREATE TABLE langchain_pg_embedding (id varchar PRIMARY KEY, collection_id uuid"
            " REFERENCES langchain_pg_collection (uuid) ON DELETE CASCADE,"
            " embedding vector, document varchar, cmetadata jsonb)"
        )
        for name, texts in (("notes", NOTES), ("other", OTHER)):
            cid = uuid.uuid4()
            conn.execute("INSERT INTO langchain_pg_collection VALUES (%s, %s, NULL)", (cid, name))
            for i, (text, vec) in enumerate(zip(texts, embed(texts), strict=True)):
                conn.execute(
                    "INSERT INTO langchain_pg_embedding VALUES (%s, %s, %s::vector, %s, %s)",
                    (f"{name}-{i}", cid, _vec(vec), text, json.dumps({"source": f"{name}.txt"})),
                )
    return url


def test_a_langchain_pgvector_collection_is_imported_and_searchable_by_text(
    langchain_url: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [langchain_url, "--format", "langchain-pgvector", "--model", MODEL]
    report = _import(capsys, *args, "--source-collection", "notes", "-c", "lc-notes")
    assert report["written"] == len(NOTES)
    assert report["source"].startswith("LangChain PGVector collection notes on postgresql://")
    assert report["model_check"].startswith(f"ok, {len(NOTES)} records' texts")
    stored = _stored(cli_env["RAGSTORE_DATABASE_URL"], "lc-notes")
    assert stored == {f"notes-{i}": (t, {"source": "notes.txt"}) for i, t in enumerate(NOTES)}
    assert _top_source(capsys, "how do plants make energy from sunlight", "lc-notes") == "notes-2"
    # two collections and none named: which one is asked, nothing is written
    capsys.readouterr()
    assert run_cli("import", *args, "-c", "lc-any", "--no-backup") == 65
    err = " ".join(capsys.readouterr().err.split())
    assert "holds 2 collections ('notes', 'other')" in err and "--source-collection" in err
    assert run_cli("import", *args, "--source-collection", "nope", "-c", "lc-nope") == 65
    err = " ".join(capsys.readouterr().err.split())
    assert "has no collection 'nope' (collections: 'notes', 'other')" in err
    # without --format, the URL is a plain table's: the error points at the format
    assert run_cli("import", langchain_url, "--model", MODEL, "-c", "lc-f", "--no-backup") == 65
    assert "--format langchain-pgvector" in " ".join(capsys.readouterr().err.split())
    plain = ["import", langchain_url, "--table", "langchain_pg_embedding", "--model", MODEL]
    assert run_cli(*plain, "--source-collection", "notes", "-c", "lc-f", "--no-backup") == 65
    err = " ".join(capsys.readouterr().err.split())
    assert "--source-collection names a LangChain PGVector collection" in err
    # a flag the layout would ignore is named, not dropped
    assert run_cli("import", *args, "--table", "notes", "-c", "lc-t", "--no-backup") == 65
    assert "--table would be ignored" in " ".join(capsys.readouterr().err.split())


def test_the_older_langchain_community_layout_reads_custom_id(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # langchain_community's PGVector: uuid primary key, the caller's id in custom_id
    url = create_database(pg_admin_uri, None)
    vecs = vectors(6, 8, seed=11)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(
            "CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar,"
            " cmetadata json)"
        )
        conn.execute(
            "CREATE TABLE langchain_pg_embedding (uuid uuid PRIMARY KEY, collection_id uuid,"
            " embedding vector(8), document varchar, cmetadata json, custom_id varchar)"
        )
        cid = uuid.uuid4()
        conn.execute("INSERT INTO langchain_pg_collection VALUES (%s, 'only', '{}')", (cid,))
        twins = [uuid.uuid4(), uuid.uuid4()]  # no unique name in this layout
        for twin in twins:
            conn.execute("INSERT INTO langchain_pg_collection VALUES (%s, 'twin', '{}')", (twin,))
        for i, v in enumerate(vecs):
            conn.execute(
                "INSERT INTO langchain_pg_embedding VALUES (%s, %s, %s::vector, %s, %s, %s)",
                (uuid.uuid4(), cid, _vec(v), f"text {i}", json.dumps({"n": i}), f"c{i}"),
            )
    args = [url, "--format", "langchain-pgvector", "--model", "old@v1", "--dimension", "8"]
    report = _import(capsys, *args, "--source-collection", "only", "-c", "lc-old")
    ids = [f"c{i}" for i in range(6)]
    assert report["verification"]["source_checksum"] == checksum(ids, vecs)
    stored = _stored(cli_env["RAGSTORE_DATABASE_URL"], "lc-old")
    assert stored == {f"c{i}": (f"text {i}", {"n": i}) for i in range(6)}
    # two collections of one name: one of them read would leave the other's rows out
    capsys.readouterr()
    assert run_cli("import", *args, "--source-collection", "twin", "-c", "lc-twin") == 65
    err = " ".join(capsys.readouterr().err.split())
    assert "has 2 collections named 'twin'" in err and str(twins[0]) in err


def test_of_langchain_community_rows_of_one_id_skip_keeps_the_one_stored_first(
    pg_admin_uri: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # langchain-community appends a row when a document is added again (custom_id is not
    # unique). Its rows were read unordered, so --policy duplicate_id=skip kept whichever
    # the plan met first: here an index scan (the source's planner told to prefer one)
    # met the later row first. The generic reader's order is kept: by id, then physical.
    url = create_database(pg_admin_uri, None)
    vecs = vectors(3, 8, seed=12)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE langchain_pg_collection (uuid uuid PRIMARY KEY, name varchar)")
        conn.execute(
            "CREATE TABLE langchain_pg_embedding (uuid uuid PRIMARY KEY, collection_id uuid,"
            " embedding vector(8), document varchar, cmetadata json, custom_id varchar)"
        )
        conn.execute(
            "CREATE INDEX later_first ON langchain_pg_embedding"
            " ((collection_id::text), document DESC)"
        )
        cid = uuid.uuid4()
        conn.execute("INSERT INTO langchain_pg_collection VALUES (%s, 'only')", (cid,))
        for i, (rid, text) in enumerate([("a", "a first"), ("b", "b"), ("a", "a second")]):
            conn.execute(
                "INSERT INTO langchain_pg_embedding VALUES (%s, %s, %s::vector, %s, '{}', %s)",
                (uuid.uuid4(), cid, _vec(vecs[i]), text, rid),
            )
        dbname = conn.info.dbname
        for setting in ("enable_seqscan", "enable_bitmapscan"):
            conn.execute(f'ALTER DATABASE "{dbname}" SET {setting} = off')
    args = [url, "--format", "langchain-pgvector", "--model", "old@v1", "--dimension", "8"]
    for collection in ("lc-dup-1", "lc-dup-2"):
        _import(capsys, *args, "-c", collection, "--policy", "duplicate_id=skip")
        stored = _stored(cli_env["RAGSTORE_DATABASE_URL"], collection)
        assert {k: text for k, (text, _) in stored.items()} == {"a": "a first", "b": "b"}


def _node_content(meta: dict[str, Any], excluded: list[str]) -> str:
    """LlamaIndex's ``_node_content``: the TextNode without its text (remove_text=True)."""
    return json.dumps(
        {
            "id_": "x",
            "metadata": meta,
            "excluded_embed_metadata_keys": excluded,
            "excluded_llm_metadata_keys": [],
            "relationships": {},
            "text": "",
            "metadata_template": "{key}: {value}",
            "metadata_seperator": "\n",
            "text_template": "{metadata_str}\n\n{content}",
            "class_name": "TextNode",
        }
    )


def test_a_llamaindex_pgvectorstore_table_is_imported_and_checked_with_its_metadata(
    pg_admin_uri: str,
    rt: Runtime,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # PGVectorStore(table_name="docs") writes data_docs; each vector is of the node's
    # metadata and text as LlamaIndex gave them to the model, not of the text alone
    url = create_database(pg_admin_uri, None)
    embed = rt.embedder(resolve_spec(MODEL)).embed
    metas = [{"file_path": f"/data/n{i}.txt", "page": i} for i in range(len(NOTES))]
    given = [
        f"file_path: {m['file_path']}\n\n{t}" for m, t in zip(metas, NOTES, strict=True)
    ]  # page excluded from embedding
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(
            "CREATE TABLE data_docs (id bigserial PRIMARY KEY, text varchar NOT NULL,"
            " metadata_ json, node_id varchar, embedding vector(384))"
        )
        for i, (meta, vec) in enumerate(zip(metas, embed(given), strict=True)):
            row = {
                **meta,
                "_node_content": _node_content(meta, ["page"]),
                "_node_type": "TextNode",
                "document_id": "doc-1",
                "doc_id": "doc-1",
                "ref_doc_id": "doc-1",
            }
            conn.execute(
                "INSERT INTO data_docs (text, metadata_, node_id, embedding)"
                " VALUES (%s, %s, %s, %s::vector)",
                (NOTES[i], json.dumps(row), f"node-{i}", _vec(vec)),
            )
    args = [url, "--format", "llamaindex-pgvector", "--model", MODEL]
    report = _import(capsys, *args, "--table", "docs", "-c", "li-docs")
    assert report["source"].startswith("LlamaIndex PGVectorStore table data_docs on")
    assert report["model_check"].startswith(f"ok, {len(NOTES)} records' texts")
    stored = _stored(cli_env["RAGSTORE_DATABASE_URL"], "li-docs")
    assert stored == {
        f"node-{i}": (t, {**m, "document_id": "doc-1", "doc_id": "doc-1", "ref_doc_id": "doc-1"})
        for i, (t, m) in enumerate(zip(NOTES, metas, strict=True))
    }
    assert _top_source(capsys, "baking bread", "li-docs") == "node-3"
    # the table's own name is read too, and a table of another layout is named as such
    assert _import(capsys, *args, "--table", "data_docs", "-c", "li-docs2")["written"] == 4
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE data_plain (id int, body text, emb real[])")
    assert run_cli("import", *args, "--table", "plain", "-c", "li-plain", "--no-backup") == 65
    err = " ".join(capsys.readouterr().err.split())
    assert "has no column node_id, text, metadata_, embedding" in err
    assert "not LlamaIndex PGVectorStore's layout" in err


def test_a_llamaindex_node_added_again_keeps_its_newest_row(
    pg_admin_uri: str,
    rt: Runtime,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # PGVectorStore appends a row when a node is added again (node_id is not unique, id a
    # bigserial). Read unordered, --policy duplicate_id=skip kept the row the scan met
    # first: here the stale one, stored first
    url = create_database(pg_admin_uri, None)
    embed = rt.embedder(resolve_spec(MODEL)).embed
    rows = [("node-0", "stale"), ("node-1", NOTES[1]), ("node-0", NOTES[0])]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(
            "CREATE TABLE data_re (id bigserial PRIMARY KEY, text varchar NOT NULL,"
            " metadata_ json, node_id varchar, embedding vector(384))"
        )
        for (node, text), vec in zip(rows, embed([t for _, t in rows]), strict=True):
            conn.execute(
                "INSERT INTO data_re (text, metadata_, node_id, embedding)"
                " VALUES (%s, %s, %s, %s::vector)",
                (text, json.dumps({"v": text}), node, _vec(vec)),
            )
    args = [url, "--format", "llamaindex-pgvector", "--model", MODEL, "--table", "re"]
    report = _import(capsys, *args, "-c", "li-re", "--policy", "duplicate_id=skip")
    assert report["written"] == 2
    stored = _stored(cli_env["RAGSTORE_DATABASE_URL"], "li-re")
    assert stored == {
        "node-0": (NOTES[0], {"v": NOTES[0]}),
        "node-1": (NOTES[1], {"v": NOTES[1]}),
    }
