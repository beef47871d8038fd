"""A collection's stored impacts follow its avgdl (revision 0039).

``impact_avgdl`` is the smallest avgdl a stored impact was written with; top-k bounds
multiply impacts by ``avgdl / impact_avgdl``. A collection whose first chunk was one word
kept ``impact_avgdl`` 1 while its avgdl grew, so its bounds stayed loose for good. Here
such a collection gets 200 CISI documents one write at a time, through the triggers: its
impacts are rewritten whenever the avgdl doubles, so the ratio ends at most 2, and every
top-k list is the exhaustive one, on the SQL path and with the native kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragstore.db import native, repository
from ragstore.runtime import Runtime
from tests.bm25_rows import full_text
from tests.search_helpers import Doc, make_collection, write_docs

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
N_DOCS = 200


@pytest.fixture(scope="module")
def grown(rt: Runtime) -> tuple[repository.Collection, list[str]]:
    docs = [Doc("first.txt", ["information"])]
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(Doc(f"cisi-{row['_id']}.txt", [f"{row['title']}\n{row['text']}"]))
            if len(docs) == N_DOCS + 1:
                break
    with (CISI / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:12]
    coll = make_collection(rt, "grown")
    write_docs(rt, coll, docs)  # one write per document: the insert triggers each time
    return coll, queries


def _ratio(rt: Runtime, cid: int) -> float:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT greatest(tokens::float8 / greatest(chunks, 1), 1.0) / impact_avgdl"
            " FROM bm25_collection_stats WHERE collection_id = %s",
            (cid,),
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_short_first_chunk_does_not_pin_the_bound(
    rt: Runtime, grown: tuple[repository.Collection, list[str]]
) -> None:
    coll, _ = grown
    assert 1.0 <= _ratio(rt, coll.id) <= 2.0


@pytest.mark.parametrize("kernel", ["sql", "native"])
def test_top_k_lists_are_the_exhaustive_ones(
    rt: Runtime,
    grown: tuple[repository.Collection, list[str]],
    pg_data_dir: Path,
    kernel: str,
) -> None:
    coll, queries = grown
    cache = pg_data_dir / "pg" / "ragstore_native_test"  # as tests/test_bm25_native.py
    on = native.sync(rt.db, cache, enabled=kernel == "native")
    assert on == (kernel == "native")
    with rt.db.connection() as conn:
        for query in queries:
            exact = full_text(conn, coll.id, query, "exhaustive")
            assert exact and full_text(conn, coll.id, query) == exact, query
