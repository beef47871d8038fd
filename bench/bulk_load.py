"""Ingest without encode at scale: the bulk write path against round-by-round writes.

    python -m bench.bulk_load --chunks 20000 --incremental
    python -m bench.bulk_load --chunks 100000 --inprocess
    python -m bench.bulk_load --chunks 100000 --memory 256MB 1GB 256MB 1GB
    python -m bench.bulk_load --chunks 100000 --workers 0 1 1 0
    python -m bench.bulk_load --folder /tmp/prep/scifact   (a folder of your own files)
    python -m bench.bulk_load --chunks 10000 --delay-ms 100 --concurrency 1 4 1 4

The corpus and the model are those of ``bench.scale`` (SciFact, CISI and Cranfield records
recombined into Markdown files; the instant embedding server pinned as an HTTP model with
the MiniLM tokenizer, so chunking is real and encoding costs nothing). Each run ingests the
folder into a fresh data directory with ``ingest_paths`` as a first load: the bulk path
(the default threshold), and with ``--incremental`` again with it off
(``bulk_load_bytes=0``: one transaction per round, the BM25 triggers on, the HNSW index
grown row by row). Prints chunks/s and the seconds of each stage from the ingest report:
``parse_chunk`` (reader thread), ``embed`` and ``write`` (writer thread; the three overlap),
then the bulk load's ``bm25_build`` and ``index_build`` (these two overlap, the index built
on the staging connection) and ``attach`` before its commit; ``stage_cpu_s``
is the CPU time of the ingesting thread in each stage. On a shared machine wall times
swing with the load, so each run also counts the CPU seconds spent by every process of
the load (``cpu_s``, ``cpu_ms_per_chunk``): the ingesting process (its threads), the
forked parse workers, the embedded PostgreSQL (postmaster, backends, parallel build
workers; ``postgres_builds`` is its CPU from the start of the builds on) and the instant
embedding server; ``chunks_per_cpu_s`` is chunks per CPU second
of all of them together.

Each run also reports the WAL the server wrote during the load (``wal``: megabytes, full
page images, checkpoints, from ``pg_stat_wal`` and ``pg_stat_checkpointer``).
``--pg-set NAME=VALUE ...`` applies server settings (``ALTER SYSTEM``, then a restart) before
the load: e.g. ``max_wal_size=8GB`` (no checkpoint during the load) or
``wal_level=minimal max_wal_senders=0`` (index builds not WAL-logged; no replicas).

``--delay-ms`` makes the instant server hold each answer that long, as a remote embedding
API's round trip would; ``--concurrency`` then loads once per value of the HTTP model's
``concurrency`` (requests in flight at once), each pinned afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.instant_embedder import InstantServer
from bench.scale import COLLECTION, instant_collection, write_corpus
from bench.scratch import discard
from ragstore.config import Settings
from ragstore.db import documents, embedded
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds of a process (with its reaped children's when ``reaped``), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def _postgres_cpu(data_dir: Path) -> float:
    """CPU seconds of the embedded PostgreSQL under ``data_dir``: the postmaster, its live
    backends and workers, and those that exited (reaped by the postmaster)."""
    pid_files = list(data_dir.rglob("postmaster.pid"))
    if not pid_files:
        return 0.0
    master = int(pid_files[0].read_text().split()[0])
    total = _proc_cpu(master, reaped=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master:
            total += _proc_cpu(int(stat.parent.name))
    return total


def _cpu(data_dir: Path, server: InstantServer) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped: the parse workers
    assert server.proc is not None
    return {
        "ragstore_process": own.ru_utime + own.ru_stime,
        "parse_workers": kids.ru_utime + kids.ru_stime,
        "postgres": _postgres_cpu(data_dir),
        "embedding_server": _proc_cpu(server.proc.pid),
    }


@contextmanager
def _marking(data_dir: Path, marks: dict[str, float]) -> Iterator[None]:
    """Record the server's CPU seconds when the bulk load's final builds start: the BM25
    build in the load's transaction and the HNSW build on the staging connection run
    together from there, so the server's CPU after that mark is both builds'."""
    finish = documents.finish_bulk

    def timed_finish(*args: Any, **kwargs: Any) -> int:
        marks["builds"] = _postgres_cpu(data_dir)
        return finish(*args, **kwargs)

    documents.finish_bulk = timed_finish  # type: ignore[assignment]
    try:
        yield
    finally:
        documents.finish_bulk = finish  # type: ignore[assignment]


_WAL = """SELECT (SELECT wal_bytes FROM pg_stat_wal), (SELECT wal_fpi FROM pg_stat_wal),
    (SELECT num_timed + num_requested FROM pg_stat_checkpointer)"""


def _wal(rt: Runtime) -> tuple[float, float, float]:
    """WAL bytes and full page images written, and checkpoints made, since the server's start."""
    with rt.db.connection() as conn:
        row = conn.execute(_WAL).fetchone()
    assert row is not None
    return float(row[0]), float(row[1]), float(row[2])


def _apply_settings(data_dir: Path, settings: list[str]) -> dict[str, str]:
    """``ALTER SYSTEM`` each ``NAME=VALUE`` on the embedded server under ``data_dir``, stop
    it so that the next connection starts it with them, and return what it then reports."""
    with Runtime(Settings(data_dir=data_dir)) as rt, rt.db.connect(autocommit=True) as conn:
        for item in settings:
            name, value = item.split("=", 1)
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    embedded.stop(data_dir)
    names = [item.split("=", 1)[0] for item in settings]
    with Runtime(Settings(data_dir=data_dir)) as rt, rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (names,)
        ).fetchall()
    return {str(name): str(value) for name, value in rows}


def _load(
    folder: Path,
    data_dir: Path,
    server: InstantServer,
    concurrency: int | None = None,
    pg_set: list[str] | None = None,
    **update: Any,
) -> dict[str, Any]:
    applied = _apply_settings(data_dir, pg_set) if pg_set else {}
    with Runtime(Settings(data_dir=data_dir, **update)) as rt:
        instant_collection(rt, server, concurrency)
        wal0 = _wal(rt)
        cpu0 = _cpu(data_dir, server)
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        with _marking(data_dir, marks):
            report = ingest_paths(rt, [folder], COLLECTION)
        seconds = time.perf_counter() - t0
        cpu1 = _cpu(data_dir, server)
        wal1 = _wal(rt)
        assert not report.failed, report.failed[:3]
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    if "builds" in marks:  # the server's CPU of the final builds, apart from the rounds
        pg_rounds = marks["builds"] - cpu0["postgres"]
        cpu = {**cpu, "postgres_builds": cpu["postgres"] - pg_rounds, "postgres": pg_rounds}
    total = sum(cpu.values())
    return {
        "chunks": report.chunks,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks / seconds),
        "stages_s": {k: round(v, 1) for k, v in report.stages.items()},
        "stage_cpu_s": {k: round(v, 1) for k, v in getattr(report, "stage_cpu", {}).items()},
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ms_per_chunk": {k: round(1000 * v / report.chunks, 3) for k, v in cpu.items()},
        "cpu_s_total": round(total, 1),
        # what this CPU work would allow on ``os.cpu_count()`` idle cores, if it overlapped
        "chunks_per_cpu_s": round(report.chunks / total),
        "wal": {
            "mb": round((wal1[0] - wal0[0]) / 1e6),
            "full_page_images": int(wal1[1] - wal0[1]),
            "checkpoints": int(wal1[2] - wal0[2]),
        },
        **({"pg_settings": applied} if applied else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000, help="target stored chunks")
    ap.add_argument("--incremental", action="store_true", help="also ingest with bulk off")
    ap.add_argument(
        "--inprocess",
        action="store_true",
        help="also ingest with files parsed in the ingesting process (RAGSTORE_INGEST_WORKERS=1)",
    )
    ap.add_argument(
        "--memory",
        nargs="+",
        metavar="SIZE",
        help="instead: bulk loads with each RAGSTORE_INDEX_BUILD_MEMORY in turn (e.g. 256MB 1GB)",
    )
    ap.add_argument(
        "--workers",
        nargs="+",
        type=int,
        metavar="N",
        help="instead: bulk loads with each RAGSTORE_INGEST_WORKERS in turn (e.g. 0 1 1 0: "
        "the default against parsing in the ingesting process, alternated)",
    )
    ap.add_argument(
        "--concurrency",
        nargs="+",
        type=int,
        metavar="N",
        help="instead: bulk loads with the HTTP model's concurrency at each N in turn "
        "(e.g. 1 4 1 4, with --delay-ms)",
    )
    ap.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="the embedding server holds each answer this long (a remote API's round trip)",
    )
    ap.add_argument(
        "--pg-set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="server settings for the loads (ALTER SYSTEM, then a restart), e.g. max_wal_size=8GB",
    )
    ap.add_argument("--work", type=Path, help="where data and files go (default: a temp dir)")
    ap.add_argument(
        "--folder",
        type=Path,
        help="load this folder of files instead of the scale corpus (e.g. the SciFact corpus "
        "as bench/prepare_cpu.py writes it, one .txt a document)",
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-bulk-load-"))
    if args.folder is not None and not (args.folder.is_dir() and any(args.folder.iterdir())):
        raise SystemExit(f"--folder {args.folder}: not a folder with files in it; give one")
    folder = args.folder or work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"load_average_before": os.getloadavg()}
    result["delay_ms"] = args.delay_ms
    with InstantServer(delay_ms=args.delay_ms) as server:
        if args.folder is None:
            with Runtime(Settings(data_dir=work / "data-corpus")) as rt:
                coll = instant_collection(rt, server)
                result["documents"] = write_corpus(folder, args.chunks, rt, coll)
        if args.memory:
            for i, size in enumerate(args.memory):
                result[f"bulk_{i}_memory_{size}"] = _load(
                    folder,
                    work / f"data-bulk-{i}",
                    server,
                    pg_set=args.pg_set,
                    index_build_memory=size,
                )
                discard(work / f"data-bulk-{i}")
        elif args.concurrency:
            for i, n in enumerate(args.concurrency):
                result[f"bulk_{i}_concurrency_{n}"] = _load(
                    folder, work / f"data-bulk-{i}", server, pg_set=args.pg_set, concurrency=n
                )
                discard(work / f"data-bulk-{i}")
        elif args.workers:
            for i, n in enumerate(args.workers):
                result[f"bulk_{i}_workers_{n}"] = _load(
                    folder, work / f"data-bulk-{i}", server, pg_set=args.pg_set, ingest_workers=n
                )
                discard(work / f"data-bulk-{i}")
        else:
            result["bulk"] = _load(folder, work / "data-bulk", server, pg_set=args.pg_set)
        if args.inprocess:
            result["bulk_inprocess"] = _load(
                folder, work / "data-bulk-inprocess", server, pg_set=args.pg_set, ingest_workers=1
            )
        if args.incremental:
            result["incremental"] = _load(
                folder, work / "data-incremental", server, pg_set=args.pg_set, bulk_load_bytes=0
            )
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    discard(work)


if __name__ == "__main__":
    main()
