"""An embedding endpoint that takes only HTTP basic auth, and pins that keep a password.

Since ``models add`` refuses ``https://user:password@host/v1`` (the password would be stored
in the pin), an endpoint behind a proxy that takes basic auth alone could not be pinned at
all: ``--auth basic`` now sends the ``USER:PASSWORD`` held by the variable ``--api-key-env``
names, and the pin records only that name. A pin made before the refusal still holds its
password: ``db check`` names each, with the commands that pin it again without it.

Against a real OpenAI-compatible server on 127.0.0.1 (MiniLM) that demands basic auth, the
real CLI and the database.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from ragstore.embedding.http import HttpEmbedder
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from ragstore.errors import ConfigError, EmbeddingProviderError
from ragstore.ingest.texts import add_texts
from ragstore.modelops import add_http_model, find_model, list_models
from ragstore.modelops.specs import repin_variable
from ragstore.models import ModelSpec
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.store import Store
from tests.conftest import run_cli
from tests.models.embedding_server import EmbeddingServer

PASSWORD = "Hunter2-SECRET"
PAIR = f"embed:{PASSWORD}"
VAR = "RAGSTORE_TEST_BASIC_AUTH"


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddingServer]:
    local = load_embedder(resolve_spec(DEFAULT_MODEL))
    srv = EmbeddingServer(local, basic=PAIR).start()
    yield srv
    srv.stop()


def _add_args(server: EmbeddingServer, name: str) -> list[str]:
    return [
        "models",
        "add",
        server.base_url,
        "--provider",
        "openai",
        "--name",
        name,
        "--remote-model",
        "minilm",
        "--max-tokens",
        "256",
        "--auth",
        "basic",
        "--api-key-env",
        VAR,
    ]


def _stored_options(rt: Runtime, name: str) -> str:
    """The stored options of every pin named ``name``, as the database holds them."""
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT string_agg(options::text, E'\\n' ORDER BY id) FROM embedding_models"
            " WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None and row[0] is not None
    return str(row[0])


def test_an_endpoint_taking_only_basic_auth_is_pinned_with_auth_basic_and_embeds(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(VAR, PAIR)
    assert run_cli(*_add_args(server, "basic-minilm"), "--json") == 0
    out, err = capsys.readouterr()
    options = json.loads(out)["options"]
    assert (options["auth"], options["api_key_env"]) == ("basic", VAR)
    stored = _stored_options(rt, "basic-minilm")
    assert PASSWORD not in out + err + stored and "embed" not in stored, stored
    # what went over the wire: basic auth of the pair, never a bearer token
    assert server.authorizations and all(
        a is not None and a.startswith("Basic ") for a in server.authorizations
    )
    Store.from_runtime(rt).create_collection("basic-docs", model="basic-minilm")
    add_texts(
        rt, "basic-docs", ["Tomatoes need full sun.", "Sourdough rises slowly."], create=False
    )
    hits = search(rt, "bread dough", collection="basic-docs", mode="vector", k=1)
    assert hits and "Sourdough" in hits[0].text
    assert run_cli("models", "show", "basic-minilm") == 0
    assert PASSWORD not in capsys.readouterr().out


def _basic_spec(server: EmbeddingServer) -> ModelSpec:
    options = {"base_url": server.base_url, "model": "minilm", "auth": "basic"}
    return ModelSpec("openai", "basic-x", "t1", 384, "cosine", True, 256, "", options)


@pytest.mark.parametrize("value", [None, "", "   ", PASSWORD, f":{PASSWORD}", "embed:a\nb"])
def test_a_missing_or_malformed_variable_is_one_config_error_naming_it(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """Unset, empty, without ``USER:``, or on two lines: refused before anything is sent,
    naming the variable and what it must hold, never what it holds."""
    spec = _basic_spec(server)
    spec.options["api_key_env"] = VAR
    if value is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, value)
    sent = server.requests
    with pytest.raises(ConfigError) as caught:
        HttpEmbedder(spec)
    text = str(caught.value)
    assert VAR in text and "USER:PASSWORD" in text and "--auth basic" in text, text
    assert PASSWORD not in text
    assert server.requests == sent


def test_a_wrong_password_is_one_error_naming_the_variable_and_not_retried(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _basic_spec(server)
    spec.options["api_key_env"] = VAR
    monkeypatch.setenv(VAR, "embed:not-the-Password")
    embedder = HttpEmbedder(spec)
    sent = server.requests
    try:
        with pytest.raises(EmbeddingProviderError) as caught:
            embedder.embed_texts(["tomatoes need sun"])
    finally:
        embedder.close()
    text = str(caught.value)
    assert "HTTP 401" in text and f"check the USER:PASSWORD in {VAR}" in text, text
    assert "not-the-Password" not in text
    assert server.requests == sent + 1  # a refusal of the credentials is not retried
    given = HttpEmbedder(spec, api_key=SecretStr(PAIR))  # the pair given, not read
    try:
        assert given.embed_texts(["tomatoes need sun"]).shape == (1, 384)
    finally:
        given.close()


def test_pinning_with_a_wrong_or_missing_variable_pins_nothing(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(VAR, raising=False)
    assert run_cli(*_add_args(server, "basic-none")) == 78  # config_invalid
    err = capsys.readouterr().err
    assert "error[config_invalid]" in err and VAR in err and "USER:PASSWORD" in err, err
    monkeypatch.setenv(VAR, "embed:not-the-Password")
    code = run_cli(*_add_args(server, "basic-none"))
    err = capsys.readouterr().err
    assert code != 0 and "HTTP 401" in err and VAR in err and "not-the-Password" not in err
    assert [m for m in list_models(rt) if m.spec.name == "basic-none"] == []
    assert run_cli(*_add_args(server, "basic-none")[:-4], "--auth", "digest") == 65
    assert "--auth 'digest' is not one of bearer, basic" in capsys.readouterr().err


def _old_pin(rt: Runtime, server: EmbeddingServer, name: str) -> ModelSpec:
    """A pin whose ``base_url`` holds the pair, as a version that took one made it (httpx
    sends it as basic auth; the pin has no ``auth``)."""
    add_http_model(
        rt,
        server.base_url,
        name=name,
        remote_model="minilm",
        max_tokens=256,
        auth="basic",
        api_key_env=VAR,
    )
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE embedding_models SET options = jsonb_set(options - 'auth', '{base_url}',"
            " to_jsonb(%s::text)) WHERE name = %s",
            (server.base_url.replace("://", f"://{PAIR}@", 1), name),
        )
    return find_model(rt, name).spec


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_cli("db", "check", *args)
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err, out + err
    return code, out


def test_db_check_names_a_pin_holding_a_password_with_the_commands_that_fix_it(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Reported as a warning (the check's exit and its other work unchanged), the pin left
    as it is; the commands the warning gives pin the endpoint again and move the
    collection to it."""
    monkeypatch.setenv(VAR, PAIR)
    old = _old_pin(rt, server, "old-pw")
    assert PASSWORD in old.options["base_url"] and "auth" not in old.options
    Store.from_runtime(rt).create_collection("old-docs", model="old-pw")
    add_texts(rt, "old-docs", ["Tomatoes need full sun.", "Sourdough rises slowly."], create=False)
    before = _stored_options(rt, "old-pw")

    code, out = _check(capsys, "--json")
    report: dict[str, Any] = json.loads(out)
    assert code == 0 and report["ok"] and report["findings"] == [], report
    [warning] = [w for w in report["warnings"] if "old-pw" in w["where"]]
    assert warning["where"] == f"model {old.key} (used by collection(s) old-docs)", warning
    assert "holds a password" in warning["problem"]
    fix = warning["fix"]
    variable = repin_variable(old)
    assert fix.startswith(f"export {variable}='USER:PASSWORD', then "), fix
    code, text = _check(capsys, "-c", "old-docs")
    assert code == 0 and f"warning: model {old.key}" in text and f"  fix: {fix}" in text, text

    # the steps: pin it again, migrate, prune (asks: --yes here), remove the old pin
    steps, _, tail = fix.partition("; ")
    assert tail.startswith("change the password at the endpoint afterwards"), fix
    commands = steps.split(", then ")[1:]
    assert [c.split()[2] for c in commands] == ["add", "migrate", "prune", "remove"], fix
    assert commands[2:] == [
        "ragstore models prune -c old-docs",
        f"ragstore models remove {old.key}",
    ]
    monkeypatch.setenv(variable, PAIR)
    for command in commands[:2]:
        assert run_cli(*shlex.split(command)[1:]) == 0, (command, capsys.readouterr())
    capsys.readouterr()
    new = find_model(rt, f"old-pw@{old.revision}-basic").spec
    assert new.options["auth"] == "basic" and new.options["api_key_env"] == variable
    assert new.options["base_url"] == server.base_url and new.checksum == old.checksum
    assert rt.collection("old-docs").model == new
    stored = _stored_options(rt, "old-pw")
    assert stored.startswith(before + "\n") and stored.count(PASSWORD) == 1  # left as it was

    # kept for a rollback: still warned of, now with the prune and the removal left to do
    code, text = _check(capsys)
    assert code == 0 and f"warning: model {old.key} (used by collection(s) old-docs)" in text
    assert f"  fix: export {variable}='USER:PASSWORD', then ragstore models add" in text, text
    assert f"then ragstore models prune -c old-docs, then ragstore models remove {old.key};" in text
    assert f"warning: model {new.key}" not in text
    assert run_cli("models", "remove", old.key, "--yes") == 65  # a rollback still needs it
    assert "error[conflict]" in capsys.readouterr().err

    for command in commands[2:]:
        assert run_cli(*shlex.split(command)[1:], "--yes") == 0, (command, capsys.readouterr())
    capsys.readouterr()
    code, out = _check(capsys, "--json")
    report = json.loads(out)
    assert code == 0 and not [w for w in report["warnings"] if "old-pw" in w["where"]], report
    assert PASSWORD not in _stored_options(rt, "old-pw")
    hits = search(rt, "bread dough", collection="old-docs", mode="vector", k=1)
    assert hits and "Sourdough" in hits[0].text  # on the new pin, the endpoint still used


def test_db_check_offers_only_the_removal_for_a_pin_no_collection_uses(
    rt: Runtime,
    server: EmbeddingServer,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(VAR, PAIR)
    old = _old_pin(rt, server, "unused-pw")
    code, out = _check(capsys, "--json")
    [warning] = [w for w in json.loads(out)["warnings"] if "unused-pw" in w["where"]]
    assert code == 0 and warning["where"] == f"model {old.key} (used by no collection)"
    assert warning["fix"].startswith(f"ragstore models remove {old.key} (to use the endpoint")
    assert run_cli(*shlex.split(warning["fix"].split(" (")[0])[1:], "--yes") == 0
    code, out = _check(capsys, "--json")
    assert code == 0 and not [w for w in json.loads(out)["warnings"] if "unused-pw" in w["where"]]
    assert not [m for m in list_models(rt) if m.spec.name == "unused-pw"]
