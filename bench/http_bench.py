"""HTTP API throughput: search requests/s with p50/p99 latency at 1, 8 and 32 concurrent
clients, and ingest throughput through the API against the CLI.

Everything runs on loopback: a `ragstore serve` subprocess (auth off) on a fresh embedded
database in a temporary data dir, load from threads of this process, each level bounded
in time. Corpus and queries come from a BEIR data set in ../shared/data.

    python -m bench.http_bench --docs 300 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from ragstore import Client

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _corpus(dataset: str, n: int, out: Path) -> list[Path]:
    paths = []
    with open(DATA / dataset / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = f"# {row.get('title') or row['_id']}\n\n{row['text']}\n"
            path = out / f"d{row['_id']}.md"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
            if len(paths) >= n:
                break
    return paths


def _queries(dataset: str, n: int) -> list[str]:
    out = []
    with open(DATA / dataset / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready")


def _variant(text: str, n: int) -> str:
    """The n-th spelling of a query: letter case flipped at positions that spell ``n`` in
    binary. The model is uncased and full-text search folds case, so every variant finds the
    same hits, but none is served from the server's query-embedding cache."""
    chars = list(text)
    letters = [i for i, ch in enumerate(chars) if ch.isalpha()]
    bit = 0
    while n and bit < len(letters):
        if n & 1:
            i = letters[bit]
            chars[i] = chars[i].swapcase()
        n >>= 1
        bit += 1
    return "".join(chars)


def _load(
    url: str,
    collection: str,
    queries: list[str],
    clients: int,
    seconds: float,
    mode: str | None,
    *,
    fresh: bool = True,
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    counter = iter(range(1, 1 << 40))

    def _next() -> int:
        with lock:
            return next(counter)

    def worker(offset: int) -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        body: dict[str, object] = {"k": 10}
        if mode:
            body["mode"] = mode
        with httpx.Client(base_url=url, timeout=60) as http:
            i = offset
            while time.monotonic() < stop:
                q = queries[i % len(queries)]
                body["query"] = _variant(q, _next()) if fresh else q
                i += clients
                t0 = time.perf_counter()
                r = http.post(f"/v1/collections/{collection}/search", json=body)
                mine.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15.0, help="Per concurrency level.")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--batch", type=int, default=25, help="Files per upload request.")
    ap.add_argument("--mode", default=None, help="Search mode (server default if unset).")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ragstore-http-bench-") as tmp:
        root = Path(tmp)
        (root / "corpus").mkdir()
        files = _corpus(args.dataset, args.docs, root / "corpus")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
        env.update(
            {
                "RAGSTORE_DATA_DIR": str(root / "data"),
                "RAGSTORE_AUTH": "off",
                "RAGSTORE_LOG_LEVEL": "warning",
                "HF_HUB_OFFLINE": "1",
                "RAGSTORE_BACKGROUND_INGEST_BYTES": str(1 << 30),
                "RAGSTORE_RATE_LIMIT_PER_MINUTE": "0",
            }
        )
        port = _free_port()
        server = _serve(env, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with Client(url, timeout=600) as c:
                c.create_collection("api")
                t0 = time.perf_counter()
                chunks = 0
                for i in range(0, len(files), args.batch):
                    batch = [(p.name, p.read_bytes()) for p in files[i : i + args.batch]]
                    chunks += sum(d["chunks"] for d in c.upload("api", batch)["data"])
                api_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from ragstore.cli import main; main()",
                    "ingest",
                    str(root / "corpus"),
                    "--collection",
                    "cli",
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            cli_s = time.perf_counter() - t0
            print(
                f"ingest {len(files)} docs / {chunks} chunks: API {api_s:.1f}s "
                f"({len(files) / api_s:.1f} docs/s, {chunks / api_s:.0f} chunks/s); "
                f"CLI {cli_s:.1f}s ({len(files) / cli_s:.1f} docs/s, {chunks / cli_s:.0f} "
                "chunks/s, process start and model load included)"
            )
            queries = _queries(args.dataset, args.queries)
            _load(url, "api", queries, 1, min(3.0, args.seconds), args.mode)  # warm-up
            print("| queries | clients | requests | req/s | p50 ms | p99 ms | errors |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for fresh in (True, False):
                kind = "distinct (embedded)" if fresh else "repeated (cached)"
                for n in (int(x) for x in args.clients.split(",")):
                    r = _load(url, "api", queries, n, args.seconds, args.mode, fresh=fresh)
                    print(
                        f"| {kind} | {n} | {r['requests']:.0f} | {r['rps']:.1f} | "
                        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |"
                    )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
