"""Soak: the embedded PostgreSQL SIGKILLed at random moments under a real ``ragstore serve``
(and a ``ragstore worker``) taking uploads, text batches, deletes and background jobs over
HTTP; after each kill it checks that every write answered 2xx is stored whole, every other
one whole or absent, every refusal a 503 ``database_unavailable`` problem+json with
Retry-After, /readyz not ready while the database is away, the server back on its own,
every queued job finished, a retry of each refused write answered 2xx, and ``ragstore db
check`` clean. Not run by CI (tests/reliability/test_db_down.py holds the short version).

    python bench/crash_soak.py --kills 5 --workers 2 --seed 1

Exits 1 and prints what broke at the first failed check; each round's data folder stays
under ``--dir`` for a look.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

CLI = [sys.executable, "-c", "from ragstore.cli import main; main()"]
WORDS = ["alpha", "beta", "gamma", "delta", "rollback", "postgres", "vector", "index"]


def _text(rnd: random.Random, n: int) -> str:
    return "\n\n".join(
        f"Section {n} paragraph {j}: " + " ".join(rnd.choice(WORDS) for _ in range(60))
        for j in range(12)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"ragstore serve exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready in {limit:.0f}s")
        time.sleep(0.3)


def _documents(h: httpx.Client) -> dict[str, dict[str, object]]:
    docs: dict[str, dict[str, object]] = {}
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = h.get("/v1/collections/c/documents", params=params).json()
        docs.update({d["name"]: d for d in page["data"]})
        if not (cursor := page.get("next_cursor")):
            return docs


def round_(base: Path, seed: int, workers: int, writers: int) -> list[str]:
    """One server, one kill; the list of what broke (empty: all held)."""
    rnd = random.Random(seed)
    base.mkdir(parents=True)
    env = {
        **os.environ,
        "RAGSTORE_DATA_DIR": str(base / "data"),
        "RAGSTORE_PROFILE": "test",
        "RAGSTORE_AUTH": "off",
        "TMPDIR": str(base),
    }
    env.pop("RAGSTORE_DATABASE_URL", None)
    env.pop("RAGSTORE_URL", None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (base / "serve.log").open("wb") as log, (base / "worker.log").open("wb") as wlog:
        serve = subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = None
        broke: list[str] = []
        try:
            _wait_ready(url, serve, 300)
            worker = subprocess.Popen(
                [*CLI, "worker"], env=env, stdout=wlog, stderr=subprocess.STDOUT
            )
            broke = _kill_and_check(base, url, rnd, writers, env)
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=120)
    check = subprocess.run([*CLI, "db", "check"], env=env, capture_output=True, text=True)
    if check.returncode != 0:
        broke.append(f"db check exited {check.returncode}: {check.stdout[-2000:]}")
    subprocess.run([*CLI, "db", "stop"], env=env, capture_output=True)
    return broke


def _kill_and_check(
    base: Path, url: str, rnd: random.Random, writers: int, env: dict[str, str]
) -> list[str]:
    broke: list[str] = []
    h = httpx.Client(base_url=url, timeout=300)
    assert h.post("/v1/collections", json={"name": "c"}).status_code == 201
    answers: list[tuple[str, str, int, str, dict[str, str]]] = []
    stop = threading.Event()

    def write(wid: int) -> None:
        for i in range(1, 10**9):
            if stop.is_set():
                return
            key, op = f"w{wid}-{i}", ("upload", "texts", "delete", "doc", "bg")[i % 5]
            try:
                if op == "upload":
                    body = _text(rnd, i).encode()
                    files = [("files", (f"{key}.md", body, "text/markdown"))]
                    r = h.post("/v1/collections/c/documents/upload", files=files)
                elif op in ("doc", "bg"):
                    doc = {"name": f"{key}.md", "text": _text(rnd, i), "background": op == "bg"}
                    r = h.post("/v1/collections/c/documents", json=doc)
                elif op == "texts":
                    pair = [_text(rnd, i)[:800], _text(rnd, i + 1)[:800]]
                    r = h.post(
                        "/v1/collections/c/texts",
                        json={"texts": pair, "ids": [f"{key}-a", f"{key}-b"]},
                    )
                else:
                    key = f"w{wid}-{i - 1}-a"  # this writer's last text batch
                    r = h.post("/v1/collections/c/texts/delete", json={"ids": [key]})
            except httpx.HTTPError as exc:
                broke.append(f"{op} {key}: {exc!r} (no answer)")
                continue
            answers.append((op, key, r.status_code, r.text, dict(r.headers)))
            if not r.is_success:
                stop.wait(0.2)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    try:
        time.sleep(rnd.uniform(3, 12))
        pid = int((base / "data" / "pg" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        ready = h.get("/readyz")
        if ready.status_code != 503:
            broke.append(f"/readyz answered {ready.status_code} just after the kill")
        while h.get("/readyz").status_code != 200:
            if time.monotonic() - killed > 120:
                broke.append("the server was not ready again 120 s after the kill")
                return broke
            time.sleep(0.5)
        print(f"  ready again {time.monotonic() - killed:.1f}s after the kill", flush=True)
        time.sleep(3)  # writes after the return
    finally:
        stop.set()
        for t in threads:
            t.join()
    print("  answers:", dict(Counter((a[0], a[2]) for a in answers)), flush=True)
    for op, key, st, text, headers in answers:
        if st < 300:
            continue
        if (
            st != 503
            or "database_unavailable" not in text
            or "Retry-After" not in {k.title() for k in headers}
        ):
            broke.append(f"{op} {key}: {st} {text[:300]}")
    (base / "answers.json").write_text(json.dumps([a[:4] for a in answers]))
    deadline = time.monotonic() + 300
    while True:
        jobs = h.get("/v1/jobs", params={"limit": 100}).json()["data"]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            break
        if time.monotonic() > deadline:
            broke.append(f"jobs not finished: {Counter(j['status'] for j in jobs)}")
            break
        time.sleep(1)
    broke += [
        f"job {j['id']} {j['status']}: {j['errors']}" for j in jobs if j["status"] != "succeeded"
    ]
    docs = _documents(h)
    for op, key, st, _, _ in answers:
        if op in ("upload", "doc", "bg") and st < 300 and f"{key}.md" not in docs:
            broke.append(f"{op} {key} answered {st} but is not stored")
    if [n for n, d in docs.items() if not d["chunks"]]:
        broke.append(f"documents without chunks: {[n for n, d in docs.items() if not d['chunks']]}")
    tried = {key for op, key, *_ in answers if op == "delete"}
    gone = {key for op, key, st, *_ in answers if op == "delete" and st < 300}
    batches = [(key, st) for op, key, st, *_ in answers if op == "texts"]
    ids = [f"{k}-{s}" for k, _ in batches for s in "ab"]
    stored = {
        t["id"] for t in h.post("/v1/collections/c/texts/get", json={"ids": ids}).json()["data"]
    }
    for key, st in batches:
        pair = {f"{key}-a", f"{key}-b"} - tried
        if st < 300 and not pair <= stored:
            broke.append(f"texts {key} answered {st} but {pair - stored} not stored")
        if st >= 300 and pair & stored and not pair <= stored:
            broke.append(f"texts {key}: half of a refused batch stored")
    if gone & stored:
        broke.append(f"deleted but stored: {gone & stored}")
    for op, key, st, *_ in answers[-6:]:  # a retry of a refused write is answered 2xx
        if st == 503 and op in ("upload", "doc"):
            r = h.post("/v1/collections/c/documents", json={"name": f"{key}.md", "text": "retry"})
            if not r.is_success:
                broke.append(f"retry of {op} {key}: {r.status_code} {r.text[:200]}")
    return broke


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=3, help="rounds: a fresh server, one kill each")
    ap.add_argument("--workers", type=int, default=2, help="`ragstore serve --workers`")
    ap.add_argument("--writers", type=int, default=3, help="client threads writing")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where each round's data stays")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="ragstore-crash-soak-"))
    for n in range(args.kills):
        print(f"round {n + 1}/{args.kills} (seed {args.seed + n}) under {root}", flush=True)
        broke = round_(root / f"round-{n}", args.seed + n, args.workers, args.writers)
        if broke:
            print("BROKE:\n  " + "\n  ".join(broke))
            return 1
        print("  held", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
