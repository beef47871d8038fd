"""What the HTTP guards of api/server.py and the search timeout cost: p50/p90 latency of
small requests against servers on loopback, one per variant, requests alternating between
them in one run (so load on a shared machine hits every variant alike).

Variants (each its own uvicorn server in a thread of this process, on the same database):

* ``before``: uvicorn's own httptools protocol, proxy headers on, no search timeout
  (``ragstore serve`` until 2026-12-02);
* ``after``: :func:`ragstore.api.server.server_config` (guarded httptools, proxy headers
  off) and ``RAGSTORE_SEARCH_TIMEOUT_S`` at its default;
* ``h11``: uvicorn's h11 protocol with a 64 KiB head limit, the other way to bound heads.

Requests: ``GET /healthz`` and ``POST /v1/collections/C/search`` (hybrid, k=5, ten
queries in turn, so after the first round the query vectors come from the cache).
The collection must exist in the database the environment names::

    RAGSTORE_DATA_DIR=/tmp/harden-http-data python -m bench.http_guard --collection docs -n 300

``--flood-mb N`` then sends each variant one header of N MB that never ends, and reports the
slowest ``GET /healthz`` of another client meanwhile and how much the server read.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import uvicorn

from ragstore.api import create_app
from ragstore.api.server import server_config
from ragstore.config import Settings
from ragstore.profiles import get_settings

QUERIES = [
    "how do I roll back a migration",
    "rate limit per API key",
    "backup and restore",
    "hybrid search fusion",
    "read replicas lag",
    "configure the embedding model",
    "what does request_too_large mean",
    "section ranking",
    "ingest workers",
    "metrics with several workers",
]

Variant = Callable[[Any, Settings], uvicorn.Config]

VARIANTS: dict[str, tuple[Variant, float]] = {
    "before": (
        lambda app, s: uvicorn.Config(app, http="httptools", log_level="warning"),
        0.0,
    ),
    "after": (lambda app, s: server_config(app, s, log_level="warning"), 30.0),
    "h11": (
        lambda app, s: uvicorn.Config(
            app,
            http="h11",
            h11_max_incomplete_event_size=64 * 1024,
            proxy_headers=False,
            log_level="warning",
        ),
        30.0,
    ),
}


@contextmanager
def _serving(make: Variant, settings: Settings) -> Iterator[str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = make(create_app(settings), settings)
    config.access_log = False
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("a server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _flood(url: str, megabytes: int) -> tuple[float, int]:
    """The slowest ``GET /healthz`` while another client sends one header of ``megabytes``
    MB (never finished), and how many bytes the server took before cutting it off."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0

    def send() -> None:
        nonlocal sent
        with socket.create_connection((host, int(port))) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                chunk = b"a" * 65536
                for _ in range(megabytes * 16):
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                return

    flooder = threading.Thread(target=send)
    slowest = 0.0
    with httpx.Client(base_url=url, timeout=120) as client:
        flooder.start()
        while flooder.is_alive():
            t0 = time.perf_counter()
            client.get("/healthz").raise_for_status()
            slowest = max(slowest, time.perf_counter() - t0)
    flooder.join()
    return slowest, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collection", required=True)
    ap.add_argument("-n", type=int, default=300, help="requests of each kind per variant")
    ap.add_argument(
        "--flood-mb", type=int, default=0, help="then one unfinished header this big per variant"
    )
    args = ap.parse_args()
    base = get_settings().model_copy(update={"auth": "off", "log_level": "warning"})
    times: dict[tuple[str, str], list[float]] = {}
    with ExitStack() as stack:
        clients: dict[str, httpx.Client] = {}
        urls: dict[str, str] = {}
        for name, (make, timeout_s) in VARIANTS.items():
            settings = base.model_copy(update={"search_timeout_s": timeout_s})
            url = urls[name] = stack.enter_context(_serving(make, settings))
            clients[name] = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        search_path = f"/v1/collections/{args.collection}/search"
        for i in range(args.n + 10):  # the first 10 rounds warm up (query cache, plans)
            for name, client in clients.items():
                query = {"query": QUERIES[i % len(QUERIES)], "k": 5}
                for kind in ("GET /healthz", "POST search"):
                    t0 = time.perf_counter()
                    if kind == "POST search":
                        r = client.post(search_path, json=query)
                    else:
                        r = client.get("/healthz")
                    elapsed = time.perf_counter() - t0
                    r.raise_for_status()
                    if i >= 10:
                        times.setdefault((name, kind), []).append(elapsed)
        floods = (
            {name: _flood(url, args.flood_mb) for name, url in urls.items()}
            if args.flood_mb
            else {}
        )
    print("| variant | request | p50 ms | p90 ms | n |")
    print("|---|---|---:|---:|---:|")
    for (name, kind), values in times.items():
        values.sort()
        p50 = statistics.median(values) * 1000
        p90 = values[int(len(values) * 0.9)] * 1000
        print(f"| {name} | {kind} | {p50:.2f} | {p90:.2f} | {len(values)} |")

    for name, (slowest, sent) in floods.items():
        print(
            f"{name}: {args.flood_mb} MB header: slowest GET /healthz beside it "
            f"{slowest * 1000:.0f} ms; the server took {sent / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
