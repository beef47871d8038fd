"""Vectors made by the built-in all-MiniLM-L6-v2 import into a collection that answers text
queries, with the model's pin (not an 'imported' one) on the collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ragstore.embedding.registry import resolve_spec
from ragstore.runtime import Runtime
from tests.conftest import run_cli
from tests.imports.helpers import vectors, write_jsonl

TEXTS = [
    "Cats sleep for most of the day.",
    "The stock market fell sharply on Monday.",
    "Photosynthesis turns light into chemical energy in plants.",
    "A guide to rolling back a database schema migration.",
    "Recipes for baking sourdough bread at home.",
]


def test_minilm_vectors_are_searchable_by_text(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = resolve_spec("all-MiniLM-L6-v2")
    vecs = rt.embedder(spec).embed(TEXTS)
    ids = [f"legacy-{i}" for i in range(len(TEXTS))]
    src = write_jsonl(tmp_path / "minilm.jsonl", ids, vecs, texts=TEXTS)
    assert (
        run_cli(
            "import", str(src), "-c", "mini", "--model", "all-MiniLM-L6-v2", "--no-backup", "--json"
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["provider"] == "sentence-transformers" and report["dimension"] == 384
    assert report["verification"]["ok"] is True
    assert report["model_check"].startswith("ok, 5 records' texts embedded again by")
    assert (
        run_cli(
            "search", "how do plants make energy from sunlight", "-c", "mini", "-k", "1", "--json"
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["text"] == TEXTS[2] and hits[0]["source"] == "legacy-2"


def _collections(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM collections").fetchall()]


def test_vectors_of_another_model_of_the_same_dimension_are_refused_before_writing(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # declared as MiniLM's, the vectors of another 384-dimension model (here MiniLM's with
    # their dimensions shuffled: another space) were stored as MiniLM's, and every text
    # search after embedded its query with MiniLM and ranked them by noise
    spec = resolve_spec("all-MiniLM-L6-v2")
    other = rt.embedder(spec).embed(TEXTS)[:, np.random.default_rng(1).permutation(384)]
    ids = [f"other-{i}" for i in range(len(TEXTS))]
    src = write_jsonl(tmp_path / "other.jsonl", ids, other, texts=TEXTS)
    url = cli_env["RAGSTORE_DATABASE_URL"]
    args = ["import", str(src), "-c", "other", "--model", "all-MiniLM-L6-v2", "--no-backup"]
    for extra in (["--dry-run"], []):
        capsys.readouterr()
        assert run_cli(*args, *extra) == 78
        err = " ".join(capsys.readouterr().err.split())
        assert "the vectors do not look like all-MiniLM-L6-v2" in err
        assert "5 of 5 records checked disagree" in err and "other-0 (cosine " in err
        assert "Nothing was written" in err and "--trust-vectors" in err and "--model" in err
        assert "other" not in _collections(url)
    # said to be trusted, they are imported, and the report says they were not checked
    assert run_cli(*args, "--trust-vectors", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 5 and report["model_check"] == "not checked: --trust-vectors"


def test_records_without_text_cannot_be_checked_and_the_report_says_so(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "notext.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"n{i}", "vector": v.tolist()}) + "\n"
            for i, v in enumerate(vectors(3, 384, seed=5))
        )
    )
    args = ["import", str(src), "-c", "notext", "--model", "all-MiniLM-L6-v2", "--no-backup"]
    assert run_cli(*args, "--policy", "missing_text=keep", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 3
    assert report["model_check"] == "not checked: no record has a text to embed again"
    # beside records with a text, those without one are counted as not checked
    text = "Cats sleep for most of the day."
    vec = rt.embedder(resolve_spec("all-MiniLM-L6-v2")).embed([text])[0]
    with src.open("a") as fh:
        fh.write(json.dumps({"id": "t1", "text": text, "vector": vec.tolist()}) + "\n")
    args[3] = "notext2"
    assert run_cli(*args, "--policy", "missing_text=keep", "--json") == 0
    check = json.loads(capsys.readouterr().out)["model_check"]
    assert check.startswith("ok, 1 records' texts embedded again by all-MiniLM-L6-v2")
    assert check.endswith("; 3 records without a text cannot be checked")


def test_an_http_model_that_cannot_embed_for_the_check_says_nothing_was_written(
    rt: Runtime,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.models.embedding_server import EmbeddingServer

    local = rt.embedder(resolve_spec("all-MiniLM-L6-v2"))
    server = EmbeddingServer(local, api_key="sk-test-123").start()
    try:
        monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
        add = ["models", "add", server.base_url, "--provider", "openai", "--remote-model"]
        add += ["minilm", "--api-key-env", "RAGSTORE_TEST_EMBED_KEY", "--max-tokens", "256"]
        assert run_cli(*add, "--name", "minilm-served") == 0
        src = write_jsonl(tmp_path / "served.jsonl", ["s0", "s1"], local.embed(TEXTS[:2]), TEXTS)
        args = ["import", str(src), "--model", "minilm-served", "--no-backup", "--json"]
        capsys.readouterr()
        assert run_cli(*args, "-c", "served") == 0  # the served model's own vectors pass
        assert json.loads(capsys.readouterr().out)["model_check"].startswith("ok, 2 records")
        server.failures.extend([400] * 8)  # the endpoint refuses what it is sent
        assert run_cli(*args, "-c", "served-down") != 0
        err = " ".join(capsys.readouterr().err.split())
        assert "to check that the vectors are its; nothing was written" in err
        assert "--trust-vectors" in err
        assert "served-down" not in _collections(cli_env["RAGSTORE_DATABASE_URL"])
    finally:
        server.stop()


def test_the_model_check_samples_the_last_records_of_the_source(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a half-migrated store: its last records hold a new model's vectors. The check took
    # records at n * len / 8 (n = 0..7) and never looked past 7/8 of the source, so these
    # 4 records of 40 were stored as MiniLM's unchecked
    spec = resolve_spec("all-MiniLM-L6-v2")
    texts = [f"{TEXTS[i % len(TEXTS)]} (note {i})" for i in range(40)]
    vecs = rt.embedder(spec).embed(texts)
    vecs[36:] = vecs[36:, np.random.default_rng(2).permutation(384)]  # another space
    ids = [f"half-{i}" for i in range(40)]
    src = write_jsonl(tmp_path / "half.jsonl", ids, vecs, texts=texts)
    args = ["import", str(src), "-c", "half", "--model", "all-MiniLM-L6-v2", "--no-backup"]
    capsys.readouterr()
    assert run_cli(*args, "--dry-run") == 78
    err = " ".join(capsys.readouterr().err.split())
    assert "the vectors do not look like all-MiniLM-L6-v2" in err and "half-39 (cosine " in err
