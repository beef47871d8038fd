"""Web console latency: how long each /ui page takes to answer on a 10k-chunk collection.

A page of the console is its HTML shell plus the JSON requests its script makes on load
(the key check, the collection's statistics, a page of documents, a document's chunks, the
models...). Each round loads every page the way the script does: the shell, then each of
its API requests one after another (a browser runs some in parallel, so the sum is an
upper bound), and the page's time is that sum. The search page is timed with one search
(hybrid, explain, section context), its main action, with a new query text each time so
the server's query-embedding cache never answers it.

Then the same pages in headless Chromium (Debian's, as in the tests): milliseconds from
navigation start until the script has rendered the data, and from pressing Search until
the hits are on screen. That includes the browser's own work, so on a busy machine it
says as much about the machine as about the server.

Everything runs on loopback: a ``ragstore serve`` subprocess (auth on, with a key) on a
fresh embedded database in a temporary data dir; the collection is built through the
upload API from generated markdown (sections of short paragraphs) until it holds at least
the asked-for number of chunks, and no data set is needed.

    python -m bench.console_bench --chunks 10000 --rounds 30 --browser-rounds 10
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

TARGET_MS = 200.0
CHROMIUM = "/usr/bin/chromium"
WORDS = (
    "backup",
    "restore",
    "rollback",
    "index",
    "vector",
    "search",
    "chunk",
    "model",
    "migration",
    "replica",
    "upload",
    "document",
    "section",
    "heading",
    "query",
    "filter",
    "latency",
    "cache",
    "worker",
    "job",
    "key",
    "scope",
    "token",
    "embedding",
    "schema",
    "table",
    "postgres",
    "shard",
    "ingest",
    "parse",
    "fusion",
    "rank",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _document(n: int, sections: int) -> str:
    """A markdown document: a title, then per section a heading and two short paragraphs."""
    parts = [f"# Handbook {n}\n"]
    for s in range(sections):
        w = [WORDS[(n * 7 + s * 3 + i) % len(WORDS)] for i in range(12)]
        parts.append(
            f"\n## Section {s}: {w[0]} and {w[1]}\n\n"
            f"How to {' '.join(w[2:7])} in handbook {n}.\n\n"
            f"Then {' '.join(w[7:12])} before section {s + 1}.\n"
        )
    return "".join(parts)


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
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
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start; see {log}")


def _key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "keys",
            "create",
            "--scope",
            "admin",
            "--name",
            "bench",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(w for w in out.split() if w.startswith("rsk_"))


def _build(c: httpx.Client, chunks: int, batch: int) -> tuple[int, int]:
    """Collection ``big`` with at least ``chunks`` chunks; (documents, chunks) stored.

    Documents are uploaded a batch at a time until the stored chunk count reaches the
    target: how many chunks a document gives is the chunker's business (it packs short
    sections together), so the count is read back rather than predicted."""
    sections = 33
    assert c.post("/v1/collections", json={"name": "big"}).status_code == 201
    stored = docs = 0
    while stored < chunks:
        part = [
            ("files", (f"h{n:05d}.md", _document(n, sections).encode()))
            for n in range(docs, docs + batch)
        ]
        r = c.post("/v1/collections/big/documents/upload", files=part)
        r.raise_for_status()
        stored += sum(d["chunks"] for d in r.json()["data"])
        docs += batch
    return docs, stored


Step = Callable[[httpx.Client], httpx.Response]


def _pages(c: httpx.Client) -> dict[str, list[tuple[str, Step]]]:
    docs = c.get("/v1/collections/big/documents", params={"limit": 1}).json()["data"]
    doc = docs[0]["id"]
    searches = iter(range(1 << 30))

    def search(cl: httpx.Client) -> httpx.Response:
        """A new query text each time: the server's query-embedding cache never answers."""
        return cl.post(
            "/v1/collections/big/search",
            json={
                "query": f"how to restore a backup after rollback {next(searches)}",
                "mode": "hybrid",
                "k": 10,
                "explain": True,
                "context": "section",
            },
        )

    def get(path: str) -> tuple[str, Step]:
        return path, lambda cl: cl.get(path)

    me = get("/v1/me")
    return {
        "collections": [
            get("/ui/collections"),
            me,
            get("/v1/collections"),
            get("/v1/collections/big/stats"),
        ],
        "collection": [
            get("/ui/collections/big"),
            me,
            get("/v1/collections/big/stats"),
            get("/v1/jobs?limit=20&collection=big"),
            get("/v1/collections/big/documents?limit=50"),
        ],
        "document": [
            get(f"/ui/collections/big/documents/{doc}"),
            me,
            get(f"/v1/collections/big/documents/{doc}"),
            get(f"/v1/collections/big/documents/{doc}/chunks?limit=500"),
        ],
        "search": [get("/ui/collections/big/search"), me, ("POST search", search)],
        "models": [
            get("/ui/models"),
            me,
            get("/v1/models"),
            get("/v1/collections"),
            get("/v1/collections/big/stats"),
        ],
    }


def _browser(url: str, key: str, rounds: int, doc: int) -> dict[str, list[float]]:
    """Each page in headless Chromium: ms from navigation start until its script has
    rendered the data (``body[data-ready]``); the search page also submits one search."""
    from playwright.sync_api import sync_playwright

    paths = {
        "collections": "/ui/collections",
        "collection": "/ui/collections/big",
        "document": f"/ui/collections/big/documents/{doc}",
        "search": "/ui/collections/big/search",
        "models": "/ui/models",
    }
    times: dict[str, list[float]] = {name: [] for name in [*paths, "search (submit)"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(f"{url}/ui/login")
        page.fill("#api-key", key)
        page.click("#sign-in")
        page.wait_for_selector("body[data-ready=true]")
        for i in range(rounds + 1):  # the first round warms the browser's caches
            for name, path in paths.items():
                page.goto(url + path)
                page.wait_for_selector("body[data-ready=true]", timeout=60_000)
                ms = float(page.evaluate("performance.now()"))
                if i:
                    times[name].append(ms)
            page.goto(url + paths["search"])
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            page.fill("#q", f"which backup to restore in round {i} of the browser")
            t = time.perf_counter()
            page.click("#search-submit")
            page.wait_for_selector("#hits-body tr", timeout=60_000)
            if i:
                times["search (submit)"].append((time.perf_counter() - t) * 1000)
        browser.close()
    return times


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=10, help="Files per upload request.")
    ap.add_argument(
        "--browser-rounds", type=int, default=10, help="Rounds in headless Chromium (0: skip)."
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
        env.update(
            {
                "RAGSTORE_DATA_DIR": str(root / "data"),
                "RAGSTORE_AUTH": "on",
                "RAGSTORE_BACKGROUND_INGEST_BYTES": str(1 << 30),
                "RAGSTORE_LOG_LEVEL": "warning",
                "RAGSTORE_RATE_LIMIT_PER_MINUTE": "100000",
            }
        )
        port = _free_port()
        server = _serve(env, port, root / "serve.log")
        try:
            key = _key(env)
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=600,
                headers={"Authorization": f"Bearer {key}"},
            ) as c:
                t0 = time.perf_counter()
                docs, chunks = _build(c, args.chunks, args.batch)
                print(
                    f"built: {docs} documents, {chunks} chunks in {time.perf_counter() - t0:.0f} s"
                )
                pages = _pages(c)
                for steps in pages.values():  # warm: first request of each route
                    for _, step in steps:
                        step(c).raise_for_status()
                times: dict[str, list[float]] = {name: [] for name in pages}
                slowest: dict[str, dict[str, float]] = {name: {} for name in pages}
                for _ in range(args.rounds):
                    for name, steps in pages.items():
                        total = 0.0
                        for label, step in steps:
                            t = time.perf_counter()
                            step(c).raise_for_status()
                            ms = (time.perf_counter() - t) * 1000
                            total += ms
                            slowest[name][label] = max(slowest[name].get(label, 0.0), ms)
                        times[name].append(total)
                doc = int(
                    c.get("/v1/collections/big/documents", params={"limit": 1}).json()["data"][0][
                        "id"
                    ]
                )
            in_browser = (
                _browser(f"http://127.0.0.1:{port}", key, args.browser_rounds, doc)
                if args.browser_rounds
                else {}
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(
        f"\n{args.rounds} rounds on {chunks} chunks; page = shell + its API requests, "
        "sequential (ms)"
    )
    print(f"{'page':<12} {'requests':>8} {'p50':>8} {'p95':>8} {'max':>8}  slowest request")
    worst = 0.0
    for name, values in times.items():
        p95 = _p95(values)
        worst = max(worst, p95)
        label, ms = max(slowest[name].items(), key=lambda kv: kv[1])
        print(
            f"{name:<12} {len(pages[name]):>8} {statistics.median(values):>8.1f} "
            f"{p95:>8.1f} {max(values):>8.1f}  {label} (max {ms:.1f})"
        )
    if in_browser:
        print(
            f"\n{args.browser_rounds} rounds in headless Chromium: navigation start to data "
            "rendered (ms)"
        )
        print(f"{'page':<16} {'p50':>8} {'p95':>8} {'max':>8}")
        for name, values in in_browser.items():
            p95 = _p95(values)
            print(f"{name:<16} {statistics.median(values):>8.1f} {p95:>8.1f} {max(values):>8.1f}")
    print(
        f"\nserver answers, worst page p95 {worst:.1f} ms: "
        f"{'meets' if worst <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target"
    )
    if in_browser:
        rendered = max(_p95(v) for v in in_browser.values())
        print(
            f"in the browser, worst p95 {rendered:.1f} ms: "
            f"{'meets' if rendered <= TARGET_MS else 'MISSES'} the {TARGET_MS:.0f} ms target"
        )


if __name__ == "__main__":
    main()
