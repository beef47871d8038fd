"""Overload probe: a real `ragstore serve` (profile test, embedded database, rate limit
off) under many and slow clients; prints status counts, latencies, the server's peak RSS,
and what another client's /healthz, /readyz and search took meanwhile. Not run by CI.

    python -m bench.overload search upload slowhead slowbody

Scenarios: ``search`` (OVL_N concurrent searches, default 200, from 127.0.0.2-5 so the
per-address cap does not refuse them; OVL_CT: the clients' timeout), ``upload`` (OVL_U
concurrent uploads, default 50, each then read back by id), ``slowhead`` / ``slowbody``
(200 connections trickling a head or a JSON body a byte a second for OVL_SLOW_S, 14 s).
OVL_DATA: the data folder (default a new temporary one); OVL_RAGSTORE_*: settings given to
the server (OVL_RAGSTORE_POOL_MAX_SIZE=2 ...).

Figures of 2026-12-07 (2 shared cores, default settings): 200 searches all 200 (p50 6.4 s,
max 9.4 s), 800 all 200 (p50 17 s, max 25 s, RSS flat at about 0.9 GiB); 50 uploads all
201 and all stored; 200 slow heads closed after 10 s, 200 slow bodies after 10 s, other
clients' probes answered in under 0.2 s throughout.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

COLL = "ovl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    data = Path(os.environ.get("OVL_DATA") or tempfile.mkdtemp(prefix="ovl-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(data),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_LOG_LEVEL": "warning",
            "RAGSTORE_RATE_LIMIT_PER_MINUTE": "0",
            **extra_env,
        }
    )
    port = free_port()
    log = (data / "serve.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url, data
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("not ready")


def rss(proc: subprocess.Popen[bytes]) -> float:
    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


async def probe_latency(url: str, stop: asyncio.Event, out: dict[str, list[float]]) -> None:
    async with httpx.AsyncClient(timeout=120) as c:
        while not stop.is_set():
            for path in ("/healthz", "/readyz"):
                t = time.perf_counter()
                try:
                    r = await c.get(url + path)
                    out[path + f" {r.status_code}"].append(time.perf_counter() - t)
                except httpx.HTTPError as exc:
                    out[path + f" {type(exc).__name__}"].append(time.perf_counter() - t)
            t = time.perf_counter()
            try:
                r = await c.post(
                    f"{url}/v1/collections/{COLL}/search", json={"query": "probe", "k": 3}
                )
                out[f"probe-search {r.status_code}"].append(time.perf_counter() - t)
            except httpx.HTTPError as exc:
                out[f"probe-search {type(exc).__name__}"].append(time.perf_counter() - t)
            await asyncio.sleep(0.2)


def summary(d: dict[str, list[float]]) -> str:
    lines = []
    for k, vals in sorted(d.items()):
        v = sorted(vals)
        lines.append(f"  {k}: n={len(v)} p50={v[len(v) // 2]:.2f}s max={v[-1]:.2f}s")
    return "\n".join(lines)


async def many_searches(url: str, n: int, proc: subprocess.Popen[bytes]) -> None:
    stop = asyncio.Event()
    lat: dict[str, list[float]] = collections.defaultdict(list)
    res: dict[str, list[float]] = collections.defaultdict(list)
    bodies: dict[int, str] = {}
    peak = [rss(proc)]

    async def one(i: int) -> None:
        tr = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{2 + i % 4}")
        async with httpx.AsyncClient(
            timeout=float(os.environ.get("OVL_CT", "300")), transport=tr
        ) as c:
            t = time.perf_counter()
            try:
                r = await c.post(
                    f"{url}/v1/collections/{COLL}/search",
                    json={"query": f"query number {i} about things", "k": 10, "mode": "hybrid"},
                )
                res[str(r.status_code)].append(time.perf_counter() - t)
                if r.status_code >= 500:
                    bodies.setdefault(
                        r.status_code, r.text[:400] + " RA=" + str(r.headers.get("retry-after"))
                    )
            except httpx.HTTPError as exc:
                res[type(exc).__name__].append(time.perf_counter() - t)

    async def mem() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(proc))
            await asyncio.sleep(0.5)

    p = asyncio.create_task(probe_latency(url, stop, lat))
    m = asyncio.create_task(mem())
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    stop.set()
    await p
    async with httpx.AsyncClient(timeout=300) as c:
        t = time.perf_counter()
        r = await c.post(
            f"{url}/v1/collections/{COLL}/search", json={"query": "after the storm", "k": 3}
        )
        print(
            f"  search after every client left: {r.status_code} in {time.perf_counter() - t:.1f}s"
        )
    await m
    print(f"[searches x{n}] wall={wall:.1f}s peak_rss={peak[0]:.0f}MiB")
    print(summary(res))
    print(" other client meanwhile:")
    print(summary(lat))
    for code, b in bodies.items():
        print(f"  body {code}: {b}")


async def many_uploads(url: str, n: int, proc: subprocess.Popen[bytes]) -> None:
    res: dict[str, list[float]] = collections.defaultdict(list)
    acked: list[str] = []
    bodies: dict[int, str] = {}
    tag = str(int(time.time()))

    async def one(i: int) -> None:
        name = f"up-{tag}-{i}.md"
        text = f"# Upload {i}\n\n" + (f"upload {i} sentence with words {tag}. " * 200)
        async with httpx.AsyncClient(timeout=300) as c:
            t = time.perf_counter()
            try:
                r = await c.post(
                    f"{url}/v1/collections/{COLL}/documents/upload",
                    files={"files": (name, text.encode(), "text/markdown")},
                )
                res[str(r.status_code)].append(time.perf_counter() - t)
                if r.status_code < 300:
                    acked.append(str(r.json()["data"][0]["id"]))
                else:
                    bodies.setdefault(
                        r.status_code, r.text[:400] + " RA=" + str(r.headers.get("retry-after"))
                    )
            except httpx.HTTPError as exc:
                res[type(exc).__name__].append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"[uploads x{n}] wall={time.perf_counter() - t0:.1f}s rss={rss(proc):.0f}MiB")
    print(summary(res))
    for code, b in bodies.items():
        print(f"  body {code}: {b}")
    # check stored
    async with httpx.AsyncClient(timeout=120) as c:
        missing = []
        for name in acked:
            r = await c.get(f"{url}/v1/collections/{COLL}/documents/{name}")
            if r.status_code != 200:
                missing.append((name, r.status_code))
    print(f"  acked={len(acked)} missing_after={missing}")


async def slowloris(url: str, n: int, proc: subprocess.Popen[bytes], body: bool) -> None:
    host, port = url.rsplit("/", 1)[-1].split(":")
    stop = asyncio.Event()
    lat: dict[str, list[float]] = collections.defaultdict(list)
    ends: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> None:
        t = time.perf_counter()
        try:
            r, w = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            ends["connect " + type(exc).__name__] += 1
            return
        if body:
            w.write(
                f"POST /v1/collections/{COLL}/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
            )
            chunk = b"{"
        else:
            w.write(b"GET /healthz HTTP/1.1\r\n")
            chunk = b"X"
        try:
            while not stop.is_set():
                w.write(chunk)
                await w.drain()
                try:
                    data = await asyncio.wait_for(r.read(200), 1.0)
                    if data == b"":
                        ends[f"closed after {int(time.perf_counter() - t)}s"] += 1
                    else:
                        code = data.split(b" ")[1].decode()
                        ends[f"answered {code} after {int(time.perf_counter() - t)}s"] += 1
                    return
                except TimeoutError:
                    pass
                chunk = b"a" if body else b"X"
            ends["open at end"] += 1
        except OSError as exc:
            ends[type(exc).__name__] += 1
        finally:
            w.close()

    p = asyncio.create_task(probe_latency(url, stop, lat))
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(float(os.environ.get("OVL_SLOW_S", "14")))
    stop.set()
    await asyncio.gather(*tasks, p)
    print(f"[slow {'body' if body else 'head'} x{n}] rss={rss(proc):.0f}MiB ends={dict(ends)}")
    print(summary(lat))


async def main() -> None:
    proc, url, data = start(
        {k[4:]: v for k, v in os.environ.items() if k.startswith("OVL_RAGSTORE_")}
    )
    try:
        with httpx.Client(timeout=120) as c:
            c.post(f"{url}/v1/collections", json={"name": COLL})
            for i in range(20):
                c.post(
                    f"{url}/v1/collections/{COLL}/documents",
                    json={
                        "name": f"seed-{i}.md",
                        "text": f"# Seed {i}\n\n" + "words about things and stuff. " * 100,
                    },
                )
        which = sys.argv[1:] or ["search", "upload", "slowhead", "slowbody"]
        if "search" in which:
            await many_searches(url, int(os.environ.get("OVL_N", "200")), proc)
        if "upload" in which:
            await many_uploads(url, int(os.environ.get("OVL_U", "50")), proc)
        if "slowhead" in which:
            await slowloris(url, 200, proc, body=False)
        if "slowbody" in which:
            await slowloris(url, 200, proc, body=True)
    finally:
        proc.terminate()
        proc.wait(60)
        print("log tail:", (data / "serve.log").read_text()[-3000:])


asyncio.run(main())
