"""A password written into an HTTP model's endpoint URL (``http://user:password@host/v1``).

``ragstore models add https://user:pw@host/v1 --provider openai`` stored the password in the
pin's ``options.base_url``, in the database, and ``models show``, ``models list --json``,
the conflict of a second ``models add`` and every error of the embedder ("cannot reach
URL", "URL answered HTTP 503", "URL refused the request") printed it whole. A new pin with
credentials in its URL is refused now (they belong in the variable ``--api-key-env``
names); a pin an older version made with one still embeds, and shows its URL masked.

Against the real instant embedding server on loopback, the real CLI and the database.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import httpx
import pytest
from bench.instant_embedder import InstantServer

from ragstore.config import Settings
from ragstore.embedding.http import HttpEmbedder
from ragstore.embedding.registry import load_embedder
from ragstore.errors import ConflictError, EmbeddingProviderError, InputError
from ragstore.ingest.texts import add_texts
from ragstore.modelops import add_http_model, find_model, list_models
from ragstore.models import ModelSpec
from ragstore.observability.logging import configure_logging, get_logger
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.api.conftest import running_server
from tests.conftest import run_cli

PASSWORD = "Hunter2-SECRET"


def _with_password(url: str, password: str = PASSWORD) -> str:
    return url.replace("://", f"://embed:{password}@", 1)


@pytest.fixture(scope="module")
def server() -> Iterator[InstantServer]:
    with InstantServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def old_pin(rt: Runtime, server: InstantServer) -> ModelSpec:
    """A pin whose ``base_url`` holds a password, as a version that took one made it."""
    add_http_model(rt, server.base_url, name="cred-old", remote_model="instant")
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE embedding_models SET options = jsonb_set(options, '{base_url}',"
            " to_jsonb(%s::text)) WHERE name = 'cred-old'",
            (_with_password(server.base_url),),
        )
    spec = find_model(rt, "cred-old").spec
    assert PASSWORD in spec.options["base_url"]
    return spec


@pytest.mark.parametrize(
    "userinfo", [f"embed:{PASSWORD}@", f"embed:p@ss-{PASSWORD}@", f"{PASSWORD}@"]
)
def test_an_endpoint_url_holding_credentials_is_refused_and_nothing_is_pinned(
    rt: Runtime,
    server: InstantServer,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    userinfo: str,
) -> None:
    """One error naming what (credentials in the URL), where (the URL, masked) and how
    (the variable ``--api-key-env`` names); exit 65, no pin, and no password anywhere."""
    url = server.base_url.replace("://", f"://{userinfo}", 1)
    code = run_cli("models", "add", url, "--provider", "openai", "--name", "cred-new")
    out, err = capsys.readouterr()
    assert code == 65, err
    assert "error[invalid_input]" in err and "--api-key-env" in err, err
    assert "127.0.0.1" in err and PASSWORD not in out + err, err
    assert [m for m in list_models(rt) if m.spec.name == "cred-new"] == []
    with pytest.raises(InputError) as caught:
        add_http_model(rt, url, name="cred-new")
    assert PASSWORD not in str(caught.value)


def test_a_pin_holding_a_password_still_embeds_and_never_shows_it(
    rt: Runtime,
    old_pin: ModelSpec,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the process's copy (not closed here: the tests below embed with it too)
    embedder = load_embedder(old_pin)
    assert embedder.embed_texts(["tomatoes need sun"]).shape == (1, old_pin.dimension)
    for args in (("show", "cred-old"), ("show", "cred-old", "--json"), ("list", "--json")):
        assert run_cli("models", *args) == 0, args
        out, err = capsys.readouterr()
        assert PASSWORD not in out + err, (args, out)
        assert "embed:***@127.0.0.1" in out, (args, out)
    assert run_cli("models", "show", "cred-old", "--json") == 0
    options: dict[str, Any] = json.loads(capsys.readouterr().out)["options"]
    assert options["base_url"].startswith("http://embed:***@127.0.0.1:")


def test_a_second_add_of_a_pin_holding_a_password_names_it_masked(
    rt: Runtime, server: InstantServer, old_pin: ModelSpec
) -> None:
    """The conflict names the pinned ``base_url``: the old pin's password with it."""
    with pytest.raises(ConflictError) as caught:
        add_http_model(rt, server.base_url, name="cred-old", remote_model="instant")
    assert "base_url 'http://embed:***@127.0.0.1:" in str(caught.value), caught.value
    assert PASSWORD not in str(caught.value)


def _failure(spec: ModelSpec, base_url: str) -> str:
    options = {**spec.options, "base_url": base_url, "max_retries": 1, "backoff_s": 0.01}
    embedder = HttpEmbedder(replace(spec, options=options))
    try:
        with pytest.raises(EmbeddingProviderError) as caught:
            embedder.embed_texts(["tomatoes need sun"])
    finally:
        embedder.close()
    return str(caught.value)


class _Unavailable(BaseHTTPRequestHandler):
    """Every request answered 503, as an overloaded endpoint does."""

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def unavailable() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("password", [PASSWORD, f"p@ss-{PASSWORD}"])
def test_the_embedders_errors_name_the_endpoint_without_its_password(
    server: InstantServer, old_pin: ModelSpec, unavailable: str, password: str
) -> None:
    refused = _failure(old_pin, _with_password(server.base_url + "/nope", password))
    assert "refused the request" in refused and "HTTP 404" in refused, refused
    busy = _failure(old_pin, _with_password(unavailable, password))
    assert "answered HTTP 503" in busy, busy
    gone = _failure(old_pin, _with_password(f"http://127.0.0.1:{_closed_port()}/v1", password))
    assert "cannot reach" in gone, gone
    for text in (refused, busy, gone):
        assert "embed:***@127.0.0.1:" in text and PASSWORD not in text, text


def test_a_spec_holding_a_password_never_shows_it_in_its_repr(
    rt: Runtime, old_pin: ModelSpec
) -> None:
    """The dataclass's generated repr printed ``options`` whole: a spec's repr or ``str``
    (and that of a pin or a collection holding it) named the old pin's password."""
    shown = repr(old_pin)
    assert "'base_url': 'http://embed:***@127.0.0.1:" in shown, shown
    pinned = find_model(rt, "cred-old")
    for text in (shown, str(old_pin), f"{old_pin}", repr(pinned), str([old_pin])):
        assert PASSWORD not in text, text
    assert PASSWORD in old_pin.options["base_url"]  # what is sent is left as it was
    assert old_pin == pinned.spec and hash(old_pin) == hash(pinned.spec)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_log_line_given_a_spec_or_its_options_masks_the_password(
    old_pin: ModelSpec, log_format: Literal["json", "console"]
) -> None:
    """structlog's fields were masked only when they were strings: a spec, or its
    options (a dict), given as a field was rendered whole, password and all."""
    out = io.StringIO()
    configure_logging("info", log_format=log_format, stream=out)
    try:
        get_logger("ragstore.test").warning(
            "embedding failed", spec=old_pin, options=old_pin.options, batch=[old_pin.options]
        )
        try:
            raise KeyError(old_pin)  # a dict of embedders missing the spec
        except KeyError:
            logging.getLogger("ragstore.test").exception("embedding failed for %r", old_pin)
    finally:
        configure_logging("warning", log_format="json")
    text = out.getvalue()
    assert PASSWORD not in text, text
    assert text.count("embed:**********@127.0.0.1:") >= 5, text
    if log_format == "json":
        first = json.loads(text.splitlines()[0])
        assert first["options"]["base_url"].startswith("http://embed:**********@127.0.0.1:")
        assert first["options"]["model"] == "instant"  # the rest of the dict as it was


def test_a_failing_embed_answers_and_logs_without_the_password(
    rt: Runtime, server: InstantServer, old_pin: ModelSpec, unavailable: str, settings: Settings
) -> None:
    """A search of a collection whose pin (holding a password) answers 503: the 502
    problem+json and the server's log line name the endpoint masked."""
    add_http_model(rt, server.base_url, name="cred-busy", remote_model="instant")
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE embedding_models SET options = options || jsonb_build_object("
            "'base_url', %s::text, 'max_retries', 1, 'backoff_s', 0.01) WHERE name = 'cred-busy'",
            (_with_password(unavailable),),
        )
    with (
        running_server(settings.model_copy(update={"auth": "off"})) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        made = http.post("/v1/collections", json={"name": "cred-busy", "model": "cred-busy"})
        assert made.status_code == 201, made.text
        out = io.StringIO()
        configure_logging("info", log_format="json", stream=out)  # the server set its own
        try:
            answer = http.post(
                "/v1/collections/cred-busy/search", json={"query": "tomatoes", "mode": "vector"}
            )
        finally:
            configure_logging("warning", log_format="json")
        # what the console's models page shows: the pins and the collection's spaces
        shown = [http.get("/v1/models"), http.get("/v1/collections/cred-busy/model")]
    assert [r.status_code for r in shown] == [200, 200], [r.text for r in shown]
    assert "cred-busy" in shown[0].text and all(PASSWORD not in r.text for r in shown)
    assert answer.status_code == 502, answer.text
    assert "embed:***@127.0.0.1:" in answer.text and PASSWORD not in answer.text, answer.text
    log = out.getvalue()
    assert "embed:**********@127.0.0.1:" in log and PASSWORD not in log, log


def test_db_check_and_models_status_never_show_the_password(
    rt: Runtime,
    old_pin: ModelSpec,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A collection embedded with the pin holding a password: what ``db check`` (which
    embeds missing vectors with the pin on --repair) and ``models status`` print."""
    Store.from_runtime(rt).create_collection("cred-docs", model="cred-old")
    add_texts(rt, "cred-docs", ["tomatoes need sun", "basil likes warmth"], create=False)
    coll = rt.collection("cred-docs")
    assert coll.model == old_pin and PASSWORD not in repr(coll), repr(coll)
    with rt.db.connection() as conn:  # a vector lost: --repair embeds it again with the pin
        conn.execute(
            f"DELETE FROM {coll.table} WHERE chunk_id = (SELECT min(chunk_id) FROM {coll.table})"
        )
    runs = (
        ("db", "check", "-c", "cred-docs"),
        ("db", "check", "-c", "cred-docs", "--json"),
        ("db", "check", "-c", "cred-docs", "--repair"),
        ("db", "check", "-c", "cred-docs"),
        ("models", "status", "cred-docs"),
        ("models", "status", "cred-docs", "--json"),
        ("models", "list"),
    )
    codes = []
    for args in runs:
        codes.append(run_cli(*args))
        out, err = capsys.readouterr()
        assert PASSWORD not in out + err, (args, out, err)
    # the lost vector found (exit 1), then embedded again with the pin, then nothing found
    assert codes == [1, 1, 0, 0, 0, 0, 0], codes
    assert "cred-old@" in out
