"""A model migration to a model that reads fewer tokens cuts the documents again.

The collection is ingested with MiniLM (256 tokens) from Markdown with long sections,
headings over 200 characters and nested sections, then migrated to the same weights pinned
with a 96-token budget: every chunk of the target fits it, its chunks and vectors equal a
fresh ingest under the target, searches answer before, during and after the backfill, a
rollback restores the original chunks and vectors exactly and a prune drops the kept set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from ragstore.db import catalog, documents, repository
from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, resolve_spec
from ragstore.errors import ConflictError, MigrationStateError
from ragstore.ingest import ingest_paths
from ragstore.modelops import migrate, model_status, prune, rechunk, rollback
from ragstore.modelops.migrate import cancel
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.pins import pin_smaller_budget

COLL = "rc-src"
NARROW = "minilm-96"
LONG = "a heading that goes on and on about the {} " + "and its many qualifications " * 8
SENTENCE = "The {t} of part {p} behave in ways that take a long sentence, number {n}, to explain. "


def _doc(d: int, topic: str) -> str:
    lines = [f"# {LONG.format(topic)} top {d}", ""]
    for s in range(2):
        lines += [f"## {LONG.format(topic)} section {s}", ""]
        # a long section: one paragraph of ~120 tokens, one chunk at 256, two at 96
        lines += ["".join(SENTENCE.format(t=topic, p=s, n=n) for n in range(6)), ""]
        for sub in range(2):
            lines += [
                f"### Detail {sub} of {topic} {s}",
                "",
                f"Paragraph about {topic}, part {s}.{sub}, number {d * 10 + sub}.",
                "",
                f"- a list item on {topic} {s}.{sub}",
                "",
            ]
    return "\n".join(lines)


def _write(folder: Path, topics: list[str], start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for d, topic in enumerate(topics, start):
        (folder / f"doc{d}.md").write_text(_doc(d, topic))
    return folder


Key = tuple[str, int]


def _chunks(rt: Runtime, coll: repository.Collection) -> dict[Key, tuple[Any, ...]]:
    """(source name, ordinal) -> (chunk id, type, text, context, section path)."""
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, c.ordinal, c.id, c.chunk_type, c.text, c.context, c.section_path"
            " FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.collection_id = %s",
            (coll.id,),
        ).fetchall()
    return {(Path(r[0]).name, int(r[1])): tuple(r[2:]) for r in rows}


def _vectors(rt: Runtime, coll: repository.Collection) -> dict[Key, np.ndarray]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT d.source, c.ordinal, e.embedding FROM {} e"
                " JOIN chunks c ON c.id = e.chunk_id"
                " JOIN documents d ON d.id = c.document_id"
            ).format(sql.Identifier(coll.table))
        ).fetchall()
    return {(Path(r[0]).name, int(r[1])): np.asarray(r[2].to_numpy()) for r in rows}


def _hit_texts(rt: Runtime, query: str) -> set[str]:
    hits = search(rt, query, collection=COLL, k=5, mode="vector")
    assert hits, f"no hit for {query!r}"
    return {h.text for h in hits}


@pytest.fixture(scope="module")
def narrow(rt: Runtime) -> str:
    return pin_smaller_budget(rt, NARROW)


def test_migration_to_a_smaller_budget_recuts_and_rolls_back(
    rt: Runtime, tmp_path: Path, narrow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "docs", ["glaciers", "violins"])
    assert not ingest_paths(rt, [folder], COLL).failed
    before = rt.collection(COLL)
    old_chunks = _chunks(rt, before)
    old_texts = {c[2] for c in old_chunks.values()}
    assert _hit_texts(rt, "how glaciers behave") <= old_texts

    # a backfill that is not switched: searches keep the old model and the old chunks,
    # also while it runs (one document per batch, a search after each)
    monkeypatch.setattr(rechunk, "BATCH_DOCUMENTS", 1)
    seen: list[set[str]] = []
    report = migrate(
        rt,
        COLL,
        narrow,
        switch=False,
        progress=lambda done, total: seen.append(_hit_texts(rt, "violins in season")),
    )
    assert report.rechunked == 2 and not report.switched and report.batches == 2
    # the start, after each of the 2 batches, and the count after the pass
    assert len(seen) == 4 and all(s <= old_texts for s in seen)
    assert rt.collection(COLL).model.key == before.model.key
    # a document ingested meanwhile, into the live collection, is cut for the target too
    _write(folder, ["penguins"], start=2)
    assert not ingest_paths(rt, [folder], COLL).failed
    original = _chunks(rt, before)
    original_vectors = _vectors(rt, before)
    assert len(original) > len(old_chunks)

    report = migrate(rt, COLL, narrow)
    assert report.switched and report.rechunked == 1 and report.resumed_from == 2
    after = rt.collection(COLL)
    assert after.model.key.startswith(NARROW) and after.id != before.id
    new_chunks = _chunks(rt, after)
    new_texts = {c[2] for c in new_chunks.values()}
    assert len(new_chunks) > len(original)  # the long sections were cut again
    assert _hit_texts(rt, "penguins of part 1") <= new_texts

    # every chunk fits the target's budget, as the model reads it (context, then text)
    embedder = rt.embedder(after.model)
    read = [f"{c[3]}\n{c[2]}" if c[3] else c[2] for c in new_chunks.values() if c[1] != "heading"]
    assert max(embedder.count_tokens(read)) <= 96
    # and equals a fresh ingest under the target model: chunks and vectors
    with rt.db.connection() as conn:
        repository.create_collection(conn, "rc-fresh", after.model)
    assert not ingest_paths(rt, [folder], "rc-fresh").failed
    fresh = rt.collection("rc-fresh")
    fresh_chunks = _chunks(rt, fresh)
    assert {k: v[1:] for k, v in new_chunks.items()} == {k: v[1:] for k, v in fresh_chunks.items()}
    migrated, expected = _vectors(rt, after), _vectors(rt, fresh)
    assert migrated.keys() == expected.keys()
    worst = max(float(np.abs(migrated[k] - expected[k]).max()) for k in expected)
    assert worst < 1e-5, f"a re-cut vector differs from the fresh ingest's by {worst}"
    status = model_status(rt, COLL)
    assert [(r["status"], r["chunks"]) for r in status] == [("active", "live"), ("retired", "own")]

    # the kept chunk set is listed as no collection (its space is, under the collection's
    # model status); a writer still holding the old row is refused
    with rt.db.connection() as conn:
        assert [c["name"] for c in repository.list_collections(conn)] == ["rc-fresh", COLL]
        kept = [(s["status"], s["table"]) for s in catalog.spaces(conn, after.id)]
    assert kept == [("retired", before.table), ("active", after.table)]
    stale = documents.DocumentWrite(
        documents.DocumentRecord("late.md", None, "text", "h", 1, {}),
        [Chunk(0, ChunkType.PARAGRAPH, "late", (), None, 0, 4, 1, "h")],
        np.ones((1, before.model.dimension), dtype=np.float32),
    )
    with (
        pytest.raises(ConflictError, match="switched to another embedding model"),
        rt.db.connection() as conn,
    ):
        documents.write_documents(conn, before, [stale])

    # rollback: the old model with its own chunks (same rows) and vectors, exactly
    assert rollback(rt, COLL) == (after.model.key, before.model.key)
    back = rt.collection(COLL)
    assert back.id == before.id and back.model == before.model
    assert _chunks(rt, back) == original
    restored = _vectors(rt, back)
    assert restored.keys() == original_vectors.keys()
    assert all(np.array_equal(restored[k], original_vectors[k]) for k in restored)
    assert _hit_texts(rt, "glaciers of part 0") <= old_texts | {c[2] for c in original.values()}

    # forward again (the kept set is in step: nothing to cut), then a document changes:
    # rollback refuses, and a migrate back cuts just that one for the old model
    again = migrate(rt, COLL, narrow)
    assert again.switched and again.rechunked == 0 and rt.collection(COLL).id == after.id
    (folder / "doc0.md").write_text(_doc(0, "glaciers") + "\n\nA new closing remark.\n")
    assert not ingest_paths(rt, [folder], COLL).failed
    with pytest.raises(MigrationStateError, match="1 documents stored, changed or deleted since"):
        rollback(rt, COLL)
    back_again = migrate(rt, COLL, before.model.key)
    assert back_again.switched and back_again.rechunked == 1
    back = rt.collection(COLL)
    assert back.id == before.id
    now = _chunks(rt, back)
    assert {k: v for k, v in now.items() if k[0] != "doc0.md"} == {
        k: v for k, v in original.items() if k[0] != "doc0.md"
    }
    assert any("A new closing remark." in v[2] for k, v in now.items() if k[0] == "doc0.md")
    assert _hit_texts(rt, "a new closing remark") & {v[2] for v in now.values()}

    # prune drops the chunk set kept for the 96-token model, and nothing else
    dropped = prune(rt, COLL)
    assert [s.model.name for s in dropped] == [NARROW]
    with rt.db.connection() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM collections ORDER BY id")]
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = %s", (after.table,)
        ).fetchone()
    assert COLL in names and not any(n.startswith("~") for n in names)
    assert tables == (0,)
    assert _chunks(rt, rt.collection(COLL)) == now
    with pytest.raises(MigrationStateError, match="no previous model"):
        rollback(rt, COLL)


def test_cancel_drops_a_recut_chunk_set_being_built(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "a.md").write_text("# Kettles\n\nKettles boil water.\n")
    assert not ingest_paths(rt, [folder], "rc-cancel").failed
    coll = rt.collection("rc-cancel")
    report = migrate(rt, "rc-cancel", narrow, switch=False)
    assert report.recut and report.rechunked == 1
    with rt.db.connection() as conn:
        (shadow,) = repository.shadows(conn, coll.id)
    done = cancel(rt, "rc-cancel")
    assert [(sp.table, action) for sp, action in done] == [(shadow.table, "dropped")]
    with rt.db.connection() as conn:
        assert repository.shadows(conn, coll.id) == []
        left = conn.execute(
            "SELECT (SELECT count(*) FROM documents WHERE collection_id = %s),"
            " to_regclass(%s) IS NULL",
            (shadow.id, shadow.table),
        ).fetchone()
    assert left == (0, True)
    assert rt.collection("rc-cancel") == coll


def test_migration_to_a_model_with_a_passage_prefix_cuts_the_chunks_for_it(
    rt: Runtime, tmp_path: Path
) -> None:
    """A target of the same limit that puts ``passage: `` before every passage (e5-style;
    the same weights here) reads two tokens fewer of each chunk. The migration compared
    limits alone, so it kept chunks cut to the full 256 and its backfill check counted
    them without the prefix: the switch went through with chunks the model had cut short.
    Now the documents are cut again for the target, and every chunk fits with its prefix
    (the model's own tokenizer on exactly what it is sent, [CLS]/[SEP] included)."""
    base = resolve_spec(DEFAULT_MODEL)
    prefixed = dataclasses.replace(
        base,
        name="minilm-e5-like",
        options={**base.options, "query_prefix": "query: ", "passage_prefix": "passage: "},
    )
    with rt.db.connection() as conn:
        upsert_model(conn, prefixed)
    words = [
        "river",
        "stone",
        "light",
        "water",
        "field",
        "house",
        "night",
        "green",
        "paper",
        "music",
    ]
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "notes.md").write_text(
        "# Notes\n\n" + " ".join(words[i % len(words)] for i in range(1500)) + "\n"
    )
    assert not ingest_paths(rt, [folder], "pf-src").failed
    before = rt.collection("pf-src")
    model = rt.embedder(before.model).model  # type: ignore[attr-defined]

    def read(chunks: dict[Key, tuple[Any, ...]], prefix: str) -> list[int]:
        sent = [prefix + (f"{c[3]}\n{c[2]}" if c[3] else c[2]) for c in chunks.values()]
        got = model.tokenizer(sent, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in got]

    # the source's chunks fill its limit (less the token kept for the context's line
    # break, which BERT does not count): two more tokens would not fit
    assert max(read(_chunks(rt, before), "")) == 255

    report = migrate(rt, "pf-src", "minilm-e5-like")
    assert report.switched and report.recut and report.rechunked == 1
    after = rt.collection("pf-src")
    assert after.model.name == "minilm-e5-like"
    assert max(read(_chunks(rt, after), "passage: ")) <= model.max_seq_length == 256
    # the embedder counts a passage as the model reads it: prefix included
    embedder = rt.embedder(after.model)
    assert embedder.count_tokens(["river stone"]) == [6]
    assert embedder.special_tokens == 4


def test_chunks_cut_before_the_prefix_counted_are_cut_again_at_the_next_ingest(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection of a model pinned with ``passage: `` whose documents were stored by a
    ragstore that cut chunks to the full 256 tokens (the prefix not counted: simulated
    here by counting as that code did) holds chunks the model reads two tokens too long.
    Ingesting the unchanged files again, or sending the same texts again, answered
    "unchanged" and kept them cut short for good; now they are cut again and fit."""
    from ragstore.embedding.base import Embedder
    from ragstore.ingest.texts import add_texts

    base = resolve_spec(DEFAULT_MODEL)
    prefixed = dataclasses.replace(
        base,
        name="minilm-e5-old",
        options={**base.options, "query_prefix": "query: ", "passage_prefix": "passage: "},
    )
    with rt.db.connection() as conn:
        upsert_model(conn, prefixed)
        repository.create_collection(conn, "pf-old", prefixed)
    words = ["river", "stone", "light", "water", "field", "house", "night", "green", "paper"]
    body = " ".join(words[i % len(words)] for i in range(1500))
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "notes.md").write_text("# Notes\n\n" + body + "\n")
    text = " ".join(words[i % len(words)] for i in range(600))

    # as the code before the fix counted: the text alone, no prefix
    monkeypatch.setattr(Embedder, "count_tokens", lambda self, t: self.count_text_tokens(t))
    monkeypatch.setattr(Embedder, "prefix_tokens", property(lambda self: 0))
    assert not ingest_paths(rt, [folder], "pf-old").failed
    assert add_texts(rt, "pf-old", [text], ids=["t1"]).added == 1
    monkeypatch.undo()
    coll = rt.collection("pf-old")
    # and the documents' hashes that code stored (no prefix in them)
    from ragstore.chunking import document_hash
    from ragstore.ingest.texts import _digest

    with rt.db.connection() as conn:
        for source, digest in (
            (str(folder / "notes.md"), document_hash((folder / "notes.md").read_bytes())),
            ("t1", _digest(text, {})),
        ):
            done = conn.execute(
                "UPDATE documents SET content_hash = %s WHERE collection_id = %s AND source = %s",
                (digest, coll.id, source),
            )
            assert done.rowcount == 1
    model = rt.embedder(coll.model).model  # type: ignore[attr-defined]

    def longest() -> int:
        sent = [
            "passage: " + (f"{c[3]}\n{c[2]}" if c[3] else c[2]) for c in _chunks(rt, coll).values()
        ]
        got = model.tokenizer(sent, add_special_tokens=True, truncation=False)["input_ids"]
        return max(len(ids) for ids in got)

    assert longest() > model.max_seq_length == 256  # the old chunks: cut short by the model
    again = ingest_paths(rt, [folder], "pf-old")
    assert again.count("unchanged") == 0 and not again.failed
    assert add_texts(rt, "pf-old", [text], ids=["t1"]).updated == 1
    assert longest() <= 256
    # and from then on, unchanged is unchanged
    assert ingest_paths(rt, [folder], "pf-old").count("unchanged") == 1
    assert add_texts(rt, "pf-old", [text], ids=["t1"]).unchanged == 1


def test_rollback_after_a_deletion_says_how_many_documents_differ(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    """A document deleted since a re-cutting migration's switch is still in the chunk set
    kept for the old model: the rollback is refused (it would bring the document back),
    and its error counted only documents stored since, so it said "0 documents"."""
    folder = _write(tmp_path / "del", ["owls", "moths"])
    assert not ingest_paths(rt, [folder], "rc-del").failed
    assert migrate(rt, "rc-del", narrow).switched
    coll = rt.collection("rc-del")
    with rt.db.connection() as conn:
        assert documents.delete_documents(conn, coll.id, [str(folder / "doc1.md")]) == 1
    with pytest.raises(MigrationStateError, match=r"^1 documents stored, changed or deleted"):
        rollback(rt, "rc-del")
    back = migrate(rt, "rc-del", resolve_spec(DEFAULT_MODEL).key)
    assert back.switched and back.rechunked == 0
    assert {k[0] for k in _chunks(rt, rt.collection("rc-del"))} == {"doc0.md"}


def test_a_delete_that_read_the_collection_before_a_recut_switch_is_refused(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    """A delete that looked the collection up just before a re-cutting migration swapped
    its chunk sets deleted the document from the old set (now kept for a rollback) and was
    acknowledged, while the live collection kept it: searches still found the "deleted"
    document. Deletes hold the collection row as writes do, and refuse a row that became a
    shadow meanwhile, changing nothing."""
    from ragstore.store import Store

    folder = _write(tmp_path / "dsw", ["herons", "lichens"])
    assert not ingest_paths(rt, [folder], "rc-dsw").failed
    read_before = rt.collection("rc-dsw")  # a request's lookup, just before the switch
    assert migrate(rt, "rc-dsw", narrow).switched
    doomed = str(folder / "doc1.md")
    with rt.db.connection() as conn:
        old_id = conn.execute(
            "SELECT id FROM documents WHERE collection_id = %s AND source = %s",
            (read_before.id, doomed),
        ).fetchone()[0]
    with rt.db.connection() as conn, pytest.raises(ConflictError, match="switched"):
        catalog.delete_document(conn, read_before, int(old_id))
    with rt.db.connection() as conn, pytest.raises(ConflictError, match="switched"):
        documents.hold_live(conn, read_before)  # what Store.delete_texts and sync hold
    # nothing changed: the kept set still rolls back whole, the live one holds both
    assert {k[0] for k in _chunks(rt, rt.collection("rc-dsw"))} == {"doc0.md", "doc1.md"}
    assert {k[0] for k in _chunks(rt, read_before)} == {"doc0.md", "doc1.md"}
    # the delete done again, on the collection as it is now, deletes it from the live set
    assert Store.from_runtime(rt).delete_texts("rc-dsw", [doomed]) == 1
    assert {k[0] for k in _chunks(rt, rt.collection("rc-dsw"))} == {"doc0.md"}


def test_deleting_a_collection_read_before_a_recut_switch_is_refused(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    """A collection delete that looked the collection up just before a re-cutting
    migration's switch deleted only the chunk set kept for a rollback and answered
    "deleted", while the collection, with its documents, went on being listed and
    searched. It is refused now, nothing deleted, and done again it deletes everything."""
    from ragstore.store import Store

    folder = _write(tmp_path / "csw", ["ferns", "geckos"])
    assert not ingest_paths(rt, [folder], "rc-csw").failed
    read_before = rt.collection("rc-csw")
    assert migrate(rt, "rc-csw", narrow).switched
    with rt.db.connection() as conn, pytest.raises(ConflictError, match="switched"):
        catalog.delete_collection(conn, read_before)
    assert {k[0] for k in _chunks(rt, read_before)} == {"doc0.md", "doc1.md"}, "kept set kept"
    assert {k[0] for k in _chunks(rt, rt.collection("rc-csw"))} == {"doc0.md", "doc1.md"}
    Store.from_runtime(rt).delete_collection("rc-csw")
    with rt.db.connection() as conn:
        left = conn.execute(
            "SELECT count(*) FROM collections WHERE id = %s OR shadow_of = %s",
            (read_before.id, read_before.id),
        ).fetchone()
    assert left is not None and left[0] == 0


def test_a_document_id_from_before_a_recut_migration_names_the_id_it_has_now(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    """A re-cutting migration stores the documents again in their new chunk set, under new
    ids: a client holding the id an ingest answered was told "document N is not in
    collection", although it was. The answer (get, delete, chunks) names the document and
    its id now; nothing is deleted by the old id, and after a rollback the first ids
    answer again."""
    from ragstore.db import inspection
    from ragstore.errors import DocumentNotFoundError

    folder = _write(tmp_path / "ids", ["otters", "mosses"])
    assert not ingest_paths(rt, [folder], "rc-ids").failed
    source = str(folder / "doc1.md")
    before = rt.collection("rc-ids")
    with rt.db.connection() as conn:
        old_id = int(catalog.document_by_source(conn, before, source)["id"])
    assert migrate(rt, "rc-ids", narrow).switched
    now = rt.collection("rc-ids")
    with rt.db.connection() as conn:
        new_id = int(catalog.document_by_source(conn, now, source)["id"])
    assert new_id != old_id
    said = (
        f"document {old_id!r} is no longer in collection 'rc-ids' under that id: a model "
        "migration cut its documents again (`ragstore models migrate`), which gives them new "
        f"ids; {source!r} is now document {new_id}"
    )
    for ask in (
        lambda conn: catalog.document(conn, now, old_id),
        lambda conn: catalog.delete_document(conn, now, old_id),
        lambda conn: inspection.document_chunks(conn, now, old_id, after=None, limit=5),
    ):
        with rt.db.connection() as conn, pytest.raises(DocumentNotFoundError) as err:
            ask(conn)
        assert str(err.value) == said
    with rt.db.connection() as conn, pytest.raises(DocumentNotFoundError) as err:
        catalog.document(conn, now, 10**12)
    assert "is not in collection 'rc-ids'; list its documents" in str(err.value)
    assert {k[0] for k in _chunks(rt, now)} == {"doc0.md", "doc1.md"}, "nothing deleted"
    rollback(rt, "rc-ids")
    with rt.db.connection() as conn:
        assert catalog.document(conn, rt.collection("rc-ids"), old_id)["source"] == source


def test_a_recut_keeps_each_documents_origin(rt: Runtime, tmp_path: Path, narrow: str) -> None:
    """The re-cut chunk set's documents are written anew: each keeps its origin, or an
    upload would become a file after the switch, pruned by the next folder sync."""
    from ragstore.ingest.documents import NewDocument, add_documents
    from ragstore.ingest.texts import add_texts

    folder = _write(tmp_path / "docs", ["glaciers"])
    assert not ingest_paths(rt, [folder], "rc-origin").failed
    staged = tmp_path / "staged.md"
    staged.write_text("# Upload\n\nUploaded otters.\n")
    assert add_documents(rt, "rc-origin", [NewDocument("up.md", staged)])[0].status == "added"
    assert add_texts(rt, "rc-origin", ["Otters hold hands."], ids=["t1"]).added == 1

    def origins() -> list[tuple[str, str]]:
        coll = rt.collection("rc-origin")
        with rt.db.connection() as conn:
            rows = conn.execute(
                "SELECT source, origin FROM documents WHERE collection_id = %s", (coll.id,)
            ).fetchall()
        return sorted((Path(s).name, o) for s, o in rows)

    before = origins()
    assert before == [("doc0.md", "file"), ("t1", "text"), ("up.md", "upload")]
    assert migrate(rt, "rc-origin", narrow).switched
    assert origins() == before


def test_jobs_queued_across_a_recut_switch_meet_the_deletes_as_acknowledged(
    rt: Runtime, tmp_path: Path, narrow: str
) -> None:
    """A job queued before a re-cutting switch writes into the other chunk set after it.
    Its tombstones were the shadow's own, stamped at the catch-up: a document deleted
    before the backfill copied it had none there (the job accepted before that delete
    stored it again), and one deleted after had the catch-up's time (the job accepted
    between the delete and the catch-up was told ``superseded``). The live row's
    tombstones, stamped when each delete was acknowledged, now move over at the switch."""
    from ragstore.db import jobs as store
    from ragstore.ingest.documents import NewDocument, add_documents
    from ragstore.jobs.queue import build_queue
    from ragstore.jobs.runner import run_job
    from ragstore.jobs.service import submit_ingest
    from ragstore.store import Store

    def put(name: str) -> str:
        (tmp_path / name).write_text(f"# {name}\n\nStored directly, about {name}.\n")
        out = add_documents(rt, "rc-tomb", [NewDocument(name, tmp_path / name)])
        assert out[0].status == "added" and out[0].document is not None
        return str(out[0].document["source"])

    def queue_job(name: str) -> int:
        queue = build_queue(rt.db.conninfo, sync=True)
        with queue.open():
            files = [store.JobFile(name, f"# {name}\n\nFrom a queued job.\n".encode())]
            return submit_ingest(rt, queue, "rc-tomb", files).id

    def delete(source: str) -> None:
        with rt.db.connection() as conn:
            assert documents.delete_documents(conn, rt.collection("rc-tomb").id, [source]) == 1

    Store.from_runtime(rt).create_collection("rc-tomb")
    early, late = put("early.md"), put("late.md")
    before_delete = queue_job("early.md")
    delete(early)  # before the backfill: never in the shadow
    assert not migrate(rt, "rc-tomb", narrow, switch=False).switched
    delete(late)  # after the backfill: deleted from the shadow by the catch-up
    after_delete = queue_job("late.md")
    assert migrate(rt, "rc-tomb", narrow).switched
    assert run_job(rt, before_delete).summary.get("superseded") == 1
    assert run_job(rt, after_delete).summary.get("added") == 1
    assert {k[0] for k in _chunks(rt, rt.collection("rc-tomb"))} == {"late.md"}
