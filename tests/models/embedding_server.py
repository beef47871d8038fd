"""A real OpenAI-compatible embeddings server on 127.0.0.1 for the HTTP provider's tests.

It serves ``POST /v1/embeddings`` from the real local MiniLM model (no mock): the test
starts it in a thread, points an ``openai`` spec at it and can make it answer the next N
requests with 429 or 503, or demand an API key (``Authorization: Bearer``) or, with
``basic="user:password"``, HTTP basic auth of that pair (a proxy in front of a server).
``base64`` says what it does with ``"encoding_format": "base64"``: ``serve`` it as OpenAI
does (float32 bytes), ``ignore`` it (lists of numbers, as some servers do) or ``refuse`` it
(HTTP 400, as a strict one would).
``"dimensions": N`` is honoured as OpenAI's text-embedding-3 models honour it (the first N
dimensions, normalised again) unless ``shortens`` is False (the field ignored, as servers of
other models do). ``delay_s`` holds each answer that long (a remote API's round trip);
``max_in_flight`` is the most requests it has held (waiting out ``delay_s``) at once, and
``refuse_text`` a text it answers any request holding it with HTTP 400 at once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ragstore.embedding.base import Embedder


class EmbeddingServer:
    def __init__(
        self,
        embedder: Embedder,
        *,
        api_key: str | None = None,
        keep_alive: bool = False,
        basic: str | None = None,
    ) -> None:
        self.embedder = embedder
        self.api_key = api_key
        self.basic = basic
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.failures: deque[int] = deque()  # statuses to answer the next requests with
        self.requests = 0
        self.batch_sizes: list[int] = []
        self.formats: list[str] = []  # the encoding_format of each request
        self.base64 = "serve"
        self.shortens = True
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.refuse_text: str | None = None
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()  # one request on the model at a time, as on a GPU
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps a client's connection open between requests, as a real
            # provider does; the default HTTP/1.0 closes it after each answer
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, *_: Any) -> None:
                pass

            def _answer(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests += 1
                    fail = server.failures.popleft() if server.failures else None
                if self.path != "/v1/embeddings":
                    self._answer(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server.lock:
                    server.authorizations.append(self.headers.get("Authorization"))
                if server.basic is not None:
                    expected = "Basic " + base64.b64encode(server.basic.encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self._answer(
                            401,
                            {"error": {"message": "Unauthorized"}},
                            {"WWW-Authenticate": 'Basic realm="embeddings"'},
                        )
                        return
                elif (
                    server.api_key
                    and self.headers.get("Authorization") != f"Bearer {server.api_key}"
                ):
                    self._answer(401, {"error": {"message": "Incorrect API key provided"}})
                    return
                if fail is not None:
                    self._answer(
                        fail,
                        {"error": {"message": "slow down"}},
                        {"Retry-After": "0"} if fail == 429 else None,
                    )
                    return
                texts = body["input"]
                texts = [texts] if isinstance(texts, str) else texts
                fmt = str(body.get("encoding_format", "float"))
                with server.lock:
                    server.formats.append(fmt)
                if fmt == "base64" and server.base64 == "refuse":
                    self._answer(400, {"error": {"message": "encoding_format must be float"}})
                    return
                if server.refuse_text is not None and any(server.refuse_text in t for t in texts):
                    self._answer(400, {"error": {"message": "input refused"}})
                    return
                with server.lock:
                    server.batch_sizes.append(len(texts))
                # held: a request counts as in flight while it waits here, so that one
                # answered just now (its thread still closing) is not counted with the next
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay_s)
                with server.lock:
                    server.in_flight -= 1
                with server.model_lock:
                    vecs = server.embedder.embed(texts)
                if body.get("dimensions") and server.shortens:
                    vecs = vecs[:, : int(body["dimensions"])]
                    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
                as_b64 = fmt == "base64" and server.base64 == "serve"
                self._answer(
                    200,
                    {
                        "object": "list",
                        "model": body.get("model"),
                        "data": [
                            {
                                "object": "embedding",
                                "index": i,
                                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                                if as_b64
                                else [float(x) for x in v],
                            }
                            for i, v in reversed(list(enumerate(vecs)))
                        ],
                        "usage": {"prompt_tokens": 0, "total_tokens": 0},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
