"""Every Prometheus metric ragstore exports, and how ``/metrics`` is rendered.

Metrics are module-level objects in one registry of our own (never the global default, so
importing ragstore registers nothing anywhere else). Code paths record through the small
``record_*`` / ``observe_*`` functions below, one line at each call site.

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder
*before* the processes start (prometheus-client picks its value store when it is first
imported). Each process then writes its samples there and :func:`render` merges them with
``MultiProcessCollector``. Gauges declare how they merge (``livesum``/``max``).

Database-wide figures (per-collection sizes, job queue) are not samples: they are read
at scrape time by :class:`DatabaseCollector`, cheaply (catalog estimates, exact counts
only for small tables) and cached for ``ttl_s`` seconds, so a scrape never scans data.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The one import-time action here, on purpose: in multiprocess mode every metric below
# opens a file in that folder as it is defined, so a missing folder would make every
# ragstore command (not only the server) crash on import.
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
# Past this many collections, the smallest are summed into collection="_other".
MAX_COLLECTION_LABELS = 50
# Tables smaller than this are counted exactly; larger ones use pg_class.reltuples.
EXACT_COUNT_MAX_BYTES = 8 * 1024 * 1024

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

HTTP_REQUESTS = Counter(
    "ragstore_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "ragstore_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "ragstore_http_requests_in_flight",
    "HTTP requests being answered now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "ragstore_errors_total",
    "Failures answered to a client, by stable error code.",
    ["code"],
    registry=REGISTRY,
)

SEARCHES = Counter(
    "ragstore_search_requests_total",
    "Searches run, by mode and outcome (ok or error).",
    ["mode", "outcome"],
    registry=REGISTRY,
)
SEARCH_DURATION = Histogram(
    "ragstore_search_duration_seconds",
    "Time for one search (query embedding and SQL).",
    ["mode"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SEARCH_HITS = Histogram(
    "ragstore_search_hits",
    "Hits returned by one search.",
    ["mode"],
    buckets=(0, 1, 5, 10, 20, 50, 100, 1000),
    registry=REGISTRY,
)

EMBED_BATCH_DURATION = Histogram(
    "ragstore_embedding_batch_duration_seconds",
    "Time for one call to the embedding model.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EMBED_BATCH_SIZE = Histogram(
    "ragstore_embedding_batch_size",
    "Texts sent to the embedding model in one call.",
    buckets=_SIZE_BUCKETS,
    registry=REGISTRY,
)
EMBED_TEXTS = Counter(
    "ragstore_embedding_texts_total", "Texts embedded by the model.", registry=REGISTRY
)
QUERY_CACHE = Counter(
    "ragstore_query_cache_requests_total",
    "Query-embedding cache look-ups, by result.",
    ["result"],
    registry=REGISTRY,
)
MODEL_VALIDATION_FAILURES = Counter(
    "ragstore_model_validation_failures_total",
    "Refusals because a loaded model differs from its pinned spec (model_mismatch).",
    registry=REGISTRY,
)

INGEST_DOCUMENTS = Counter(
    "ragstore_ingest_documents_total",
    "Documents seen by ingest, by outcome (added, updated, unchanged, superseded, failed).",
    ["outcome"],
    registry=REGISTRY,
)
INGEST_CHUNKS = Counter(
    "ragstore_ingest_chunks_total",
    "Chunks stored by ingest, by how their vector was "
    "obtained (embedded: new model call; reused: vector already stored).",
    ["outcome"],
    registry=REGISTRY,
)
INGEST_DURATION = Histogram(
    "ragstore_ingest_duration_seconds",
    "Time for one ingest call (a batch of files).",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)

POOL_MAX = Gauge(
    "ragstore_db_pool_max_connections",
    "Largest size the connection pool may grow to.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "ragstore_db_pool_connections",
    "Connections the pool holds now (idle and in use).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "ragstore_db_pool_connections_in_use",
    "Pooled connections lent out now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "ragstore_db_pool_requests_waiting",
    "Requests waiting now for a free connection.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
POOL_WAITS = Counter(
    "ragstore_db_pool_waits_total",
    "Requests that had to queue for a connection.",
    registry=REGISTRY,
)
POOL_WAIT_SECONDS = Counter(
    "ragstore_db_pool_wait_seconds_total",
    "Time requests spent queueing for a connection.",
    registry=REGISTRY,
)
POOL_TIMEOUTS = Counter(
    "ragstore_db_pool_timeouts_total",
    "Requests that got no connection in time (errors).",
    registry=REGISTRY,
)

REPLICA_LAG = Gauge(
    "ragstore_db_replica_lag_seconds",
    "How far each read replica is behind the primary.",
    ["replica"],
    registry=REGISTRY,
    # live: a dead worker's last view (perhaps "far behind") must not outlast it
    multiprocess_mode="livemax",
)
REPLICA_UP = Gauge(
    "ragstore_db_replica_up",
    "1 while a read replica answers and is within the lag limit.",
    ["replica"],
    registry=REGISTRY,
    # live: a dead worker's last view (perhaps "down") must not outlast it
    multiprocess_mode="livemin",
)
DB_READS = Counter(
    "ragstore_db_reads_total",
    "Routed reads (searches, listings), by where they ran.",
    ["target"],
    registry=REGISTRY,
)

BUILD_INFO = Gauge(
    "ragstore_build_info",
    "Always 1; labels say the version and settings profile running.",
    ["version", "profile"],
    registry=REGISTRY,
    multiprocess_mode="max",
)


# --- recording helpers: one line at each call site ---------------------------------------


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def record_error(code: str) -> None:
    """Count one failure answered to a client; codes are the bounded set in errors.py."""
    ERRORS.labels(code).inc()
    if code == "model_mismatch":
        MODEL_VALIDATION_FAILURES.inc()


def observe_search(mode: str, seconds: float, hits: int | None) -> None:
    """One finished search; ``hits`` None means it failed."""
    SEARCHES.labels(mode, "ok" if hits is not None else "error").inc()
    SEARCH_DURATION.labels(mode).observe(seconds)
    if hits is not None:
        SEARCH_HITS.labels(mode).observe(hits)


def observe_embedding_batch(size: int, seconds: float) -> None:
    EMBED_BATCH_SIZE.observe(size)
    EMBED_BATCH_DURATION.observe(seconds)
    EMBED_TEXTS.inc(size)


class _Deltas:
    """Adds the growth of cumulative figures kept elsewhere to our counters.

    The pool and the query cache keep their own running totals; copying only the growth
    since the last sync keeps our counters monotonic and lets multiprocess mode sum them.
    A total that went down (its owner was reset) starts a new baseline.
    """

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, value: float, counter: Any) -> None:
        with self._lock:
            grown = value - self._last.get(key, 0.0)
            self._last[key] = value
        if grown > 0:
            counter.inc(grown)


_DELTAS = _Deltas()


def sync_query_cache() -> None:
    """Copy the process-wide query-embedding cache's hit/miss totals into the metrics."""
    try:
        from ragstore.embedding.cache import query_cache
    except ImportError:  # a build without the query cache
        return
    stats = query_cache().stats()
    _DELTAS.add("cache_hits", float(stats.hits), QUERY_CACHE.labels("hit"))
    _DELTAS.add("cache_misses", float(stats.misses), QUERY_CACHE.labels("miss"))


_data_generation = 0  # bumped by each ingest in this process: cached sizes are stale


def observe_ingest(report: Any) -> None:
    """Count one ingest run from its report (an ``ingest.service.IngestReport``)."""
    global _data_generation
    _data_generation += 1
    for outcome in ("added", "updated", "unchanged", "superseded", "failed"):
        n = int(report.count(outcome))
        if n:
            INGEST_DOCUMENTS.labels(outcome).inc(n)
    if report.embedded:
        INGEST_CHUNKS.labels("embedded").inc(report.embedded)
    if report.reused:
        INGEST_CHUNKS.labels("reused").inc(report.reused)
    if report.seconds:
        INGEST_DURATION.observe(report.seconds)


def set_build_info(version: str, profile: str) -> None:
    BUILD_INFO.labels(version, profile).set(1)


def observe_replica(replica: str, up: bool, lag_s: float | None) -> None:
    """The last probe of a read replica: answering and usable, and its lag (-1: unknown)."""
    REPLICA_UP.labels(replica).set(1 if up else 0)
    REPLICA_LAG.labels(replica).set(-1 if lag_s is None else lag_s)


def record_read(target: str) -> None:
    """A routed read ran on ``target`` (``replica`` or ``primary``)."""
    DB_READS.labels(target).inc()


def sync_pool(pool: Any) -> None:
    """Copy a psycopg pool's ``get_stats()`` into the pool metrics (None: no pool yet)."""
    stats: dict[str, int] = pool.get_stats() if pool is not None else {}
    POOL_MAX.set(stats.get("pool_max", 0))
    size = stats.get("pool_size", 0)
    POOL_SIZE.set(size)
    POOL_IN_USE.set(max(0, size - stats.get("pool_available", 0)))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    key = f"pool{id(pool)}"
    _DELTAS.add(key + "waits", float(stats.get("requests_queued", 0)), POOL_WAITS)
    _DELTAS.add(key + "wait_s", stats.get("requests_wait_ms", 0) / 1000.0, POOL_WAIT_SECONDS)
    _DELTAS.add(key + "timeouts", float(stats.get("requests_errors", 0)), POOL_TIMEOUTS)


# --- scrape-time database figures --------------------------------------------------------

Conn = Any  # a psycopg connection; kept loose so this module imports nothing from db/


class DatabaseCollector(Collector):
    """Per-collection sizes, job queue and data-dir disk usage, read at scrape time.

    ``connect`` opens a short-lived connection (the caller's pool or a direct one). The
    collection sizes are cached for ``ttl_s`` (refreshed sooner after an ingest in this
    process), so a scrape every few seconds costs one catalog query per ``ttl_s``; the job
    queue is read at every scrape. A failing database yields ``ragstore_db_up 0`` instead
    of an error.
    """

    def __init__(
        self, connect: Callable[[], Any], *, data_dir: Path | None = None, ttl_s: float = 30.0
    ) -> None:
        self._connect = connect
        self._data_dir = data_dir
        self._ttl = ttl_s
        self._cached: list[Metric] = []
        self._at = float("-inf")
        self._generation = -1
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ragstore_db_up", "1 when the database answered the last scrape.")
        out: list[Metric] = []
        try:
            with self._lock, self._connect() as conn:
                generation = _data_generation
                stale = time.monotonic() - self._at >= self._ttl
                if stale or generation != self._generation:
                    self._cached = _collection_metrics(conn)
                    self._at = time.monotonic()
                    self._generation = generation
                # the queue is read at every scrape: two index-backed queries, and its age
                # must not lag by the cache's lifetime
                out = [*self._cached, *_job_metrics(conn)]
            up.add_metric([], 1)
        except Exception:  # a scrape must never fail because the database is down
            up.add_metric([], 0)
        yield up
        yield from out
        yield from self._disk()

    def invalidate(self) -> None:
        """Forget the cached sizes (tests, and after an operator action)."""
        with self._lock:
            self._at = float("-inf")

    def _disk(self) -> list[Metric]:
        if self._data_dir is None or not self._data_dir.exists():
            return []
        usage = shutil.disk_usage(self._data_dir)
        total = GaugeMetricFamily(
            "ragstore_data_dir_size_bytes", "Size of the filesystem holding the data dir."
        )
        free = GaugeMetricFamily(
            "ragstore_data_dir_free_bytes", "Free bytes on the filesystem holding the data dir."
        )
        total.add_metric([], usage.total)
        free.add_metric([], usage.free)
        return [total, free]


def _collection_metrics(conn: Conn) -> list[Metric]:
    from ragstore.db import catalog

    rows = catalog.space_sizes(conn, exact_below_bytes=EXACT_COUNT_MAX_BYTES)
    rows.sort(key=lambda r: (-r[1], r[0]))
    chunks = GaugeMetricFamily(
        "ragstore_collection_chunks",
        "Embedded chunks in each collection's active space (estimated above 8 MiB).",
        labels=["collection"],
    )
    index = GaugeMetricFamily(
        "ragstore_collection_index_bytes",
        "Bytes of the indexes of each collection's active embedding table.",
        labels=["collection"],
    )
    shown, rest = rows[:MAX_COLLECTION_LABELS], rows[MAX_COLLECTION_LABELS:]
    for name, count, size in shown:
        chunks.add_metric([name], count)
        index.add_metric([name], size)
    if rest:
        chunks.add_metric(["_other"], sum(r[1] for r in rest))
        index.add_metric(["_other"], sum(r[2] for r in rest))
    total = GaugeMetricFamily("ragstore_collections", "Collections in the database.")
    total.add_metric([], len(rows))
    return [total, chunks, index]


def _job_metrics(conn: Conn) -> list[Metric]:
    """Queue depth and the age of the oldest waiting job, when the job queue exists."""
    from ragstore.db import catalog

    queue = catalog.job_queue(conn)
    if queue is None:
        return []
    counts, oldest = queue
    depth = GaugeMetricFamily(
        "ragstore_jobs", "Background jobs by status (todo, doing).", labels=["status"]
    )
    age = GaugeMetricFamily(
        "ragstore_jobs_oldest_todo_age_seconds",
        "Age of the oldest job still waiting to start (0 when none).",
    )
    for status in ("todo", "doing"):
        depth.add_metric([status], float(counts.get(status, 0)))
    age.add_metric([], float(oldest or 0.0))
    return [depth, age]


# --- exposition ---------------------------------------------------------------------------


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


def render(*extra: Collector) -> bytes:
    """The text exposition of every metric (merged across processes when multiprocess)."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder:
        try:
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # the folder is gone
            raise _unreadable_folder(folder, exc) from exc
    else:
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    if not folder:
        return generate_latest(registry)
    try:
        # shared: a worker archiving dead processes' files (exclusive) never runs beside it
        with _folder_lock(folder, exclusive=False):
            return generate_latest(registry)
    except (OSError, ValueError, RuntimeError, struct.error) as exc:
        raise _unreadable_folder(folder, exc) from exc


def _unreadable_folder(folder: str, exc: BaseException) -> Exception:
    """The error for a multiprocess folder a scrape cannot read (removed under the running
    server, say by a temp cleaner, or a file in it damaged): it was a bare ``ValueError``
    or ``RuntimeError`` ("file is corrupted"), answered as an internal error with a
    traceback in the log."""
    from ragstore.errors import ConfigError

    return ConfigError(
        f"the metrics of the server's processes cannot be read from {MULTIPROC_ENV}="
        f"{folder} ({type(exc).__name__}: {exc}); the folder must exist and stay writable "
        "while the server runs: restart the server with an empty folder there"
    )


_LOCK_FILE = ".ragstore-metrics.lock"  # not *.db: MultiProcessCollector reads only those


@contextlib.contextmanager
def _folder_lock(folder: str, *, exclusive: bool) -> Iterator[None]:
    """An advisory lock on the multiprocess folder (none where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no archiving races to guard against there
        yield
        return
    try:
        fd = os.open(os.path.join(folder, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # a folder this process cannot write: a scrape reads it unlocked
        if exclusive:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def mark_process_dead_at_exit() -> None:
    """In multiprocess mode, drop this process's live gauges when it exits, and those of
    processes that died before us without running their own hook."""
    folder = multiprocess_dir()
    if folder:
        pid = os.getpid()
        atexit.register(multiprocess.mark_process_dead, pid)
        drop_dead_processes_gauges(folder)
        archive_dead_processes_totals(folder)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def drop_dead_processes_gauges(folder: str) -> list[int]:
    """Remove the live-gauge files of processes that are gone; return their pids.

    The atexit hook never runs in a worker that was killed (SIGKILL, the OOM killer) and
    that uvicorn replaced: its in-flight and pool gauges were summed into every scrape
    for as long as the folder lived, and its last view of a replica shown as current.
    Each worker sweeps them as it starts. Counter and histogram files stay: they hold
    totals that must not go down.
    """
    dropped: list[int] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return dropped
    for name in names:
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid in dropped or pid == os.getpid() or _alive(pid):
            continue
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
        dropped.append(pid)
    return dropped


_TOTALS_FILE = re.compile(r"(counter|histogram)_(\d+)\.db")


def archive_dead_processes_totals(folder: str) -> list[int]:
    """Fold the counter and histogram files of processes that are gone into one
    ``counter_archive.db`` / ``histogram_archive.db``; return their pids.

    Each worker's totals live in files named by its pid, which nothing removed: every
    worker uvicorn replaced over a server's life left two files that every scrape read
    and merged, without bound. Their values are added (per metric and labels, as the
    scrape adds them) to the archive, so every total stays what it was. Run by each
    worker as it starts, under the folder's lock, which :func:`render` takes shared: a
    scrape sees the files before or after, never the archive and the dead files both
    (counted twice) or neither. A failure leaves the files as they were, the worker
    starting all the same."""
    from prometheus_client.mmap_dict import MmapedDict

    archived: list[int] = []
    try:
        with _folder_lock(folder, exclusive=True):
            dead: dict[str, list[str]] = {}
            pids: set[int] = set()
            for name in os.listdir(folder):
                match = _TOTALS_FILE.fullmatch(name)
                if match is None:
                    continue
                pid = int(match.group(2))
                if pid == os.getpid() or _alive(pid):
                    continue
                dead.setdefault(match.group(1), []).append(os.path.join(folder, name))
                pids.add(pid)
            for kind, files in dead.items():
                archive = os.path.join(folder, f"{kind}_archive.db")
                totals: dict[str, float] = {}
                sources = [*files, archive] if os.path.exists(archive) else files
                for path in sources:
                    values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
                    for key, value, _timestamp, _pos in values:
                        totals[key] = totals.get(key, 0.0) + value
                fresh = archive + ".new"  # not *.db: no scrape reads it half written
                with contextlib.suppress(FileNotFoundError):
                    os.remove(fresh)
                out = MmapedDict(fresh)  # type: ignore[no-untyped-call]
                try:
                    for key, total in totals.items():
                        out.write_value(key, total, 0.0)  # type: ignore[no-untyped-call]
                finally:
                    out.close()  # type: ignore[no-untyped-call]
                os.replace(fresh, archive)
                for path in files:
                    os.remove(path)
            archived = sorted(pids)
    except (OSError, ValueError, RuntimeError, struct.error) as exc:
        # what a file that cannot be read, written or parsed raises (as in render()): a
        # worker is never stopped from starting over its metrics
        import logging

        logging.getLogger("ragstore.metrics").warning(
            "could not archive the metrics files of exited processes in %s: %s", folder, exc
        )
    return archived


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
