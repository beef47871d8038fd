"""One collection that cannot embed queries (imported vectors, a model without a provider)
is reported on that collection; the server stays ready for the others."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ragstore import Client
from tests.conftest import run_cli
from tests.imports.helpers import vectors, write_jsonl


def test_vector_only_collection_does_not_make_the_server_unready(
    open_url: str, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [f"v{i}" for i in range(20)]
    src = write_jsonl(tmp_path / "store.jsonl", ids, vectors(20, 8))
    code = run_cli(
        "import",
        str(src),
        "-c",
        "vecs",
        "-m",
        "legacy@v1",
        "--dimension",
        "8",
        "--no-backup",
        "--json",
    )
    assert code == 0, capsys.readouterr().err
    with Client(open_url) as c:
        c.create_collection("words")
        c.add_document("words", "a.md", "# A\n\nKittens sleep all day.\n")
    r = httpx.get(f"{open_url}/readyz", timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["collections"]["words"] == "ok"
    assert body["collections"]["vecs"].startswith("cannot embed queries")
    assert "1 cannot embed queries" in body["checks"]["models"]
    hits = httpx.post(
        f"{open_url}/v1/collections/words/search", json={"query": "kittens"}, timeout=60
    )
    assert hits.status_code == 200 and hits.json()["count"] >= 1
