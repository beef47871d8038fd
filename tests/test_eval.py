"""The quality harness: metrics equal ranx's on the same runs, the corpus is ingested once
and cached, and `ragstore eval` reports every mode."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.errors import InputError, PathNotFoundError
from ragstore.runtime import Runtime
from ragstore.search.eval import (
    CHUNKS_PER_QUERY,
    Qrels,
    Run,
    evaluate,
    ingest_records,
    load_beir,
    run_queries,
    score_run,
)
from ragstore.search.service import SearchParams
from tests.conftest import run_cli
from tests.test_search_hybrid import CORPUS, QUERIES

METRICS = ("ndcg@10", "recall@100", "mrr@10")  # what eval reports, named here on purpose

RANX = """
import json, sys, warnings
from ranx import Qrels, Run, evaluate
warnings.simplefilter("ignore")
for line in sys.stdin:
    out = [
        {k: float(v) for k, v in evaluate(Qrels(q), Run(r), json.loads(sys.argv[1])).items()}
        for r, q in json.loads(line)
    ]
    print(json.dumps(out), flush=True)
"""


class Ranx:
    """ranx in one child process for the module, run with numba's JIT off: the same ranx
    code, interpreted. Compiling it took most of a minute on a cold numba cache (20 s more
    where a later call needed other specialisations), for runs that take it milliseconds
    to score; importing ranx (scipy, pandas, matplotlib) still takes seconds, so it is
    imported once, while the first test ingests its corpus, not once per comparison."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RANX, json.dumps(list(METRICS))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
        )

    def scores(self, *pairs: tuple[Run, Qrels]) -> list[dict[str, float]]:
        """ranx's metrics of each (run, qrels)."""
        scored = [
            (
                {
                    q: {d: float(len(docs) - i) for i, d in enumerate(docs)} or {"__none__": 0.0}
                    for q, docs in run.items()
                },
                qrels,
            )
            for run, qrels in pairs
        ]
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(scored) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the child ended: its error says why
            self.proc.wait(timeout=120)
            assert self.proc.stderr is not None
            raise AssertionError(f"ranx exited {self.proc.returncode}: {self.proc.stderr.read()}")
        out: list[dict[str, float]] = json.loads(line)
        assert len(out) == len(pairs)
        return out

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def ranx() -> Iterator[Ranx]:
    child = Ranx()
    try:
        yield child
    finally:
        child.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for doc_id, text in CORPUS.items():
            title, _, body = text.partition(":")
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": body}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for qid, (text, _) in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
        fh.write(json.dumps({"_id": "unjudged", "text": "not in the qrels"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    for qid, (_, doc) in QUERIES.items():
        lines.append(f"{qid}\t{doc}\t2")
    lines += ["q1\te4712\t1", "q3\te4711\t1", "q4\tsleep\t0"]  # graded, and a judged 0
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_load_beir_keeps_judged_queries_only(dataset: Path) -> None:
    ds = load_beir(dataset)
    assert ds.name == "tiny" and len(ds.corpus) == len(CORPUS)
    assert set(ds.queries) == set(QUERIES) == set(ds.qrels)
    assert ds.qrels["q1"] == {"e4711": 2, "e4712": 1}


def test_metrics_match_ranx_on_the_runs_of_every_mode(
    rt: Runtime, dataset: Path, ranx: Ranx
) -> None:
    ds = load_beir(dataset)
    ingest_records(rt, "eval-tiny", [(i, t, x) for i, (t, x) in ds.corpus.items()])
    results = evaluate(rt, ds, "eval-tiny")
    assert [r.mode for r in results] == ["vector", "fulltext", "hybrid"]
    expected = ranx.scores(*((run, ds.qrels) for r in results for run in (r.run, r.deep)))
    for i, r in enumerate(results):
        top, deep = expected[2 * i], expected[2 * i + 1]
        assert set(r.run) == set(ds.qrels) == set(r.deep)
        theirs = {"ndcg@10": top["ndcg@10"], "mrr@10": top["mrr@10"]}
        theirs["recall@100"] = deep["recall@100"]
        assert r.metrics == pytest.approx(theirs, abs=1e-9), r.mode
    by_mode = {r.mode: r.metrics["ndcg@10"] for r in results}
    assert by_mode["hybrid"] >= max(by_mode["vector"], by_mode["fulltext"])


def test_the_at_10_figures_come_from_the_k10_search_a_user_runs(rt: Runtime, dataset: Path) -> None:
    """nDCG@10 and MRR@10 were read off k=200 searches, whose HNSW ef_search, hybrid
    list depths and section pools are not those of the k=10 search a user runs; they come
    from k=10 searches now, Recall@100 from the k=200 ones."""
    ds = load_beir(dataset)
    ingest_records(rt, "eval-tiny", [(i, t, x) for i, (t, x) in ds.corpus.items()])
    assert len(CORPUS) > 10
    for r in evaluate(rt, ds, "eval-tiny"):
        mode = r.mode
        top = SearchParams(k=10, mode=mode, plain=True)  # type: ignore[arg-type]
        deep = SearchParams(k=CHUNKS_PER_QUERY, mode=mode, plain=True)  # type: ignore[arg-type]
        assert r.run == run_queries(rt, "eval-tiny", ds.queries, top), mode
        assert r.deep == run_queries(rt, "eval-tiny", ds.queries, deep), mode
        assert all(len(docs) <= 10 for docs in r.run.values()), mode
        if mode == "vector":  # every document is a neighbour: deeper than 10
            assert any(len(docs) > 10 for docs in r.deep.values())
        assert r.metrics == score_run(r.run, ds.qrels, r.deep)
        assert r.deep_ndcg == score_run(r.deep, ds.qrels)["ndcg@10"]  # BEIR's reading, beside


def test_metrics_match_ranx_on_random_graded_runs(ranx: Ranx) -> None:
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(300)]
    qrels: Qrels = {
        f"q{i}": {d: rng.choice([0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 40))}
        for i in range(60)
    }
    for q in qrels:  # every query needs something relevant for ranx and trec_eval to agree
        qrels[q][rng.choice(docs)] = 1
    run: Run = {q: rng.sample(docs, rng.randint(1, 150)) for q in qrels}
    edge_run, edge_qrels = cutoff_edges(docs)
    expected = ranx.scores((run, qrels), (edge_run, edge_qrels))
    assert score_run(run, qrels) == pytest.approx(expected[0], abs=1e-9)
    # random runs seldom put a relevant document at exactly rank 10 or 100: a cutoff off
    # by one (recall@99, MRR@9 or @11 for the reported @100 and @10) passed them
    assert score_run(edge_run, edge_qrels) == pytest.approx(expected[1], abs=1e-9)


def cutoff_edges(docs: list[str]) -> tuple[Run, Qrels]:
    """Queries on each reported metric's cutoff k: the only relevant document at rank k
    (counted at k, missed at k-1), or at rank k+1 (missed at k, counted at k+1), and k+1
    graded relevant documents at ranks 2..k+2 (nDCG's ideal ordering is cut at k too).
    Every metric is off at k-1 or k+1 on one of them."""
    run: Run = {}
    qrels: Qrels = {}
    for metric in METRICS:
        k = int(metric.partition("@")[2])
        ranked = docs[: k + 3]
        for rank in (k, k + 1):
            qid = f"{metric}-only-at-{rank}"
            run[qid] = ranked
            qrels[qid] = {ranked[rank - 1]: 2, ranked[0]: 0}  # a judged 0 on top
        qid = f"{metric}-{k + 1}-relevant"
        run[qid] = ranked
        qrels[qid] = {d: 1 + i % 3 for i, d in enumerate(ranked[1 : k + 2])}
    return run, qrels


def test_ingest_records_skips_unchanged_and_replaces_changed(rt: Runtime) -> None:
    records = [("a", "Alpha", "first text"), ("b", "Beta", "second text")]
    assert ingest_records(rt, "eval-cache", records) == 2
    assert ingest_records(rt, "eval-cache", records) == 0
    assert ingest_records(rt, "eval-cache", [("a", "Alpha", "changed text"), records[1]]) == 1
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, c.text FROM chunks c JOIN documents d"
            " ON d.id = c.document_id JOIN collections k ON k.id = d.collection_id"
            " WHERE k.name = 'eval-cache' ORDER BY 1"
        ).fetchall()
    assert rows == [("a", "Alpha\nchanged text"), ("b", "Beta\nsecond text")]
    # a record the corpus no longer holds was kept, and ranked (as a miss) in every run
    removed: list[list[str]] = []
    assert ingest_records(rt, "eval-cache", [records[1]], removed=removed.append) == 0
    assert removed == [["a"]]
    with rt.db.connection() as conn:
        left = conn.execute(
            "SELECT d.source FROM documents d JOIN collections k ON k.id = d.collection_id"
            " WHERE k.name = 'eval-cache'"
        ).fetchall()
    assert left == [("b",)]


def test_eval_cli_reports_each_mode_and_reuses_the_collection(
    cli_env: dict[str, str], dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("eval", str(dataset), "--json", "-c", "eval-cli") == 0
    first = capsys.readouterr()
    metrics = json.loads(first.out)
    assert set(metrics) == {"vector", "fulltext", "hybrid"}
    for values in metrics.values():
        assert 0 < values["ndcg@10"] <= 1 and 0 < values["recall@100"] <= 1
    assert f"{len(CORPUS)} newly ingested" in first.err
    assert run_cli("eval", str(dataset), "--mode", "fulltext", "-c", "eval-cli") == 0
    second = capsys.readouterr()
    assert "(0 newly ingested)" in second.err
    assert "fulltext" in second.out and "hybrid" not in second.out


def test_bad_datasets_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="no such dataset directory"):
        load_beir(tmp_path / "missing")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\thigh\n")
    with pytest.raises(InputError, match=r"test.tsv:2: score 'high' is not an integer"):
        load_beir(tmp_path)
    with pytest.raises(PathNotFoundError, match=r"train.tsv: no such file"):
        load_beir(tmp_path, "train")


def test_a_dataset_file_that_is_not_utf8_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Latin-1 byte in corpus.jsonl or the qrels ended ``ragstore eval`` with a
    UnicodeDecodeError traceback; now the error names the file and the line."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_bytes(
        b'{"_id": "1", "text": "cheese"}\n{"_id": "2", "text": "caf\xe9"}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    (tmp_path / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\nq\t1\t1\r\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:2: not UTF-8"):
        load_beir(tmp_path)
    assert run_cli("eval", str(tmp_path), "--mode", "fulltext") == 65
    err = capsys.readouterr().err
    assert "corpus.jsonl:2: not UTF-8" in err and "Traceback" not in err
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "cheese"}\n')
    assert load_beir(tmp_path).qrels == {"q": {"1": 1}}  # CRLF lines read as before
    (tmp_path / "qrels" / "test.tsv").write_bytes(b"q\t1\t1\nq\t\xff\t1\n")
    with pytest.raises(InputError, match=r"test.tsv:2: not UTF-8"):
        load_beir(tmp_path)


def test_eval_with_no_judged_query_stops_before_the_ingest(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Qrels that judge no query of queries.jsonl (an empty file, another split's ids)
    ingested the whole corpus first and only then ended in "no judged queries"."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "cheese"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "cheese"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nother\t1\t1\n")
    assert run_cli("eval", str(tmp_path), "-c", "eval-nojudged", "--json") == 65
    captured = capsys.readouterr()
    assert "nothing to evaluate" in captured.err and captured.out == ""
    assert "ingested" not in captured.err and "collection 'eval-nojudged'" not in captured.err
    assert run_cli("collections", "list", "--json") == 0
    assert "eval-nojudged" not in capsys.readouterr().out


def test_eval_refuses_a_collection_it_did_not_create(
    rt: Runtime, cli_env: dict[str, str], dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore eval -c NOTES`` added the corpus to the user's collection and replaced
    its documents whose source equals a record id; it is refused, the collection as was."""
    from ragstore.store import Store

    store = Store.from_runtime(rt)
    store.add_texts("user-notes", ["my own note, not a benchmark record"], ids=["e4711"])
    before = store.list_documents("user-notes")["data"]
    assert run_cli("eval", str(dataset), "-c", "user-notes", "--mode", "fulltext") == 65
    err = capsys.readouterr().err
    assert "collection 'user-notes' was not created by `ragstore eval`" in err
    after = store.list_documents("user-notes")["data"]
    assert [(d["id"], d["chunks"]) for d in after] == [(d["id"], d["chunks"]) for d in before]


def test_a_judged_query_without_text_is_named_before_the_ingest(tmp_path: Path) -> None:
    """A judged query with empty text ended ``ragstore eval`` after the whole ingest with
    "the query is empty", naming neither the query nor the file."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "cheese"}\n')
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "cheese"}\n{"_id": "q2", "text": "  "}\n{"_id": "q3"}\n'
        '{"_id": "unjudged", "text": ""}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text("q1\t1\t1\nq2\t1\t1\nq3\t1\t1\n")
    with pytest.raises(InputError, match=r"queries.jsonl: judged query 'q2' \(and 1 more\)"):
        load_beir(tmp_path)


def test_repeated_ids_in_a_dataset_are_one_clear_error(tmp_path: Path) -> None:
    """A repeated ``_id`` kept the last line silently (a corpus lost a document, a query
    its text), and a pair judged twice kept the last grade; each is refused, naming the
    line and the first one."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "1", "text": "cheese"}\n{"_id": "2", "text": "bread"}\n{"_id": 1, "text": "x"}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "cheese"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("q\t1\t1\nq\t2\t0\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:3: _id '1' again \(first on line 1\)"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "cheese"}\n')
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q", "text": "cheese"}\n\n{"_id": "q", "text": "bread"}\n'
    )
    with pytest.raises(InputError, match=r"queries.jsonl:3: _id 'q' again \(first on line 1\)"):
        load_beir(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "cheese"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("q\t1\t1\nq\t1\t1\nq\t1\t2\n")
    with pytest.raises(InputError, match=r"test.tsv:3: query 'q' judges document '1' again"):
        load_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("q\t1\t1\nq\t1\t1\n")  # the same grade
    assert load_beir(tmp_path).qrels == {"q": {"1": 1}}


def test_eval_help_names_the_k200_ndcg_printed_beside_the_k10_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the help said where nDCG@10, MRR@10 and Recall@100 come from, not that a fourth
    # figure, nDCG@10 of the k=200 lists, is printed beside them (README and CHANGELOG say)
    capsys.readouterr()
    assert run_cli("eval", "--help") == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "k=10 searches" in out
    assert 'nDCG@10 of the k=200 lists\' top 10 is printed too (column "nDCG@10 k=200"' in out
    assert '"ndcg@10_k200" in --json' in out
