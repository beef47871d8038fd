"""Read replicas on one machine: search throughput against the primary alone and with reads on
a streaming hot standby, and the standby's lag while the primary takes a bulk ingest.

A fresh embedded primary in a temporary directory, a standby made from it with
``pg_basebackup -R`` (:mod:`ragstore.db.standby`), SciFact documents from ../shared/data
ingested in-process while a sampler reads both servers' WAL positions every 50 ms. Then a
``ragstore serve`` subprocess per configuration (auth off, loopback) takes 8 client threads of
repeated queries (their embeddings cached, so the database's share of a search is as large
as it gets on this machine).

    python -m bench.replica_bench --docs 300 --seconds 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg

from bench.http_bench import _corpus, _free_port, _queries
from ragstore.config import Settings
from ragstore.db import embedded, lsn, migrations, standby
from ragstore.db.database import Database
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime


class LagSampler:
    """Primary write position and standby replay position, sampled on a thread."""

    def __init__(self, primary_url: str, standby_url: str, every_s: float = 0.05) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._every = every_s
        self._urls = (primary_url, standby_url)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with (
            psycopg.connect(self._urls[0], autocommit=True) as p,
            psycopg.connect(self._urls[1], autocommit=True) as s,
        ):
            while not self._stop.is_set():
                written = lsn.current(p)
                replayed = lsn.replay_state(s).replay_lsn or 0
                self.samples.append((time.monotonic(), written, replayed))
                time.sleep(self._every)

    def lags(self) -> tuple[list[float], list[int]]:
        """Per sample: seconds since the primary first wrote WAL the standby had not
        replayed yet (0 when caught up), and the byte gap."""
        seconds, gaps = [], []
        for t, written, replayed in self.samples:
            gaps.append(max(0, written - replayed))
            first = next((t0 for t0, w, _ in self.samples if w > replayed), None)
            seconds.append(0.0 if replayed >= written or first is None else t - first)
        return seconds, gaps


def _load(
    url: str, queries: list[str], clients: int, seconds: float
) -> tuple[int, list[float], Counter[str], int]:
    latencies: list[float] = []
    served: Counter[str] = Counter()
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                r = http.post(
                    "/v1/collections/bench/search",
                    json={"query": queries[i % len(queries)], "k": 10},
                )
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                        served[r.headers.get("RAGStore-Read-From", "primary")] += 1
                    else:
                        errors += 1
                i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies, served, errors


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """A ``ragstore serve`` subprocess, once its /readyz answers 200 (its output in ``log``)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ragstore.cli import main; main()",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 600
    last = ""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if r.status_code == 200:
                return proc
            last = r.text[:300]
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    tail = log.read_text(errors="replace")[-1500:]
    raise SystemExit(f"the server did not become ready: {last}\n{tail}")


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ragstore-replica-bench-") as tmp:
        root = Path(tmp)
        primary_url = embedded.start(root / "primary")
        migrations.upgrade(Database(primary_url))
        node = standby.create(primary_url, root / "standby")
        try:
            docs = _corpus("scifact", args.docs, _mkdir(root / "docs"))
            settings = Settings(database_url=primary_url, data_dir=root / "data", profile="test")
            with Runtime(settings) as rt, LagSampler(primary_url, node.conninfo) as sampler:
                t0 = time.monotonic()
                report = ingest_paths(rt, docs, collection="bench")
                ingest_s = time.monotonic() - t0
                time.sleep(1.0)  # let the standby finish and the sampler see it
            lag_s, gap = sampler.lags()
            chunks = sum(o.chunks for o in report.outcomes)
            print(f"## bulk ingest: {len(docs)} documents, {chunks} chunks in {ingest_s:.1f} s")
            print(
                f"replica lag: max {max(lag_s):.2f} s, p95 {_pct(lag_s, 95):.2f} s, "
                f"mean {statistics.mean(lag_s):.2f} s; byte gap max "
                f"{max(gap) / 1e6:.1f} MB over {len(lag_s)} samples"
            )

            queries = _queries("scifact", args.queries)
            rows = []
            for label, extra in (
                ("primary only", {}),
                ("reads on the standby", {"RAGSTORE_READ_DATABASE_URLS": node.conninfo}),
            ):
                env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
                env.update(
                    {
                        "RAGSTORE_DATABASE_URL": primary_url,
                        "RAGSTORE_AUTH": "off",
                        "RAGSTORE_DATA_DIR": str(root / "data"),
                        "RAGSTORE_LOG_LEVEL": "warning",
                        **extra,
                    }
                )
                port = _free_port()
                server = _serve(env, port, root / f"serve-{port}.log")
                try:
                    url = f"http://127.0.0.1:{port}"
                    _load(url, queries, args.clients, 3.0)  # warm: cache the embeddings
                    n, lat, served, errors = _load(url, queries, args.clients, args.seconds)
                finally:
                    server.terminate()
                    server.wait(timeout=60)
                rows.append(
                    (
                        label,
                        n,
                        n / args.seconds,
                        1000 * _pct(lat, 50),
                        1000 * _pct(lat, 95),
                        dict(served),
                        errors,
                    )
                )
            print(f"\n## search, {args.clients} clients, {args.seconds:g} s, repeated queries")
            print("| reads | requests | req/s | p50 ms | p95 ms | served by | errors |")
            print("|---|---:|---:|---:|---:|---|---:|")
            for label, n, rps, p50, p95, served_by, errors in rows:
                print(
                    f"| {label} | {n} | {rps:.1f} | {p50:.1f} | {p95:.1f} | "
                    f"{served_by} | {errors} |"
                )
            print(f"\nratio (standby / primary only): {rows[1][2] / rows[0][2]:.2f}")
        finally:
            node.remove()
            embedded.stop(root / "primary")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
