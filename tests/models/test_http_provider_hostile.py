"""The HTTP provider against real misbehaving servers on 127.0.0.1: an answer that trickles
forever, one that is huge, a redirect elsewhere and a server echoing the API key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from ragstore.embedding.http import HttpEmbedder
from ragstore.errors import EmbeddingProviderError
from ragstore.models import ModelSpec

KEY = "sk-hostile-secret-4242"
ANSWER = json.dumps({"data": [{"index": 0, "embedding": [0.6, 0.8]}]}).encode()


def _serve(do_post: Any) -> Iterator[str]:
    handler = type(
        "Handler",
        (BaseHTTPRequestHandler,),
        {"do_POST": do_post, "log_message": lambda *_: None, "protocol_version": "HTTP/1.1"},
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _embedder(base_url: str, **options: object) -> HttpEmbedder:
    opts: dict[str, object] = {"base_url": base_url, "max_retries": 0, "backoff_s": 0.01}
    opts.update(options)
    spec = ModelSpec("openai", "hostile", "t1", 2, "cosine", True, 256, "", opts)
    return HttpEmbedder(spec, api_key=SecretStr(KEY))


def _drain(handler: BaseHTTPRequestHandler) -> None:
    handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


def _trickle(self: BaseHTTPRequestHandler) -> None:
    _drain(self)
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", "100000000")
    self.end_headers()
    try:
        for _ in range(200):  # a byte every 0.1 s: each read is well within the timeout
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


@pytest.fixture()
def trickling() -> Iterator[str]:
    yield from _serve(_trickle)


def test_an_answer_that_trickles_forever_ends_within_the_timeout(trickling: str) -> None:
    """``timeout_s`` bounded each read, not the answer: a server sending one byte every
    0.1 s held an ingest or a search for as long as it went on (forever). Now the whole
    answer must arrive within ``timeout_s``."""
    emb = _embedder(trickling, timeout_s=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(EmbeddingProviderError, match="no answer within the timeout"):
            emb.embed(["x"])
    finally:
        emb.close()
    assert time.monotonic() - t0 < 5


def _huge(self: BaseHTTPRequestHandler) -> None:
    _drain(self)
    pad = 300 * 1024 * 1024
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(pad + len(ANSWER)))
    self.end_headers()
    block = b" " * (1024 * 1024)
    try:
        for _ in range(pad // len(block)):
            self.wfile.write(block)
        self.wfile.write(ANSWER)
    except OSError:
        pass


@pytest.fixture()
def huge() -> Iterator[str]:
    yield from _serve(_huge)


def test_a_huge_answer_is_refused_before_it_is_all_in_memory(huge: str) -> None:
    """A 300 MB answer for one text was read whole into memory (and then parsed): a broken
    or hostile endpoint could exhaust the server's memory. Now an answer far larger than
    its embeddings can be is refused as it arrives, naming the endpoint."""
    emb = _embedder(huge, timeout_s=60)
    try:
        with pytest.raises(EmbeddingProviderError, match=r"127\.0\.0\.1.*larger than"):
            emb.embed(["x"])
    finally:
        emb.close()


def _echo_key(self: BaseHTTPRequestHandler) -> None:
    _drain(self)
    said = str(self.headers.get("Authorization", ""))
    data = json.dumps({"error": {"message": f"key {said} has no quota"}}).encode()
    self.send_response(403)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)


@pytest.fixture()
def echoing() -> Iterator[str]:
    yield from _serve(_echo_key)


def test_an_api_key_the_server_echoes_is_not_in_the_error(echoing: str) -> None:
    """A server quoting the request's key in its error message (some proxies do) had it
    copied into the exception, the CLI's output and the HTTP API's 502 body. Now the
    key is masked wherever the server's text is shown."""
    emb = _embedder(echoing)
    try:
        with pytest.raises(EmbeddingProviderError) as caught:
            emb.embed(["x"])
    finally:
        emb.close()
    assert "HTTP 403" in str(caught.value) and "has no quota" in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_redirect_elsewhere_is_not_followed_and_gets_no_key() -> None:
    """A 307 to another port is one error naming the redirect; the key never goes there."""
    seen: list[str] = []

    def other(self: BaseHTTPRequestHandler) -> None:
        seen.append(str(self.headers.get("Authorization")))
        _drain(self)
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    others = _serve(other)
    target = next(others)
    location = target.replace("127.0.0.1", "localhost") + "/embeddings"

    def redirect(self: BaseHTTPRequestHandler) -> None:
        _drain(self)
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    try:
        for base in _serve(redirect):
            emb = _embedder(base)
            try:
                with pytest.raises(EmbeddingProviderError, match="HTTP 307"):
                    emb.embed(["x"])
            finally:
                emb.close()
    finally:
        others.close()
    assert seen == []
