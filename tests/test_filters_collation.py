"""String ranges in filters compare byte by byte on a database whose collation is not C.

Under ``en_US.UTF-8`` punctuation is skipped at first and case folded, so a folder's range
``{"$gte": "docs/api/", "$lt": "docs/api0"}`` left out the folder's files and let others
in. The database here is made with that collation: from the machine's locales, or compiled
with ``localedef`` into a folder of this test's own, which a server of its own reads
(``LOCPATH``). Without either the module is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ragstore.db import embedded, field_indexes, migrations
from ragstore.db.database import Database
from ragstore.db.field_indexes import FieldIndex
from ragstore.db.inspection import database_collation
from ragstore.runtime import Runtime
from ragstore.search import search, service
from tests.conftest import _with_db
from tests.search_helpers import Doc, make_collection, write_docs

COLL = "collation"
LOCALE = "en_US.UTF-8"
FOLDER = {"$gte": "docs/api/", "$lt": "docs/api0"}
IN_FOLDER = {"docs/api/a.md", "docs/api/b.md"}
# in en_US "docs/api.0" and "docs/Api/" fall in the folder's range, its own files do not
SOURCES = [*sorted(IN_FOLDER), "docs/api.0", "docs/Api/", "docs/guide.md"]


@pytest.fixture(scope="module")
def en_us_admin_uri(pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An admin URI of a server that has the ``en_US.UTF-8`` locale: the session's where
    the machine has it, else a server of this module's own reading it from a folder
    compiled by ``localedef``."""
    if embedded._locale_exists("LC_COLLATE", LOCALE):
        yield pg_admin_uri
        return
    sources = Path("/usr/share/i18n/locales/en_US")
    if shutil.which("localedef") is None or not sources.exists():
        pytest.skip("no en_US.UTF-8 locale on this machine, and no localedef to make one")
    data_dir = tmp_path_factory.mktemp("pg_en_us")
    folder = data_dir / "locales"  # the server runs as a user of its own: let it read them
    folder.mkdir()
    made = subprocess.run(
        ["localedef", "-i", "en_US", "-f", "UTF-8", str(folder / LOCALE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if not (folder / LOCALE / "LC_COLLATE").exists():
        pytest.skip(f"localedef could not make {LOCALE}: {made.stderr[-300:]}")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o055)
    held = os.environ.get("LOCPATH")
    os.environ["LOCPATH"] = str(folder)  # read by initdb and the postmaster it starts
    try:
        uri = embedded.start(data_dir)
    finally:
        if held is None:
            os.environ.pop("LOCPATH", None)
        else:
            os.environ["LOCPATH"] = held
    yield uri
    embedded.stop(data_dir)


@pytest.fixture(scope="module")
def database_url(en_us_admin_uri: str) -> str:
    """A migrated database whose default collation is en_US.UTF-8 (overrides conftest's)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(en_us_admin_uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LC_COLLATE {l} LC_CTYPE {l}").format(
                sql.Identifier(name), l=sql.Literal(LOCALE)
            )
        )
    url = _with_db(en_us_admin_uri, name)
    migrations.upgrade(Database(url))
    return url


@pytest.fixture(scope="module")
def docs(rt: Runtime) -> Runtime:
    coll = make_collection(rt, COLL)
    write_docs(
        rt,
        coll,
        [
            Doc(s, [f"Notes about the interface, file {i}."], title=s, metadata={"path": s})
            for i, s in enumerate(SOURCES)
        ],
    )
    return rt


def sources(rt: Runtime, where: dict[str, Any], mode: str) -> set[str]:
    hits = search(rt, "notes about the interface", collection=COLL, k=50, where=where, mode=mode)  # type: ignore[arg-type]
    return {h.source for h in hits}


def test_the_database_orders_strings_by_language(docs: Runtime) -> None:
    with docs.db.connection() as conn:
        name, byte_order = database_collation(conn)
        assert (name, byte_order) == (LOCALE, False)
        # what the filters below would meet without COLLATE "C"
        row = conn.execute("SELECT 'docs/api/a.md' < 'docs/api0'").fetchone()
        assert row is not None and row[0] is False


CASES = {
    "source": {"source": FOLDER},
    "title": {"title": FOLDER},
    "metadata": {"path": FOLDER},
    "document-metadata": {"document.path": FOLDER},
    "source-one-sided": {"source": {"$gt": "docs/api/", "$lte": "docs/api/b.md"}},
}


@pytest.mark.parametrize("bound", [0, 1000])
@pytest.mark.parametrize("mode", ["vector", "hybrid"])
@pytest.mark.parametrize("where", CASES.values(), ids=CASES.keys())
def test_a_folder_range_keeps_the_folder_s_files(
    docs: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    where: dict[str, Any],
    mode: str,
    bound: int,
) -> None:
    """Byte order, as on a C database: the folder's two files, no other (through the
    candidates ranked exactly, and through the indexes past ``EXACT_FILTER_CHUNKS``)."""
    monkeypatch.setattr(service, "EXACT_FILTER_CHUNKS", bound)
    assert sources(docs, where, mode) == IN_FOLDER


def test_an_indexed_string_field_s_range_keeps_the_folder_s_files(docs: Runtime) -> None:
    index = FieldIndex(("path",), "string")
    with docs.db.connect(autocommit=True) as conn:
        assert field_indexes.add(conn, index)
    try:
        assert sources(docs, {"path": FOLDER}, "vector") == IN_FOLDER
        assert sources(docs, {"path": FOLDER}, "hybrid") == IN_FOLDER
    finally:
        with docs.db.connect(autocommit=True) as conn:
            field_indexes.drop_indexes(conn, index)
