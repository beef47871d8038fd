"""Cost of observability: per-request middleware overhead and /metrics render time.

    python -m bench.observability_bench [--requests 3000]

Drives a trivial FastAPI route in-process (httpx ASGI transport, no network, no database)
with and without :class:`ObservabilityMiddleware`, and times ``metrics.render()`` of the
process registry after that traffic. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import time

import httpx
from fastapi import FastAPI

from ragstore.observability import metrics
from ragstore.observability.http import ObservabilityMiddleware
from ragstore.observability.logging import configure_logging


def _app(observed: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/collections/{name}/ping")
    async def ping(name: str) -> dict[str, str]:
        return {"name": name}

    if observed:
        app.add_middleware(ObservabilityMiddleware, root=app)
    return app


async def _run(app: FastAPI, n: int) -> float:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(200):  # warm up
            await client.get("/v1/collections/c/ping")
        t0 = time.perf_counter()
        for i in range(n):
            await client.get(f"/v1/collections/c{i % 20}/ping")
        return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    configure_logging("info", log_format="json", stream=io.StringIO())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the bench client's own lines
    bare = asyncio.run(_run(_app(False), args.requests))
    observed = asyncio.run(_run(_app(True), args.requests))
    t0 = time.perf_counter()
    rounds = 50
    for _ in range(rounds):
        body = metrics.render()
    render = (time.perf_counter() - t0) / rounds
    print(f"request without observability: {bare * 1e6:.0f} us")
    print(
        f"request with metrics + JSON access log: {observed * 1e6:.0f} us "
        f"(+{(observed - bare) * 1e6:.0f} us)"
    )
    print(f"metrics.render(): {render * 1e3:.2f} ms for {len(body)} bytes")


if __name__ == "__main__":
    main()
