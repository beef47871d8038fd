"""Every Prometheus metric ragstore exports, and how ``/metrics`` is rendered.

Metrics are module-level objects in one registry of our own (never the global default, so
importing ragstore registers nothing anywhere else). Code paths record through the small
``record_*`` / ``observe_*`` functions below, one line at each call site.

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable folder
*before* the processes start (prometheus-client picks its value store when it is first
imported). Each process then writes its samples there, in files named by a token of its
own (:func:`process_identifier`), and :func:`render` merges them with
``MultiProcessCollector``. Gauges declare how they merge (``livesum``/``livemax``...).

Database-wide figures (per-collection sizes, job queue) are not samples: they are read
at scrape time by :class:`DatabaseCollector`, cheaply (catalog estimates, exact counts
only for small tables) and cached for ``ttl_s`` seconds, so a scrape never scans data.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import socket
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

# A process's files are named by a token, ``<pid>-<random hex>``, not by its bare pid:
# two containers sharing one folder both have a pid 1, and a pid is reused by unrelated
# processes. While it runs, the process holds an flock on ``.ragstore-alive-<token>.lock``
# (not *.db: MultiProcessCollector reads only those); the kernel drops it when the process
# ends however it ends, and flocks are seen across pid namespaces on one host, so "its lock
# can be taken" is what "this process has exited" means here, never a pid lookup.
_ALIVE_PREFIX = ".ragstore-alive-"
_TOKEN = r"\d+-[0-9a-f]{16}"
_token_lock = threading.Lock()
_token: tuple[int, str, int | None] | None = None  # (pid, token, fd of its held lock)


def _own_token() -> str | None:
    current = _token
    return current[1] if current is not None and current[0] == os.getpid() else None


def process_identifier() -> str:
    """This process's token (a new one after ``fork``), its liveness lock taken first.

    prometheus_client calls it before it creates a file of the token and again at each
    recording (that is how it sees a fork), so the lock is held before any file of the
    token exists: a sweep never takes a starting process for an exited one.
    """
    global _token
    pid = os.getpid()
    current = _token
    if current is not None and current[0] == pid:
        return current[1]
    with _token_lock:
        current = _token
        if current is not None and current[0] == pid:
            return current[1]
        if current is not None and current[2] is not None:
            # a forked child's copy of its parent's lock: closing it leaves the lock to the
            # parent, and the parent's death is seen even while this child runs on
            os.close(current[2])
        token = f"{pid}-{secrets.token_hex(8)}"
        _token = (pid, token, _hold_alive_lock(token))
        return token


def _hold_alive_lock(token: str) -> int | None:
    """Take this process's lock for good; None where that cannot be done (no ``fcntl``,
    folder not writable): its files are then never taken for an exited process's."""
    folder = os.environ.get(MULTIPROC_ENV)  # where prometheus-client writes
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    if not folder:
        return None
    final = os.path.join(folder, f"{_ALIVE_PREFIX}{token}.lock")
    # made under another name and renamed once locked: a sweep never sees the final name
    # unlocked while its process lives
    temp = final + ".new"
    try:
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(temp, final)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(temp)
        return None
    return fd


def _use_process_tokens() -> None:
    """Make every metric defined from now on name its files by :func:`process_identifier`.

    Only where prometheus-client chose its multiprocess value store (the variable was set
    when it was imported); metrics read ``values.ValueClass`` as they are defined."""
    from prometheus_client import values

    if getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue(process_identifier)  # type: ignore[no-untyped-call]


_use_process_tokens()

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
CONNECTIONS_REFUSED = Counter(
    "ragstore_http_connections_refused_total",
    "Connections answered 503 and closed unread by a connection cap, by which "
    "(server_cap: RAGSTORE_MAX_CONNECTIONS, address_cap: the per-address one).",
    ["reason"],
    registry=REGISTRY,
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
    "Time for one search that ran (query embedding and SQL); refusals of the request "
    "itself (4xx: unknown collection, bad input) are not in it.",
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
    "Refusals because a loaded model differs from its pinned spec (model_mismatch), "
    "counted where the check fails: API requests and background jobs alike.",
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
# 1 in a process whose pool is exhausted now (every connection lent out, requests
# waiting), summed over the live processes: how many are. The gauges above are summed
# too, so with several server processes "in use >= max and waiting" held only when
# every process was exhausted at once; one process starved went unseen by the alert.
POOL_EXHAUSTED = Gauge(
    "ragstore_db_pool_exhausted_processes",
    "Processes whose pool is exhausted now: every connection lent out and requests waiting.",
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
# not named ragstore_db_pool_wait_seconds: the counter above is stored under that name
POOL_ACQUIRE_DURATION = Histogram(
    "ragstore_db_pool_acquire_duration_seconds",
    "Time to get a pooled connection (the wait for a free one included), by pool.",
    ["pool"],
    buckets=(0.0005, 0.001, *_LATENCY_BUCKETS),
    registry=REGISTRY,
)
POOL_TIMEOUTS = Counter(
    "ragstore_db_pool_timeouts_total",
    "Requests that got no connection in time (errors).",
    registry=REGISTRY,
)

# Each read replica's own pool, by the replica's name (its URL without the password, as
# ragstore_db_replica_up): the pool gauges above are the primary's alone and stay
# unlabelled, the alerts and dashboards that read them unchanged. Absent while a
# replica's pool is not open (see sync_replica_pools).
REPLICA_POOL_MAX = Gauge(
    "ragstore_db_replica_pool_max_connections",
    "Largest size each read replica's connection pool may grow to.",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REPLICA_POOL_SIZE = Gauge(
    "ragstore_db_replica_pool_connections",
    "Connections each read replica's pool holds now (idle and in use).",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REPLICA_POOL_IN_USE = Gauge(
    "ragstore_db_replica_pool_connections_in_use",
    "Connections of each read replica's pool lent out now.",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REPLICA_POOL_WAITING = Gauge(
    "ragstore_db_replica_pool_requests_waiting",
    "Requests waiting now for a free connection of each read replica's pool.",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# 1 in a process where a replica's pool is exhausted now (every connection lent out,
# requests waiting), summed over the live processes, as ragstore_db_pool_exhausted_processes
# is for the primary: the summed gauges above met "in use >= max and waiting" only while
# every process's pool of that replica was exhausted at once
REPLICA_POOL_EXHAUSTED = Gauge(
    "ragstore_db_replica_pool_exhausted_processes",
    "Processes whose pool of each read replica is exhausted now: every connection lent "
    "out and requests waiting.",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
_REPLICA_POOL_GAUGES = (
    REPLICA_POOL_MAX,
    REPLICA_POOL_SIZE,
    REPLICA_POOL_IN_USE,
    REPLICA_POOL_WAITING,
    REPLICA_POOL_EXHAUSTED,
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
    # live: an exited process's version (say, the one before an upgrade) is not running
    multiprocess_mode="livemax",
)


# --- recording helpers: one line at each call site ---------------------------------------


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def record_connection_refused(reason: str) -> None:
    """Count one connection refused by a connection cap (``server_cap`` or ``address_cap``):
    it never reaches the app, so neither the request metrics nor the access log see it."""
    CONNECTIONS_REFUSED.labels(reason).inc()


def record_error(code: str) -> None:
    """Count one failure answered to a client; codes are the bounded set in errors.py."""
    ERRORS.labels(code).inc()


def record_model_mismatch(exc: BaseException) -> BaseException:
    """Count ``exc``, a refusal of a loaded model that differs from its pin, where the
    check failed (:func:`ragstore.embedding.registry.load_embedder`, an HTTP model's
    answer); once, however many of those places it passes (an HTTP model's probe at its
    load is both). Returns ``exc``, for ``raise``.

    Counted from the HTTP error answered alone, a worker whose model differed from the
    pin failed every job with ``model_mismatch`` while the counter on its port stayed 0,
    and the critical alert on it was silent."""
    if not getattr(exc, "_ragstore_counted", False):
        MODEL_VALIDATION_FAILURES.inc()
        exc._ragstore_counted = True  # type: ignore[attr-defined]
    return exc


def observe_search(mode: str, seconds: float, hits: int | None, *, ran: bool = True) -> None:
    """One finished search; ``hits`` None means it failed. ``ran`` False: refused as the
    request's own error before it ran (an unknown collection, bad input), counted as an
    error but kept out of the duration histogram, whose instant 404s pulled its
    quantiles down."""
    SEARCHES.labels(mode, "ok" if hits is not None else "error").inc()
    if ran:
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


def observe_pool_acquire(pool: str, seconds: float) -> None:
    """One request for a pooled connection ended, lent one or timed out, after ``seconds``
    (``pool``: ``primary`` or ``replica``). A search's duration includes this wait: the
    histogram is what tells a pool that lends connections late from slow SQL or a slow
    model under the same latency."""
    POOL_ACQUIRE_DURATION.labels(pool).observe(seconds)


def pool_stats(pool: Any) -> dict[str, int]:
    """A psycopg pool's ``get_stats()`` (its public figures); {} for None (no pool). Tried
    again where its counters grew a key under the copy (a RuntimeError from the pool's own
    threads: a scrape of a busy pool failed with a 500)."""
    if pool is None:
        return {}
    for _ in range(2):
        try:
            return dict(pool.get_stats())
        except RuntimeError:
            continue
    return dict(pool.get_stats())


def _exhausted(stats: dict[str, int]) -> bool:
    """Whether a pool of ``stats`` (:func:`pool_stats`) is exhausted: every connection it
    may hold lent out, and requests waiting for one."""
    in_use = max(0, stats.get("pool_size", 0) - stats.get("pool_available", 0))
    most = stats.get("pool_max", 0)
    return most > 0 and in_use >= most and stats.get("requests_waiting", 0) > 0


def sync_pool(pool: Any) -> None:
    """Copy a psycopg pool's ``get_stats()`` into the pool metrics (None: no pool yet)."""
    stats = pool_stats(pool)
    POOL_MAX.set(stats.get("pool_max", 0))
    size = stats.get("pool_size", 0)
    POOL_SIZE.set(size)
    POOL_IN_USE.set(max(0, size - stats.get("pool_available", 0)))
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    POOL_EXHAUSTED.set(1 if _exhausted(stats) else 0)
    # by the pool's name (unique in the process: psycopg_pool numbers them), not its id(),
    # which a later pool may reuse, its totals then taken for the old one's going down
    key = f"pool:{getattr(pool, 'name', '')}"
    _DELTAS.add(key + "waits", float(stats.get("requests_queued", 0)), POOL_WAITS)
    _DELTAS.add(key + "wait_s", stats.get("requests_wait_ms", 0) / 1000.0, POOL_WAIT_SECONDS)
    _DELTAS.add(key + "timeouts", float(stats.get("requests_errors", 0)), POOL_TIMEOUTS)


_replica_pool_labels: set[str] = set()  # the replicas whose pool figures are set now
_replica_pool_lock = threading.Lock()


def sync_replica_pools(pools: Iterable[tuple[str, Any]]) -> None:
    """Copy each read replica's pool figures into the ``ragstore_db_replica_pool_*``
    gauges, from ``(name, pool)`` pairs (:meth:`ragstore.db.routing.ReadRouter.
    opened_pools`; pool None: not open). Two replicas of one name (one URL listed twice)
    add up (and the process reads exhausted for it when either pool is). A replica whose
    pool is not open is dropped from the series (its figures would read as an open pool of
    no connections); in multiprocess mode, where a labelled series cannot be removed, it
    reads 0 instead."""
    figures: dict[str, list[int]] = {}
    for name, pool in pools:
        if pool is None:
            continue
        stats = pool_stats(pool)
        size = stats.get("pool_size", 0)
        mine = (
            stats.get("pool_max", 0),
            size,
            max(0, size - stats.get("pool_available", 0)),
            stats.get("requests_waiting", 0),
        )
        total = figures.setdefault(name, [0, 0, 0, 0, 0])
        for i, figure in enumerate(mine):
            total[i] += figure
        total[4] = max(total[4], 1 if _exhausted(stats) else 0)  # one process: 0 or 1
    with _replica_pool_lock:
        for name, values in figures.items():
            for gauge, value in zip(_REPLICA_POOL_GAUGES, values, strict=True):
                gauge.labels(name).set(value)
        for name in _replica_pool_labels - figures.keys():
            for gauge in _REPLICA_POOL_GAUGES:
                if multiprocess_dir():
                    gauge.labels(name).set(0)
                else:
                    gauge.remove(name)
        _replica_pool_labels.clear()
        _replica_pool_labels.update(figures)


class JobQueuePoolMetrics(Collector):
    """The job queue's own connection pool (procrastinate's, apart from the runtime's: a
    worker's loop fetches jobs, beats and records their outcomes on it), read at each
    scrape from ``pool()``: a psycopg pool, or None while the queue is not open (nothing is
    reported then). Only ``get_stats()`` is read, the pool's public figures.

    Served by ``ragstore worker --metrics-port`` alone: ``ragstore_db_pool_*`` are the
    runtime's pool, and a worker whose jobs queued for the queue's four connections showed
    nothing of it."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self._pool()
        if pool is None:
            return
        stats = pool_stats(pool)
        size = stats.get("pool_size", 0)
        # (each name written out: the doc test finds every family by its literal name)
        figures = (
            (
                GaugeMetricFamily(
                    "ragstore_job_queue_pool_max_connections",
                    "Largest size the job queue's pool may grow to.",
                ),
                stats.get("pool_max", 0),
            ),
            (
                GaugeMetricFamily(
                    "ragstore_job_queue_pool_connections",
                    "Connections the job queue's pool holds now (idle and in use).",
                ),
                size,
            ),
            (
                GaugeMetricFamily(
                    "ragstore_job_queue_pool_connections_in_use",
                    "Job queue connections lent out now.",
                ),
                max(0, size - stats.get("pool_available", 0)),
            ),
            (
                GaugeMetricFamily(
                    "ragstore_job_queue_pool_requests_waiting",
                    "Job queue requests waiting now for a connection.",
                ),
                stats.get("requests_waiting", 0),
            ),
        )
        for family, figure in figures:
            family.add_metric([], float(figure))
            yield family


def sync_runtime(rt: Any) -> None:
    """Copy a runtime's pool figures (only a database it already opened: a scrape never
    opens one) and the query cache's totals into the metrics, before a scrape renders them."""
    db = rt.opened_primary
    sync_pool(db.opened_pool if db is not None else None)
    router = rt.opened_router
    sync_replica_pools(router.opened_pools() if router is not None else ())
    sync_query_cache()


# --- scrape-time database figures --------------------------------------------------------

Conn = Any  # a psycopg connection; kept loose so this module imports nothing from db/


class DatabaseCollector(Collector):
    """Per-collection sizes, job queue and data-dir disk usage, read at scrape time.

    ``connect`` gives a context manager lending a connection to read on as ``.conn``, and
    ``.full`` saying the server refused a fresh one for its connection limit
    (:meth:`ragstore.db.database.Database.checking`); ``full`` tells an error it raises
    for such a refusal (no pooled connection free, or none held) from a database down. The
    collection sizes are cached for ``ttl_s`` (refreshed sooner after an ingest in this
    process), so a scrape every few seconds costs one catalog query per ``ttl_s``; the job
    queue is read at every scrape. A failing database yields ``ragstore_db_up 0`` instead
    of an error.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        full: Callable[[BaseException], bool] = lambda exc: False,
        data_dir: Path | None = None,
        ttl_s: float = 30.0,
    ) -> None:
        self._connect = connect
        self._full = full
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
        full = GaugeMetricFamily(
            "ragstore_db_full",
            "1 when the database refused the last scrape a new connection for its "
            "connection limit (it answers: ragstore_db_up stays 1).",
        )
        out: list[Metric] = []
        at_limit = False
        try:
            with self._lock, self._connect() as got:
                at_limit = bool(got.full)
                conn = got.conn
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
        except Exception as exc:  # a scrape must never fail because the database is down
            # a refusal for the connection limit is an answer (the server is up, and full):
            # read as down, it paged RagstoreDatabaseDown for a database that served every
            # pooled connection; the sizes and queue are left out when no pooled one was free
            at_limit = self._full(exc)
            up.add_metric([], 1 if at_limit else 0)
        full.add_metric([], 1 if at_limit else 0)
        yield up
        yield full
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
    """In multiprocess mode, drop this process's live gauges when it exits, and sweep the
    files of processes that exited before us (see :func:`sweep_exited_processes`)."""
    folder = multiprocess_dir()
    if folder:
        atexit.register(_drop_own_live_gauges, folder)
        sweep_exited_processes(folder)


def _drop_own_live_gauges(folder: str) -> None:
    token = _own_token()
    if token is not None:  # None: a forked child that never recorded anything
        multiprocess.mark_process_dead(token, folder)  # type: ignore[no-untyped-call]


def _exited(folder: str, token: str) -> bool:
    """Whether the process of ``token`` has exited: its lock file is there and not held.

    A missing lock file (a process that could not make one, or a cleaner removed it) says
    nothing, so its files are left alone: archiving a live process's totals would count
    them twice, keeping a dead one's costs only a file."""
    if token == _own_token():
        return False
    return _unlocked(os.path.join(folder, f"{_ALIVE_PREFIX}{token}.lock"))


def _unlocked(path: str) -> bool:
    """Whether the lock file ``path`` is there and no process holds its lock (taken and
    released again to know); False where it is missing or ``flock`` is not there."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:  # gone (renamed by its process, or swept by another)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # releases it again if taken
    return True


def _bare_pid_exited(folder: str, pid: int) -> bool:
    """Whether the process that wrote files named by the bare ``pid`` (prometheus-client's
    own naming: an older ragstore's, or a metric defined before ours took over) is gone.

    Such a process holds no lock, so its pid is all there is: gone where no process has
    it; where one has it, gone only where that process maps no file of the pid in
    ``folder`` (a pid reused by another program: the writer keeps its files mapped while
    it lives). Anything unreadable says alive: a dead process's files cost only a file,
    while archiving a live one's would lose what it writes next."""
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive, and its mappings cannot be read
        return False
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            mapped = maps.read()
    except OSError:
        return False
    here = os.path.realpath(folder) + os.sep
    for line in mapped.splitlines():
        fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
        path = fields[5] if len(fields) == 6 else ""
        if path.startswith(here) and path.endswith(f"_{pid}.db"):
            return False
    return True


# a half-made lock file (created, not yet renamed: ``_hold_alive_lock``) older than this,
# and not locked, is a process's killed between the two: removed by a sweep
STALE_NEW_LOCK_S = 60.0


def _stale_new_lock(path: str) -> bool:
    """Whether ``path``, a ``.lock.new`` of :func:`_hold_alive_lock`, was left by a process
    killed before it renamed it: older than :data:`STALE_NEW_LOCK_S` and not locked. A
    young one may be a starting process's that has not taken its lock yet."""
    try:
        if time.time() - os.stat(path).st_mtime < STALE_NEW_LOCK_S:
            return False
    except OSError:  # gone meanwhile (renamed by its process, or swept by another)
        return False
    return _unlocked(path)


_PROCESS_FILE = re.compile(rf"(counter|histogram|gauge_[a-z]+)_({_TOKEN})\.db")
_BARE_PID_FILE = re.compile(r"(counter|histogram|gauge_[a-z]+)_(\d+)\.db")
_ALIVE_FILE = re.compile(rf"{re.escape(_ALIVE_PREFIX)}({_TOKEN})\.lock")
_ALIVE_NEW_FILE = re.compile(rf"{re.escape(_ALIVE_PREFIX)}({_TOKEN})\.lock\.new")


def _add(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (a[0] + b[0], 0.0)


# How a gauge of an exited process is kept, by its multiprocess mode. live*: it is a
# "now" figure of that process, gone with it. all: a series per process (pid label), which
# would pile up one series per process ever started; gone with it too. sum, max, min,
# mostrecent: the mode says the dead process's value still counts, so it is folded into
# one archive file merged as a scrape merges it, every figure unchanged. (ragstore's own
# gauges all use live modes: each means "now".)
_GAUGE_FOLD: dict[str, Callable[[tuple[float, float], tuple[float, float]], tuple[float, float]]]
_GAUGE_FOLD = {
    "sum": _add,
    "max": lambda a, b: a if a[0] >= b[0] else b,
    "min": lambda a, b: a if a[0] <= b[0] else b,
    "mostrecent": lambda a, b: a if a[1] >= b[1] else b,
}


def sweep_exited_processes(folder: str) -> list[str]:
    """Fold or drop the files of processes that have exited; return their tokens.

    Every worker uvicorn replaced over a server's life (exited, killed, OOM) left files
    named by it that every scrape read: the folder and each scrape grew without bound, and
    a killed worker's live gauges (its atexit hook never ran) were reported as current.
    Files named by a bare pid (an older ragstore's: no lock says whether their process
    lives) go by :func:`_bare_pid_exited`, and a lock file a killed process left half
    made by :func:`_stale_new_lock`; both stayed for good before.
    Counter and histogram values are added into ``counter_archive.db`` /
    ``histogram_archive.db`` (per metric and labels, as a scrape adds them), so every
    total stays what it was; gauges go as ``_GAUGE_FOLD`` says. Run by each worker as it
    starts, under the folder's lock, which :func:`render` takes shared: a scrape sees the
    files before or after, never the archive and the dead files both (counted twice) or
    neither. A failure leaves the files as they were, the worker starting all the same."""
    from prometheus_client.mmap_dict import MmapedDict

    swept: list[str] = []
    try:
        with _folder_lock(folder, exclusive=True):
            names = os.listdir(folder)
            groups: dict[str, list[str]] = {}
            tokens: set[str] = set()
            for name in names:
                match = _PROCESS_FILE.fullmatch(name)
                if match is not None:
                    token = match.group(2)
                    if token not in tokens and not _exited(folder, token):
                        continue
                else:
                    match = _BARE_PID_FILE.fullmatch(name)
                    if match is None:
                        continue
                    token = match.group(2)
                    if token not in tokens and not _bare_pid_exited(folder, int(token)):
                        continue
                tokens.add(token)
                groups.setdefault(match.group(1), []).append(os.path.join(folder, name))
            for kind, files in groups.items():
                mode = kind.partition("_")[2]
                if kind.startswith("gauge_") and mode not in _GAUGE_FOLD:
                    for path in files:
                        os.remove(path)
                    continue
                fold = _GAUGE_FOLD[mode] if kind.startswith("gauge_") else _add
                archive = os.path.join(folder, f"{kind}_archive.db")
                merged: dict[str, tuple[float, float]] = {}
                sources = [*files, archive] if os.path.exists(archive) else files
                for path in sources:
                    values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
                    for key, value, timestamp, _pos in values:
                        seen = (float(value), float(timestamp))
                        merged[key] = fold(merged[key], seen) if key in merged else seen
                fresh = archive + ".new"  # not *.db: no scrape reads it half written
                with contextlib.suppress(FileNotFoundError):
                    os.remove(fresh)
                out = MmapedDict(fresh)  # type: ignore[no-untyped-call]
                try:
                    for key, (value, timestamp) in merged.items():
                        out.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
                finally:
                    out.close()  # type: ignore[no-untyped-call]
                os.replace(fresh, archive)
                for path in files:
                    os.remove(path)
            # the lock files of exited processes, with or without files left
            for name in names:
                match = _ALIVE_FILE.fullmatch(name)
                if match is not None and (
                    match.group(1) in tokens or _exited(folder, match.group(1))
                ):
                    tokens.add(match.group(1))
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))
            # and half-made ones of processes killed as they made them (left for good)
            for name in names:
                match = _ALIVE_NEW_FILE.fullmatch(name)
                if match is not None and _stale_new_lock(os.path.join(folder, name)):
                    tokens.add(match.group(1))
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))
            swept = sorted(tokens)
    except (OSError, ValueError, RuntimeError, struct.error) as exc:
        # what a file that cannot be read, written or parsed raises (as in render()): a
        # worker is never stopped from starting over its metrics
        import logging

        logging.getLogger("ragstore.metrics").warning(
            "could not sweep the metrics files of exited processes in %s: %s", folder, exc
        )
    return swept


class ProcessMetrics(Collector):
    """Every metric this process records, merged with the other processes' where
    ``PROMETHEUS_MULTIPROC_DIR`` is set: what :func:`render` gives without the database
    figures. It is what ``ragstore worker --metrics-port`` serves: the queue and the
    collection sizes are the API's to report (a worker adding them doubled each series
    in a sum over targets); the ingest and model counters of background jobs are the
    worker's alone.

    ``sync`` runs before each collection: the worker's copies its runtime's pool figures
    (:func:`sync_runtime`), which nothing else in a worker updates; without it the pool
    gauges read zero, an idle pool, while its jobs queued for a connection."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync

    def collect(self) -> Iterable[Metric]:
        if self._sync is not None:
            self._sync()
        folder = multiprocess_dir()
        if not folder:
            return list(REGISTRY.collect())
        try:
            # shared: a process archiving dead processes' files (exclusive) never runs beside it
            with _folder_lock(folder, exclusive=False):
                merged = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
                return list(merged.collect())  # type: ignore[no-untyped-call]
        except (OSError, ValueError, RuntimeError, struct.error) as exc:
            raise _unreadable_folder(folder, exc) from exc


def _loopback_hosts_only(app: Any) -> Any:
    """The WSGI ``app`` answering ``403`` to a request whose ``Host`` is not this machine.

    A metrics port on loopback has no key: a web page of another site whose own name it
    makes resolve to 127.0.0.1 (DNS rebinding) read it as that site (the replicas' hosts,
    the routes, the job and model figures), as the API's guard refuses with keys off
    (``http/guard.py``). A scraper on this machine names ``127.0.0.1`` or
    ``localhost``.

    A request a proxy forwards for a client of another machine (``X-Forwarded-For``,
    ``X-Real-IP``, ``Forwarded``) is refused too, as the API's guard and its keyless
    /metrics refuse it (:func:`ragstore.http.guard.foreign_forwarded`): a reverse proxy
    on this machine (Apache's ``ProxyPass``) connects from loopback and names
    ``127.0.0.1``, and handed the port, meant for this machine alone, to the network."""
    from ragstore.http.guard import foreign_forwarded, foreign_party

    forwarding = (
        (b"x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
        (b"x-real-ip", "HTTP_X_REAL_IP"),
        (b"forwarded", "HTTP_FORWARDED"),
    )

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        given = {
            name: str(environ[key]).encode("latin-1")
            for name, key in ((b"host", "HTTP_HOST"), (b"origin", "HTTP_ORIGIN"))
            if key in environ
        }
        forwarded = foreign_forwarded(
            [
                (name, str(environ[key]).encode("latin-1"))
                for name, key in forwarding
                if key in environ
            ]
        )
        party = forwarded or foreign_party(given)
        if party is None:
            return app(environ, start_response)
        if forwarded is not None:
            body = (
                f"forbidden: {forwarded} is not this machine: this metrics port on loopback "
                "answers only this machine, and no proxy may forward others to it; bind "
                "--metrics-host to the address the scraper reaches (on a private network)\n"
            ).encode()
        else:
            body = (
                f"forbidden: {party} is not this machine: this metrics port on loopback "
                "answers only requests to localhost, 127.0.0.1 or [::1] (a guard against "
                "other sites' pages); scrape it by one of those names, or bind "
                "--metrics-host to the address the scraper reaches\n"
            ).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


def bound_on_loopback(server: Any) -> bool:
    """Whether the metrics ``server`` listens on this machine alone, judged from the
    address it bound, as ``ragstore serve`` judges its own (``RAGSTORE_API_BOUND``).

    The host as typed says too little: ``127.1``, ``LOCALHOST`` or this machine's name
    (Debian maps it to 127.0.1.1) bind loopback yet were judged another address, so the
    port went without its guard against other sites' pages (DNS rebinding read the
    metrics) and the worker warned that every host reached it."""
    from ragstore.profiles import is_loopback

    return is_loopback(str(server.server_address[0]))


def serve_process_metrics(
    host: str,
    port: int,
    *,
    sync: Callable[[], None] | None = None,
    extra: Iterable[Collector] = (),
) -> tuple[Any, threading.Thread]:
    """Serve :class:`ProcessMetrics` (``sync`` run before each scrape) and the ``extra``
    collectors over HTTP on ``host``:``port`` from a daemon thread (prometheus-client's
    threaded WSGI server); the server and its thread. Stop it with
    ``server.shutdown()`` then ``server.server_close()``.

    A port that cannot be bound (in use, no such address, a privileged port) raises a
    :class:`~ragstore.errors.ConfigError` that says what to change, before the caller
    does anything else: a worker that failed to serve its metrics later ran unwatched."""
    from prometheus_client import start_wsgi_server

    from ragstore.errors import ConfigError
    from ragstore.http.listen import bind_remedy

    if host.startswith("unix:"):
        # taken for a host name, it was told "does not resolve: Name or service not known"
        raise ConfigError(
            f"RAGSTORE_WORKER_METRICS_HOST={host!r}: the worker's metrics port listens on "
            "TCP only, not on a Unix socket; give --metrics-host an address of this machine "
            "(127.0.0.1 for it alone)"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessMetrics(sync))
    for collector in extra:
        registry.register(collector)
    try:
        server, thread = start_wsgi_server(port, addr=host, registry=registry)
        if bound_on_loopback(server):
            server.set_app(_loopback_hosts_only(server.get_app()))
        return server, thread
    except socket.gaierror as exc:
        raise ConfigError(
            f"RAGSTORE_WORKER_METRICS_HOST={host!r} does not resolve: {exc.strerror}; give "
            "--metrics-host an address of this machine (127.0.0.1 for it alone, 0.0.0.0 for all)"
        ) from None
    except OSError as exc:
        where = f"{host}:{port}"
        remedy = bind_remedy(exc, host, host_flag="--metrics-host", port_flag="--metrics-port")
        raise ConfigError(
            f"the worker cannot serve its metrics on {where}: {exc.strerror or exc}; {remedy}"
        ) from None
