"""Vectors made by the built-in all-MiniLM-L6-v2 import into a collection that answers text
queries, with the model's pin (not an 'imported' one) on the collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragstore.embedding.registry import resolve_spec
from ragstore.runtime import Runtime
from tests.conftest import run_cli
from tests.imports.helpers import write_jsonl

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
    assert (
        run_cli(
            "search", "how do plants make energy from sunlight", "-c", "mini", "-k", "1", "--json"
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["text"] == TEXTS[2] and hits[0]["source"] == "legacy-2"
