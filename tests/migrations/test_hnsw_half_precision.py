"""Revision 0028: every space's HNSW index is built over the half-precision cast of its
vectors. Down to 0027 a space of up to 2,000 dimensions is indexed in full precision
again; back up, over the cast again. The vectors themselves never change, and the
nearest neighbours the index finds, re-sorted by full-precision distance, are the
same on both sides (a handful of documents: the graph finds every one)."""

from __future__ import annotations

import numpy as np
import pytest

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.errors import InputError

DOCS = {
    "cats.md": "# Cats\n\nCats chase mice through the barn at night.\n",
    "dogs.md": "# Dogs\n\nDogs fetch sticks thrown across the park.\n",
    "ships.md": "# Ships\n\nContainer ships cross the ocean in weeks.\n",
    "bread.md": "# Bread\n\nBread rises when yeast ferments the dough.\n",
}


def _index(db: Database, table: str) -> str:
    with db.connect() as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{table}_hnsw",)
        ).fetchone()
    assert row is not None, f"{table} has no HNSW index"
    return str(row[0])


def _nearest(db: Database, table: str, query: np.ndarray, half: bool) -> list[tuple[int, float]]:
    """The space's nearest vectors through its index (sequential scans off), each with its
    full-precision distance, sorted by it: what a search's vector list is built from."""
    order = (
        "embedding::halfvec(384) <=> %(q)s::vector::halfvec(384)"
        if half
        else "embedding <=> %(q)s::vector"
    )
    with db.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            str(r[0])
            for r in conn.execute(
                f"EXPLAIN SELECT chunk_id FROM {table} ORDER BY {order} LIMIT 3",
                {"q": query.tolist()},
            )
        )
        assert f"Index Scan using {table}_hnsw" in plan, plan
        rows = conn.execute(
            f"SELECT chunk_id, embedding <=> %(q)s::vector FROM {table} ORDER BY {order} LIMIT 3",
            {"q": query.tolist()},
        ).fetchall()
    return sorted(((int(r[0]), round(float(r[1]), 6)) for r in rows), key=lambda r: r[1])


def test_the_index_is_rebuilt_in_half_precision_and_back(
    upgraded: tuple[Database, Settings],
) -> None:
    db, own = upgraded
    with Store(settings=own) as store:
        for name, text in DOCS.items():
            store.add_document("animals", name, text)
        coll = store._rt.collection("animals")
        table = coll.table
        query = np.asarray(store._rt.embedder_for(coll).embed_query("a cat hunting mice"))
    assert "((embedding)::halfvec(384)) halfvec_cosine_ops" in _index(db, table)
    at_head = _nearest(db, table, query, half=True)
    assert len(at_head) == 3

    migrations.downgrade(db, "0027")
    assert "USING hnsw (embedding vector_cosine_ops)" in _index(db, table)
    assert _nearest(db, table, query, half=False) == at_head

    assert migrations.upgrade(db).is_current
    assert "((embedding)::halfvec(384)) halfvec_cosine_ops" in _index(db, table)
    assert _nearest(db, table, query, half=True) == at_head


def test_a_value_half_precision_cannot_hold_stops_the_upgrade_naming_its_collection(
    upgraded: tuple[Database, Settings],
) -> None:
    """A space written before 0028 by a model that does not normalise may hold a value
    beyond ±65,504: the upgrade stops with the collection's name and what to do, in its
    one transaction (the schema stays at 0027), and goes through once the value is gone."""
    db, own = upgraded
    with Store(settings=own) as store:
        store.add_document("loud", "cats.md", DOCS["cats.md"])
        table = store._rt.collection("loud").table
    migrations.downgrade(db, "0027")
    loud = "[70000" + ",0" * 383 + "]"  # a float32, beyond half precision
    with db.connect() as conn:
        kept = conn.execute(f"SELECT chunk_id, embedding::text FROM {table} LIMIT 1").fetchone()
        assert kept is not None
        conn.execute(
            f"UPDATE {table} SET embedding = %s::vector WHERE chunk_id = %s", (loud, kept[0])
        )
    with pytest.raises(InputError, match="rolled back, the schema is as it was") as err:
        migrations.upgrade(db)
    assert "collection 'loud'" in str(err.value) and "models migrate" in str(err.value)
    assert migrations.status(db).current == "0027"
    assert "USING hnsw (embedding vector_cosine_ops)" in _index(db, table)
    with db.connect() as conn:
        conn.execute(
            f"UPDATE {table} SET embedding = %s::vector WHERE chunk_id = %s", (kept[1], kept[0])
        )
    assert migrations.upgrade(db).is_current
    assert "halfvec_cosine_ops" in _index(db, table)
