"""``bench.scale --top-up``: a kept collection grows with the corpus's next documents
through the incremental ingest path (index kept, BM25 statistics maintained), stored
under the names the direct build gives them, never one twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bench import scale, scale_build
from bench.instant_embedder import InstantServer

from ragstore.db import spaces
from ragstore.runtime import Runtime
from ragstore.search import search


@pytest.fixture(scope="module")
def server() -> Iterator[InstantServer]:
    with InstantServer() as srv:
        yield srv


def test_top_up_continues_the_corpus_through_the_incremental_path(
    rt: Runtime, server: InstantServer, tmp_path: Path
) -> None:
    coll = scale.instant_collection(rt, server)
    first = scale.top_up(rt, coll, 12, tmp_path)
    assert first["rows_before"] == 0 and first["rows_after"] >= 12
    again = scale.top_up(rt, coll, first["rows_after"] + 20, tmp_path)
    assert again["documents_before"] == first["documents_after"]
    assert again["rows_after"] >= first["rows_after"] + 20
    assert not list(tmp_path.iterdir()), "the load's files are removed"
    with rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)
        sources = [
            r[0]
            for r in conn.execute(
                "SELECT source FROM documents WHERE collection_id = %s ORDER BY source",
                (coll.id,),
            ).fetchall()
        ]
        assert sources == [scale_build.source(j) for j in range(again["documents_after"])]
        # the BM25 statistics the triggers kept equal a count from scratch
        kept = conn.execute(
            "SELECT chunks, tokens FROM bm25_collection_stats WHERE collection_id = %s",
            (coll.id,),
        ).fetchone()
        counted = conn.execute(
            "SELECT count(*), sum(tsv_length) FROM chunks"
            " WHERE collection_id = %s AND chunk_type <> 'heading'",
            (coll.id,),
        ).fetchone()
        assert kept == counted and kept[0] > 0
        df_off = conn.execute(
            "SELECT count(*) FROM (SELECT lexeme, count(*) AS df FROM chunks,"
            " unnest(tsvector_to_array(tsv)) AS l(lexeme)"
            " WHERE collection_id = %s AND chunk_type <> 'heading' GROUP BY 1) AS c"
            " FULL JOIN (SELECT lexeme, df FROM bm25_terms WHERE collection_id = %s) AS t"
            " USING (lexeme) WHERE c.df IS DISTINCT FROM t.df",
            (coll.id, coll.id),
        ).fetchone()
        assert df_off == (0,)
    # the last document added is searchable by its own text
    last = again["documents_after"] - 1
    text = scale_build.document(last, scale._records()).split("# ", 1)[1].split("\n\n")[1]
    hits = search(rt, text[:300], collection=scale.COLLECTION, k=10, mode="fulltext")
    assert any(h.source == scale_build.source(last) for h in hits)
