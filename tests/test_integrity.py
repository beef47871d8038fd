"""``ragstore db check``: a healthy collection passes; each way its rows can disagree is
found, named and repaired from the data itself, and searches answer as before."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from ragstore.db import documents, spaces
from ragstore.db import integrity as db_integrity
from ragstore.embedding.registry import TRUNCATED_MODEL
from ragstore.ingest import ingest_paths
from ragstore.integrity import check
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.behind import run_behind
from tests.conftest import run_cli
from tests.models.corpus import write_corpus

QUERY = "how to care for espresso"


def _ingested(rt: Runtime, tmp_path: Path, name: str) -> None:
    report = ingest_paths(rt, [write_corpus(tmp_path / name, 4, 3)], name)
    assert not report.failed


def _hits(rt: Runtime, name: str, mode: str) -> list[tuple[str, float]]:
    return [(h.text, round(h.score, 5)) for h in search(rt, QUERY, collection=name, k=5, mode=mode)]


def test_a_healthy_collection_passes(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _ingested(rt, tmp_path, "healthy")
    report = check(rt, "healthy")
    assert report.ok and report.findings == []
    (state,) = report.collections
    (space,) = state.spaces
    assert space.status == "active" and space.index
    assert space.missing == 0 and space.stray == 0 and space.vectors > 0
    assert state.bm25["stored"] == state.bm25["counted"] and state.bm25["terms"] > 0
    capsys.readouterr()
    assert run_cli("db", "check", "--collection", "healthy") == 0
    assert "ok: nothing to repair" in capsys.readouterr().out


def test_the_header_says_how_many_chunks_are_headings(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # headings have no vector by design: "N chunks" beside "N - h vectors, 0 chunks without
    # one" read as h vectors missing
    doc = tmp_path / "guide.md"
    doc.write_text(
        "# Espresso guide\n\nHow to care for an espresso machine, week by week.\n\n"
        "## Descaling\n\nDescale the boiler every month with citric acid.\n\n"
        "## Grinding\n\nGrind fresh beans just before pulling each shot.\n\n"
        "### Burrs\n\nClean the burrs with rice tablets when the grind drifts.\n",
        encoding="utf-8",
    )
    assert not ingest_paths(rt, [doc], "headed").failed
    coll = rt.collection("headed")
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE chunk_type = 'heading')"
            " FROM chunks WHERE collection_id = %s",
            (coll.id,),
        ).fetchone()
    assert row is not None
    chunks, headings = row
    assert headings >= 2 and chunks > headings  # the file's headings are chunks of their own

    capsys.readouterr()
    assert run_cli("db", "check", "--collection", "headed") == 0
    out = capsys.readouterr().out
    assert (
        f"collection headed: {chunks} chunks ({headings} headings, which have no vector)\n" in out
    ), out
    assert f": {chunks - headings} vectors, 0 chunks without one, 0 stray" in out, out

    assert run_cli("db", "check", "--collection", "headed", "--json") == 0
    (state,) = json.loads(capsys.readouterr().out)["collections"]
    assert (state["chunks"], state["headings"]) == (chunks, headings)
    (space,) = state["spaces"]
    assert (space["vectors"], space["missing"]) == (chunks - headings, 0)


def test_every_disagreement_is_found_and_repaired(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _ingested(rt, tmp_path, "broken")
    _ingested(rt, tmp_path, "bystander")
    coll = rt.collection("broken")
    before = {mode: _hits(rt, "broken", mode) for mode in ("vector", "fulltext", "hybrid")}
    bystander = _hits(rt, "bystander", "hybrid")
    with rt.db.connection() as conn:
        # three vectors lost, one of another collection's chunk and one of a heading added
        conn.execute(
            f"DELETE FROM {coll.table} WHERE chunk_id IN"
            f" (SELECT chunk_id FROM {coll.table} ORDER BY chunk_id LIMIT 3)"
        )
        other = rt.collection("bystander")
        conn.execute(
            f"INSERT INTO {coll.table} SELECT chunk_id, embedding FROM {other.table} LIMIT 1"
        )
        conn.execute(
            f"INSERT INTO {coll.table} (chunk_id, embedding) SELECT c.id,"
            f" (SELECT embedding FROM {coll.table} LIMIT 1) FROM chunks c"
            " WHERE c.collection_id = %s AND c.chunk_type = 'heading' LIMIT 1",
            (coll.id,),
        )
        conn.execute(f"DROP INDEX {coll.table}_hnsw")
        conn.execute(
            "UPDATE bm25_collection_stats SET tokens = tokens + 7 WHERE collection_id = %s",
            (coll.id,),
        )
        conn.execute(
            "UPDATE bm25_terms SET df = df + 1 WHERE collection_id = %s"
            " AND lexeme IN ('espresso', 'care')",
            (coll.id,),
        )
        spaces.create_load_table(conn, coll.table)  # as a load killed at its end leaves it

    capsys.readouterr()
    assert run_cli("db", "check", "--collection", "broken", "--json") == 1
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] is False
    problems = {f["problem"] for f in found["findings"]}
    assert any(p.startswith("3 chunks have no vector") for p in problems), problems
    assert any(p.startswith("2 vectors whose chunk") for p in problems), problems
    assert any(p.startswith("no HNSW index") for p in problems), problems
    assert any("2 of" in p and "full-text statistics differ" in p for p in problems), problems
    assert found["leftovers"] == [spaces.load_table(coll.table)]
    assert all(not f["repaired"] for f in found["findings"])

    assert run_cli("db", "check", "--collection", "broken", "--repair") == 0
    out = capsys.readouterr().out
    assert out.count("repaired: ") == 5, out
    again = check(rt, "broken")
    assert again.ok and again.findings == [] and again.leftovers == []
    # the restored vectors are the model's for the stored text: searches answer as before
    assert {mode: _hits(rt, "broken", mode) for mode in before} == before
    assert _hits(rt, "bystander", "hybrid") == bystander
    assert check(rt, "bystander").findings == []


def test_an_unknown_collection_is_named(
    rt: Runtime, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("db", "check", "--collection", "nope") == 66
    assert "nope" in capsys.readouterr().err


def test_a_staged_table_of_a_load_in_flight_is_not_a_leftover(rt: Runtime, tmp_path: Path) -> None:
    """Between a bulk load's two commits its staged table is committed while the load
    holds the space's table (the swap's ACCESS EXCLUSIVE lock, taken right after the
    staging commit): neither reported nor dropped then."""
    _ingested(rt, tmp_path, "loading")
    coll = rt.collection("loading")
    with rt.db.connection() as conn:
        spaces.create_load_table(conn, coll.table)
    with rt.db.connection() as load:
        load.execute(f"LOCK TABLE {coll.table} IN ACCESS EXCLUSIVE MODE")  # as the swap
        report = check(rt, "loading")
        assert report.leftovers == [] and report.findings == []
        assert report.busy == ["loading"] and report.ok
        report = check(rt, "loading", repair=True)
        assert report.leftovers == [] and report.busy == ["loading"]
        (skipped,) = report.findings  # asked to repair, it was not looked at: retry
        assert skipped.busy and not report.ok and report.retry
    with rt.db.connection() as conn:
        assert conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (spaces.load_table(coll.table),)
        ).fetchone() == (True,)
    assert check(rt, "loading", repair=True).leftovers == [spaces.load_table(coll.table)]
    assert check(rt, "loading").leftovers == []


def test_a_repair_skips_a_staged_table_whose_load_took_its_lock_since_it_was_listed(
    rt: Runtime, tmp_path: Path
) -> None:
    """The repair drops each leftover under its lock, taken without waiting: a load that
    started after the listing (it locks the staged table before it creates its own) keeps
    it, and the check says to run again."""
    _ingested(rt, tmp_path, "taken")
    coll = rt.collection("taken")
    with rt.db.connection() as conn:
        spaces.create_load_table(conn, coll.table)
    with rt.db.connection() as conn:
        (listed,) = [t for t in db_integrity.leftover_tables(conn) if t.space_table == coll.table]
    assert not listed.in_use
    with rt.db.connection() as load:
        spaces.lock_staged(load, coll.table)  # as a load starting now
        load.commit()
        try:
            with rt.db.connection() as conn:
                assert db_integrity.drop_leftovers(conn, [listed]) == []
                assert _leftovers(conn, coll.table) == [True]  # in use now
        finally:
            spaces.unlock_staged(load, coll.table)
            load.commit()
    with rt.db.connection() as conn:
        assert db_integrity.drop_leftovers(conn, [listed]) == [listed.table]
        assert _leftovers(conn, coll.table) == []


def _leftovers(conn: Any, table: str) -> list[bool]:
    """Whether each leftover of the space ``table`` is in use."""
    return [t.in_use for t in db_integrity.leftover_tables(conn) if t.space_table == table]


def test_a_collection_a_load_holds_is_listed_and_with_repair_is_a_retry(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A collection whose check itself met a bulk load's locks is skipped. With --repair
    the run answered ok, exit 0, for a collection it never read: it is now a finding not
    repaired, busy, exit 69 (retry). A plain check during a load still exits 0 (a load is
    normal), listing the collection as not checked in its text and its JSON."""
    _ingested(rt, tmp_path, "held")
    coll = rt.collection("held")
    capsys.readouterr()
    with rt.db.connection() as load:
        load.execute(f"LOCK TABLE {coll.table} IN ACCESS EXCLUSIVE MODE")  # as a load's swap
        assert run_cli("db", "check", "--collection", "held", "--repair", "--json") == 69
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["retry"] is True and out["busy"] == ["held"]
        (skipped,) = out["findings"]
        assert skipped["where"] == "collection 'held'" and not skipped["repaired"]
        assert skipped["problem"].startswith("not checked: a bulk load holds its tables")
        assert "--repair again once the load has ended" in skipped["fix"]
        assert skipped["busy"].startswith("reading collection 'held' waited for a bulk load")

        assert run_cli("db", "check", "--collection", "held", "--repair") == 69
        text = capsys.readouterr().out
        assert "not repaired: collection 'held': not checked: a bulk load" in text, text
        assert "ok:" not in text, text

        assert run_cli("db", "check", "--collection", "held") == 0
        text = capsys.readouterr().out
        assert "busy: collection held: a bulk load holds its tables, so it was not checked" in (
            text
        ), text
        assert "ok: nothing to repair in the collections checked; 1 not checked" in text, text
        assert run_cli("db", "check", "--collection", "held", "--json") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["busy"] == ["held"] and out["findings"] == [] and out["collections"] == []
    assert run_cli("db", "check", "--collection", "held", "--repair") == 0  # load ended
    assert "ok: nothing to repair\n" in capsys.readouterr().out


def test_a_recount_behind_a_stuck_bulk_load_fails_by_the_deadline(
    rt: Runtime, tmp_path: Path
) -> None:
    """The repair's BM25 recount takes the collection's write locks (``begin_bulk``);
    behind a stuck write of the collection that holds them it waited for good, saying
    nothing. It now gives up after ``RAGSTORE_BULK_LOAD_WAIT_S``, reported busy (retry),
    the statistics as they were, and repairs once that write ends."""
    _ingested(rt, tmp_path, "recount")
    coll = rt.collection("recount")
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE bm25_collection_stats SET tokens = tokens + 7 WHERE collection_id = %s",
            (coll.id,),
        )
    update = {"bulk_load_wait_s": 0.5}
    with Runtime(rt.settings.model_copy(update=update)) as short:
        with rt.db.connection() as stuck:  # a bulk load of the collection, hung
            documents.begin_bulk(stuck, coll.id)
            stuck_for_good, done, failed = run_behind(
                lambda: check(short, "recount", repair=True), stuck.rollback
            )
        assert not stuck_for_good, "the repair waited past its deadline"
        assert not failed, failed
        (report,) = done
        assert not report.ok and report.retry
        (found,) = report.findings
        assert not found.repaired and found.busy is not None
        assert found.busy.startswith(
            "the BM25 recount of collection 'recount' waited 0.5s for its write locks: "
            "another write of that collection holds them; nothing was changed"
        ), found.busy
        assert check(short, "recount").findings[0].problem.startswith("full-text statistics")
        assert check(short, "recount", repair=True).ok  # once the stuck load ended
        assert check(short, "recount").findings == []


def test_a_repair_behind_a_stuck_load_is_busy_and_the_others_go_on(
    rt: Runtime,
    tmp_path: Path,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bulk load into a space with rows holds the space's table (SHARE ROW EXCLUSIVE)
    and the collection's write locks; the check reads past it, but deleting stray vectors
    and building a missing index waited for good behind one that was stuck, and a repair
    that gave up ended the run over every collection. Each now gives up after
    ``RAGSTORE_BULK_LOAD_WAIT_S`` with nothing changed, the other collections are
    repaired, and the run exits 69 (busy: retry) saying which were not and why."""
    for name in ("strayed", "unindexed", "drifted"):
        _ingested(rt, tmp_path, name)
    strayed, unindexed, drifted = (rt.collection(n) for n in ("strayed", "unindexed", "drifted"))
    with rt.db.connection() as conn:
        conn.execute(
            f"INSERT INTO {strayed.table} SELECT chunk_id, embedding FROM {drifted.table} LIMIT 1"
        )
        conn.execute(f"DROP INDEX {unindexed.table}_hnsw")
        conn.execute(
            "UPDATE bm25_collection_stats SET tokens = tokens + 7 WHERE collection_id = %s",
            (drifted.id,),
        )
    monkeypatch.setenv("RAGSTORE_BULK_LOAD_WAIT_S", "0.5")
    codes: list[int] = []
    capsys.readouterr()
    with rt.db.connection() as stuck:  # a bulk load into each of the two, hung
        for coll in (strayed, unindexed):
            spaces.lock_for_load(stuck, coll.table)
            documents.begin_bulk(stuck, coll.id)
        late = threading.Thread(
            target=lambda: codes.append(run_cli("db", "check", "--repair", "--json"))
        )
        late.start()
        late.join(60)
        stuck_for_good = late.is_alive()
        stuck.rollback()
    late.join(60)
    assert not stuck_for_good, "a repair waited past its deadline"
    assert codes == [69], capsys.readouterr()
    out = json.loads(capsys.readouterr().out)
    assert out["retry"] is True and out["ok"] is False
    mine = {
        name: [f for f in out["findings"] if f["where"].startswith(f"collection {name!r}")]
        for name in ("strayed", "unindexed", "drifted")
    }
    ((stray,), (index,), (recount,)) = mine.values()
    assert stray["problem"].startswith("1 vectors whose chunk") and not stray["repaired"]
    assert stray["busy"].startswith(
        "deleting stray vectors of collection 'strayed' waited 0.5s for its write locks"
    ), stray
    assert index["problem"].startswith("no HNSW index") and not index["repaired"]
    assert index["busy"].startswith(
        "building the HNSW index of collection 'unindexed' waited 0.5s for its write locks"
    ), index
    assert recount["repaired"] and recount["busy"] is None  # after the busy ones
    # nothing of the busy repairs was done; once the loads ended they are
    assert [f.problem[:14] for f in check(rt, "strayed").findings] == ["1 vectors whos"]
    assert [f.problem[:14] for f in check(rt, "unindexed").findings] == ["no HNSW index:"]
    assert check(rt, "drifted").findings == []
    for name in ("strayed", "unindexed"):
        assert check(rt, name, repair=True).ok
        assert check(rt, name).findings == []


def test_a_repair_the_model_cannot_do_is_not_possible_and_the_others_go_on(
    rt: Runtime, tmp_path: Path, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing vectors of a collection whose pinned model's weights are not the ones here
    (a restore with --ignore-models, weights replaced by hand): embedding them raised
    model_mismatch, which ended ``db check --repair`` at that collection, the collections
    after it neither checked nor repaired. That repair is reported not possible now, with
    why and what to do; the collection's other repairs and the other collections are
    done, and the run exits 1."""
    wrong = "sha256:" + "0" * 64
    assert run_cli("collections", "create", "unloadable", "--model", TRUNCATED_MODEL) == 0
    _ingested(rt, tmp_path, "unloadable")
    _ingested(rt, tmp_path, "loadable")  # checked after it (by id)
    unloadable, loadable = rt.collection("unloadable"), rt.collection("loadable")
    assert unloadable.model.name == TRUNCATED_MODEL != loadable.model.name
    with rt.db.connection() as conn:
        kept = conn.execute(
            "SELECT checksum FROM embedding_models WHERE name = %s", (TRUNCATED_MODEL,)
        ).fetchone()
        for coll in (unloadable, loadable):
            conn.execute(
                f"DELETE FROM {coll.table} WHERE chunk_id IN"
                f" (SELECT chunk_id FROM {coll.table} ORDER BY chunk_id LIMIT 2)"
            )
        conn.execute(f"DROP INDEX {unloadable.table}_hnsw")
        conn.execute(
            "UPDATE embedding_models SET checksum = %s WHERE name = %s", (wrong, TRUNCATED_MODEL)
        )
    assert kept is not None
    try:
        capsys.readouterr()
        assert run_cli("db", "check", "--repair", "--json") == 1
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["retry"] is False
        mine = {
            name: [f for f in out["findings"] if f["where"].startswith(f"collection {name!r}")]
            for name in ("unloadable", "loadable")
        }
        by_problem = {f["problem"][:18]: f for f in mine["unloadable"]}
        missing = by_problem["2 chunks have no v"]
        assert not missing["repaired"] and missing["busy"] is None, missing
        assert missing["impossible"].startswith(
            f"model {TRUNCATED_MODEL}@{unloadable.model.revision}: weights checksum differs "
            f"from the pin: pinned {wrong}"
        ), missing
        assert "restore those weights, or pin the new ones" in missing["impossible"]
        assert (
            "run ragstore db check --repair again once the model loads" in (missing["impossible"])
        )
        assert by_problem["no HNSW index: vec"]["repaired"]  # needs no model: done
        assert not by_problem["searches and inges"]["repaired"]  # the weights, as before
        ((fixed,),) = [mine["loadable"]]
        assert fixed["problem"].startswith("2 chunks have no vector") and fixed["repaired"]
        assert check(rt, "loadable").findings == []

        # the text output says it alike: not repaired, and why
        assert run_cli("db", "check", "--repair", "-c", "unloadable") == 1
        text = capsys.readouterr().out
        assert "not repaired: collection 'unloadable', " in text, text
        assert "2 chunks have no vector" in text, text
        assert "  not possible here: model all-MiniLM-L6-v2-256d@" in text, text
    finally:
        with rt.db.connection() as conn:
            conn.execute(
                "UPDATE embedding_models SET checksum = %s WHERE name = %s",
                (kept[0], TRUNCATED_MODEL),
            )
    # once the weights are the pinned ones again, the repair is done
    assert check(rt, "unloadable", repair=True).ok
    assert check(rt, "unloadable").findings == []
