"""An OpenAI-compatible ``/v1/embeddings`` server that answers instantly with deterministic vectors.

Benchmarks of the write path and of search use it to take the model out of the
measurement: a real HTTP server on 127.0.0.1, pinned like any HTTP model
(``ragstore models add --url``), whose vectors cost microseconds. A vector is a hashed
bag of words (each lower-cased word picks a fixed random direction from a seeded table;
the text's vector is their normalised sum), so texts that share words lie close and
queries find the passages that contain their words: the HNSW graph and the filters see
data with structure, not uniform noise, which would be an unrealistic worst case.

    python -m bench.instant_embedder --port 0     # prints "port N" once listening

It runs as its own process so that its JSON encoding does not compete for the bench's GIL.
Like OpenAI it answers ``"encoding_format": "base64"`` (what ragstore's HTTP provider and
OpenAI's Python client ask for) with float32 bytes and anything else with printed floats.
``--delay-ms`` holds each answer back that long, as a remote embedding API's round trip
would (``bench/query_overlap.py``); the default answers at once.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIMENSION = 384
TABLE_BITS = 15
_WORD = re.compile(r"\w+")


class Vectors:
    """Deterministic text -> unit vector (same text, same vector, in any process)."""

    def __init__(self, dimension: int = DIMENSION, seed: int = 1234) -> None:
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((1 << TABLE_BITS, dimension)).astype(np.float32)
        self.mask = (1 << TABLE_BITS) - 1

    def embed(self, text: str) -> np.ndarray:
        ids = [zlib.crc32(w.encode()) & self.mask for w in _WORD.findall(text.lower())]
        if not ids:
            ids = [zlib.crc32(text.encode()) & self.mask]
        v = self.table[ids].sum(axis=0)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v


def serve(port: int, dimension: int, delay_ms: float = 0.0) -> None:
    vectors = Vectors(dimension)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out as two writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK (40 ms a request), which is not the server's cost
        disable_nagle_algorithm = True

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/") != "/v1/embeddings":
                self._answer(404, b'{"error": {"message": "no such route"}}')
                return
            texts = body.get("input", [])
            texts = [texts] if isinstance(texts, str) else texts
            items = []
            as_base64 = body.get("encoding_format") == "base64"  # as OpenAI answers it
            for i, t in enumerate(texts):
                v = vectors.embed(str(t))
                if as_base64:
                    value = '"' + base64.b64encode(v.astype("<f4").tobytes()).decode() + '"'
                else:
                    value = "[" + ",".join(f"{x:.5f}" for x in v.tolist()) + "]"
                items.append(f'{{"object":"embedding","index":{i},"embedding":{value}}}')
            if delay_ms > 0:
                time.sleep(delay_ms / 1000)
            model = json.dumps(body.get("model", "instant"))
            data = (
                f'{{"object":"list","model":{model},"data":[{",".join(items)}],'
                '"usage":{"prompt_tokens":0,"total_tokens":0}}'
            ).encode()
            self._answer(200, data)

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"port {httpd.server_address[1]}", flush=True)
    httpd.serve_forever()


class InstantServer:
    """The server as a child process on loopback; ``base_url`` once started."""

    def __init__(self, dimension: int = DIMENSION, delay_ms: float = 0.0) -> None:
        self.dimension = dimension
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> InstantServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.instant_embedder",
                "--port",
                "0",
                "--dimension",
                str(self.dimension),
                "--delay-ms",
                str(self.delay_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            self.stop()
            raise RuntimeError(f"the instant embedding server did not start: {line}")
        self.base_url = f"http://127.0.0.1:{line[1]}/v1"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> InstantServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dimension", type=int, default=DIMENSION)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="hold each answer this long")
    args = ap.parse_args()
    serve(args.port, args.dimension, args.delay_ms)


if __name__ == "__main__":
    main()
