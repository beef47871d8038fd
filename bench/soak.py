"""Soak: mixed load against two `ragstore serve` processes and two workers on one database.

For ``--duration`` seconds, ``--clients`` threads spread over both servers add new documents,
rewrite a small set of *hot* documents (the same names from every client, so writes of one
document race), search, delete documents they added, and hand some adds to the workers
(``background``). Every answer is recorded. At the end:

* no answer was a 5xx;
* every acknowledgement describes what it stored (its ``content_hash`` is the hash of the
  text that request sent);
* every hot document holds the text of an acknowledged write that nothing acknowledged
  later could have overwritten (the last write wins, by acknowledgement order);
* every added document that was not deleted is stored with its acknowledged hash, every
  deleted one is gone, and the collection's count is exactly that;
* every background job succeeded and its documents are stored.

With ``--faults SECONDS`` a thread hurts the service every that many seconds while the
clients run, taking turns: every other session's connection ended
(``pg_terminate_backend``, as a failover or an administrator does), the embedded
postmaster killed with SIGKILL (a crash; the servers start it again), and a worker killed
with SIGKILL in whatever job it runs and a new one started in its place (its job is
retried once its heartbeat is stale; the workers run with
``RAGSTORE_WORKER_MAX_ATTEMPTS=20``, as a job whose fresh workers are killed three times
while they load the model would otherwise be given up, honestly, as ``worker_lost``).
The checks then allow what a fault may honestly cause and nothing more:

* an answer is 201/202/204, a 4xx refusal, or a 503 problem (``database_unavailable``);
  any other 5xx, or a connection the server dropped without an answer, is a problem;
* a write answered 503 has an unknown outcome: its document may be stored (with the hash
  of the text it sent) or not; a 4xx refusal stored nothing;
* an acknowledged write is stored after every fault, and a hot document holds an
  acknowledged write that nothing acknowledged later overwrote, or a write of unknown
  outcome that ended after the last acknowledged one began;
* every job answered 202 ends ``succeeded`` with its documents stored, faults or not.

Throughput and p99 latency per operation go to stdout (and ``--json``). Usage::

    python -m bench.soak --duration 600            # the 10-minute run in docs/benchmarks.md
    python -m bench.soak --duration 60 --clients 6 # a quick look
    python -m bench.soak --duration 180 --faults 10 # connections ended, postmaster killed
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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

COLLECTION = "soak"
WORDS = [
    "kitten",
    "orbit",
    "ledger",
    "granite",
    "harbor",
    "violin",
    "meadow",
    "copper",
    "lantern",
    "signal",
    "cipher",
    "thunder",
    "saffron",
    "glacier",
    "compass",
    "falcon",
    "prism",
    "willow",
    "ember",
    "quartz",
]


@dataclass
class Write:
    name: str
    digest: str
    start: float
    end: float
    status: int
    acked_hash: str | None
    doc_id: int | None


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    hot: list[Write] = field(default_factory=list)
    added: dict[str, Write] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    jobs: list[tuple[int, list[str], dict[str, str]]] = field(default_factory=list)
    bad_acks: list[str] = field(default_factory=list)
    errors_5xx: list[str] = field(default_factory=list)
    # writes whose answer was 503 or none: stored or not, either is honest
    unknown: list[Write] = field(default_factory=list)
    refused: list[Write] = field(default_factory=list)
    unknown_deletes: set[str] = field(default_factory=set)
    faults: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    allow_503: bool = False

    def note(self, op: str, seconds: float, status: int, body: str) -> None:
        with self.lock:
            self.latencies[op].append(seconds)
            self.statuses[op][status] += 1
            if status == 503 and self.allow_503 and '"database_unavailable"' in body:
                return
            if status >= 500 or status == 0:
                self.errors_5xx.append(f"{op} {status}: {body[:300]}")


def _text(rng: random.Random, tag: str) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 160)))
    return f"# {tag}\n\n{words}\n\n## Notes\n\n{tag} {rng.random()}\n"


def _sha(text: str) -> str:
    """The content hash the server stores for this text (see chunking.document_hash)."""
    from ragstore.chunking.chunker import document_hash

    return document_hash(text.encode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-c", "from ragstore.cli import main; main()", *args],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a killed worker's parse workers go with it (killpg)
    )


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise SystemExit(f"server {url} not ready after {timeout}s")


class Client(threading.Thread):
    def __init__(
        self, i: int, urls: list[str], rec: Record, until: float, hot_names: list[str]
    ) -> None:
        super().__init__(name=f"client-{i}", daemon=True)
        self.i = i
        self.urls = urls
        self.rec = rec
        self.until = until
        self.hot_names = hot_names
        self.rng = random.Random(i)
        self.mine: list[tuple[str, int]] = []
        self.seq = 0

    def call(
        self, op: str, method: str, path: str, **kw: Any
    ) -> tuple[httpx.Response, float, float]:
        url = self.rng.choice(self.urls)
        t0 = time.monotonic()
        try:
            r = self.http.request(method, f"{url}{path}", **kw)
        except httpx.TransportError as exc:  # no answer at all: status 0
            r = httpx.Response(0, text=f"{type(exc).__name__}: {exc}")
        t1 = time.monotonic()
        self.rec.note(op, t1 - t0, r.status_code, r.text)
        if r.status_code == 503:
            # as a client should: wait what the answer asks (at most 2 s), rather than
            # count thousands of fast refusals while the database comes back
            time.sleep(min(2.0, float(r.headers.get("Retry-After", "1") or 1)))
        return r, t0, t1

    def add(self, name: str, text: str, background: bool = False, op: str = "add") -> Write:
        r, t0, t1 = self.call(
            "add_bg" if background else op,
            "POST",
            f"/v1/collections/{COLLECTION}/documents",
            json={"name": name, "text": text, "background": background},
        )
        body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
        w = Write(
            name,
            _sha(text),
            t0,
            t1,
            r.status_code,
            body.get("content_hash") if r.status_code == 201 else None,
            body.get("id") if r.status_code == 201 else None,
        )
        if r.status_code == 201 and w.acked_hash != w.digest:
            with self.rec.lock:
                self.rec.bad_acks.append(
                    f"{name}: sent {w.digest[:12]}, acknowledged {str(w.acked_hash)[:12]}"
                )
        if background and r.status_code == 202:
            with self.rec.lock:
                self.rec.jobs.append((int(body["id"]), [name], {name: w.digest}))
        elif r.status_code == 0 or r.status_code >= 500:
            with self.rec.lock:
                self.rec.unknown.append(w)
        elif 400 <= r.status_code < 500 and op == "add":
            with self.rec.lock:
                self.rec.refused.append(w)
        return w

    def run(self) -> None:
        with httpx.Client(timeout=120) as self.http:
            while time.monotonic() < self.until:
                roll = self.rng.random()
                if roll < 0.25:
                    self.seq += 1
                    name = f"c{self.i}/doc-{self.seq}.md"
                    w = self.add(name, _text(self.rng, name))
                    if w.status == 201:
                        with self.rec.lock:
                            self.rec.added[name] = w
                        self.mine.append((name, int(w.doc_id or 0)))
                elif roll < 0.50:
                    name = self.rng.choice(self.hot_names)
                    w = self.add(name, _text(self.rng, f"{name} by {self.i}"), op="update")
                    with self.rec.lock:
                        self.rec.hot.append(w)
                elif roll < 0.85:
                    self.call(
                        "search",
                        "POST",
                        f"/v1/collections/{COLLECTION}/search",
                        json={"query": " ".join(self.rng.sample(WORDS, 3)), "k": 5},
                    )
                elif roll < 0.95 and self.mine:
                    name, doc_id = self.mine.pop(self.rng.randrange(len(self.mine)))
                    r, _, _ = self.call(
                        "delete", "DELETE", f"/v1/collections/{COLLECTION}/documents/{doc_id}"
                    )
                    if r.status_code == 204:
                        with self.rec.lock:
                            self.rec.deleted.add(name)
                    elif r.status_code == 0 or r.status_code >= 500:
                        with self.rec.lock:
                            self.rec.unknown_deletes.add(name)
                else:
                    self.seq += 1
                    name = f"c{self.i}/bg-{self.seq}.md"
                    self.add(name, _text(self.rng, name), background=True)


def _get(h: httpx.Client, url: str, **kw: Any) -> Any:
    """GET ``url``'s JSON, waiting out 503s for a minute (the database coming back after
    the last fault)."""
    deadline = time.monotonic() + 60
    while True:
        r = h.get(url, **kw)
        if r.status_code != 503 or time.monotonic() > deadline:
            r.raise_for_status()
            return r.json()
        time.sleep(1)


def _stored(url: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    with httpx.Client(timeout=120) as h:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = _get(h, f"{url}/v1/collections/{COLLECTION}/documents", params=params)
            for d in page["data"]:
                out[d["name"]] = d
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def verify(url: str, rec: Record) -> list[str]:
    """Every check of the module docstring; the list of what is wrong (empty: all held)."""
    problems = list(rec.errors_5xx[:20]) + list(rec.bad_acks[:20])
    with httpx.Client(timeout=120) as h:
        for job_id, names, _ in rec.jobs:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                job = _get(h, f"{url}/v1/jobs/{job_id}")
                if job["status"] in ("succeeded", "failed"):
                    break
                time.sleep(1)
            if job["status"] != "succeeded":
                problems.append(
                    f"job {job_id} ({names}) ended {job['status']}: {job.get('errors')}"
                )
        stored = _stored(url)
        count = _get(h, f"{url}/v1/collections/{COLLECTION}")["documents"]
    expected: dict[str, str] = {}
    for name, w in rec.added.items():
        if name not in rec.deleted:
            expected[name] = w.digest
    for _, _, digests in rec.jobs:
        expected.update(digests)
    hot_names = {w.name for w in rec.hot}
    by_name: dict[str, list[Write]] = defaultdict(list)
    unknown_hot: dict[str, list[Write]] = defaultdict(list)
    for w in rec.hot:
        if w.status == 201:
            by_name[w.name].append(w)
        elif w.status == 0 or w.status >= 500:
            unknown_hot[w.name].append(w)
    for name in hot_names:
        writes = by_name.get(name, [])
        # candidates: acked writes that no other acked write started after they ended,
        # and writes of unknown outcome that were still running when the last began
        latest_start = max((w.start for w in writes), default=float("-inf"))
        candidates: set[str | None] = {w.digest for w in writes if w.end >= latest_start}
        candidates |= {w.digest for w in unknown_hot.get(name, []) if w.end >= latest_start}
        if not writes:
            candidates.add(None)  # nothing acknowledged: absent is honest too
        got = stored.get(name, {}).get("content_hash")
        if got not in candidates:
            problems.append(
                f"hot {name}: stores {str(got)[:12]}, not one of the "
                f"{len(candidates)} writes that could be last"
            )
    for name, digest in expected.items():
        got = stored.get(name, {}).get("content_hash")
        if got != digest:
            problems.append(f"{name}: stores {str(got)[:12]}, acknowledged {digest[:12]}")
    for name in rec.deleted:
        if name in stored:
            problems.append(f"{name}: deleted (204) but still stored")
    for w in rec.refused:
        if w.name in stored:
            problems.append(f"{w.name}: refused ({w.status}) but stored")
    maybe: dict[str, str] = {}
    for w in rec.unknown:
        if w.name not in hot_names:
            maybe[w.name] = w.digest
    for name in rec.unknown_deletes:
        if name in expected:
            maybe[name] = expected.pop(name)
    for name, digest in maybe.items():
        got = stored.get(name, {}).get("content_hash")
        if got is not None and got != digest:
            problems.append(f"{name}: stores {got[:12]}, its unanswered write sent {digest[:12]}")
    extra = set(stored) - set(expected) - hot_names - set(maybe)
    missing = set(expected) - set(stored)
    if extra or missing or count != len(stored):
        problems.append(
            f"count: listed {len(stored)}, collection says {count}; stored without an "
            f"acknowledgement {sorted(extra)[:5]}, acknowledged but missing {sorted(missing)[:5]}"
        )
    return problems


def _fault_misses() -> tuple[type[BaseException], ...]:
    """What a fault may fail with while the database is still down from the last one (its
    connection refused, the embedded server not started again yet) or a worker is slow to
    die: noted, and the next fault comes on time; anything else surfaces."""
    import psycopg

    from ragstore.errors import RagstoreError

    return (psycopg.Error, RagstoreError, OSError, subprocess.TimeoutExpired)


FAULT_MISSES = _fault_misses()


class Faults(threading.Thread):
    """Hurts the service every ``every`` seconds until ``until``: every other session's
    connection ended, the postmaster killed (SIGKILL), a worker killed and replaced, in
    turn."""

    KINDS = ("terminate", "kill", "worker")

    def __init__(
        self,
        data_dir: Path,
        rec: Record,
        every: float,
        until: float,
        workers: list[subprocess.Popen[bytes]],
        start_worker: Callable[[int], subprocess.Popen[bytes]],
    ) -> None:
        super().__init__(name="faults", daemon=True)
        self.data_dir = data_dir
        self.rec = rec
        self.every = every
        self.until = until
        self.workers = workers
        self.start_worker = start_worker
        self.replaced = 0

    def replace_worker(self) -> int:
        """SIGKILL one worker (in turn) and start a new one in its place; its pid."""
        slot = self.replaced % len(self.workers)
        old = self.workers[slot]
        os.killpg(old.pid, signal.SIGKILL)  # its parse workers too
        old.wait(timeout=30)
        self.replaced += 1
        self.workers[slot] = self.start_worker(self.replaced + 1)  # soak-0, -1 were first
        return old.pid

    def terminate_all(self) -> int:
        import psycopg

        from ragstore.db import embedded

        uri = embedded.start(self.data_dir)
        with psycopg.connect(uri, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return len(rows)

    def kill_postmaster(self) -> int:
        pid_file = self.data_dir / "pg" / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            return 0
        return pid

    def run(self) -> None:
        turn = 0
        while time.monotonic() + self.every < self.until:
            time.sleep(self.every)
            kind = self.KINDS[turn % len(self.KINDS)]
            turn += 1
            try:
                if kind == "terminate":
                    done = self.terminate_all()
                elif kind == "kill":
                    done = self.kill_postmaster()
                else:
                    done = self.replace_worker()
            except FAULT_MISSES as exc:  # the database still down from the last one: go on
                with self.rec.lock:
                    self.rec.faults[f"{kind} failed: {type(exc).__name__}"] += 1
                continue
            with self.rec.lock:
                self.rec.faults[kind] += 1
                if kind == "terminate":
                    self.rec.faults["connections ended"] += done


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--hot", type=int, default=8, help="documents every client rewrites")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument(
        "--faults",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="end every connection, then kill the postmaster, in turn, this often",
    )
    args = ap.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ragstore-soak-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(data_dir),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_LOG_LEVEL": "warning",
            "RAGSTORE_RATE_LIMIT_PER_MINUTE": "0",
            "RAGSTORE_BACKGROUND_INGEST_BYTES": "1000000",
        }
    )
    if args.faults > 0:
        # a worker dies every third fault, far more often than the limit of attempts is
        # sized for (a job that kills its workers: three by default); a job whose workers
        # are killed three times while they load the model is given up as worker_lost,
        # which is honest, but the soak wants every job it was answered 202 for to end
        env["RAGSTORE_WORKER_MAX_ATTEMPTS"] = "20"
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(2):
            port = _free_port()
            procs.append(
                _start(
                    ["serve", "--host", "127.0.0.1", "--port", str(port)],
                    env,
                    data_dir / f"serve-{i}.log",
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            _wait_ready(urls[-1], procs[-1])  # one at a time: the first creates the schema

        def start_worker(i: int) -> subprocess.Popen[bytes]:
            return _start(["worker", "--name", f"soak-{i}"], env, data_dir / f"worker-{i}.log")

        workers = [start_worker(i) for i in range(2)]
        httpx.post(f"{urls[0]}/v1/collections", json={"name": COLLECTION}, timeout=60)
        rec = Record(allow_503=args.faults > 0)
        hot_names = [f"hot/doc-{i}.md" for i in range(args.hot)]
        t0 = time.monotonic()
        clients = [Client(i, urls, rec, t0 + args.duration, hot_names) for i in range(args.clients)]
        for c in clients:
            c.start()
        if args.faults > 0:
            faults = Faults(data_dir, rec, args.faults, t0 + args.duration, workers, start_worker)
            faults.start()
        for c in clients:
            c.join()
        elapsed = time.monotonic() - t0
        for number, proc in enumerate(procs + workers):
            if proc.poll() is not None:
                rec.errors_5xx.append(f"process {number}: exited {proc.returncode} during the run")
        problems = verify(urls[0], rec)
    finally:
        procs += workers
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(
            [sys.executable, "-c", "from ragstore.cli import main; main()", "db", "stop"],
            env=env,
            check=False,
            capture_output=True,
        )
    figures: dict[str, Any] = {
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "operations": {},
        "problems": problems,
        "faults": dict(rec.faults),
        "unknown_outcomes": len(rec.unknown) + len(rec.unknown_deletes),
    }
    print(f"soak: {elapsed:.0f}s, {args.clients} clients, 2 servers, 2 workers")
    if rec.faults:
        print(
            "faults:", dict(rec.faults), f"writes of unknown outcome: {figures['unknown_outcomes']}"
        )
    print(f"{'operation':<10} {'count':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for op, lat in sorted(rec.latencies.items()):
        row = {
            "count": len(lat),
            "per_s": round(len(lat) / elapsed, 2),
            "p50_ms": round(_p(lat, 0.5), 1),
            "p99_ms": round(_p(lat, 0.99), 1),
            "statuses": dict(rec.statuses[op]),
        }
        figures["operations"][op] = row
        print(
            f"{op:<10} {row['count']:>7} {row['per_s']:>7} {row['p50_ms']:>8} "
            f"{row['p99_ms']:>8}  {row['statuses']}"
        )
    print("checks:", "all held" if not problems else f"{len(problems)} problem(s)")
    for problem in problems[:40]:
        print("  -", problem)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
