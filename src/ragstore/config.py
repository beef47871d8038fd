"""Settings: one validated object, read from ``RAGSTORE_*`` environment variables and ``.env``.

Nothing is read at import time; call :func:`ragstore.profiles.get_settings`. A bad value becomes one
:class:`~ragstore.errors.ConfigError` line naming the variable, the value and what is accepted.
Secrets are ``SecretStr`` so that printing the settings never shows them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ragstore.errors import ConfigError, pydantic_message
from ragstore.models import COLLECTION_NAME
from ragstore.urls import shown_url

ENV_PREFIX = "RAGSTORE_"

# the upper bounds of the byte-size settings: a size past them is a typo (a 401-digit
# number passed and overflowed where it was used), no limit anyone means
GIB = 1 << 30
TIB = 1 << 40

# the memory settings PostgreSQL takes (maintenance_work_mem, work_mem): from 64 kB to
# 2^31 - 1 kB (its MAX_KILOBYTES on 64-bit machines), in the units it reads
MIN_SERVER_MEMORY_KB = 64
MAX_SERVER_MEMORY_KB = (1 << 31) - 1
_MEMORY_UNITS_KB = {"kB": 1, "MB": 1 << 10, "GB": 1 << 20, "TB": 1 << 30}


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("ragstore", appauthor=False))


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped IPv6 addresses (RFC 4291)


def proxy_network_forms(
    item: str,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """One ``RAGSTORE_TRUSTED_PROXIES`` entry (an address or a network; host bits are
    dropped) as its network in each form a peer's address may take: an IPv4 network and
    the same as IPv4-mapped IPv6 (``::ffff:10.0.0.5``, how a dual-stack listener sees an
    IPv4 client), in either order; any other network alone. Raises ``ValueError`` for
    anything else.

    A proxy given in one form was compared with peers in that form only: listed as
    ``::ffff:10.0.0.5`` it was not trusted when seen as ``10.0.0.5``, nor the reverse, and
    its clients were all taken for the proxy's own address."""
    network = ipaddress.ip_network(item, strict=False)
    if isinstance(network, ipaddress.IPv4Network):
        mapped = int(_MAPPED.network_address) | int(network.network_address)
        return network, ipaddress.IPv6Network((mapped, 96 + network.prefixlen))
    if network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        plain = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return network, ipaddress.IPv4Network((plain, network.prefixlen - 96))
    return (network,)


# fields ``ragstore serve`` passes to the app it serves, never read from the environment
# or .env: the loopback guard trusts a Unix socket named in api_bound as the owner-only one
# serve made, and RAGSTORE_API_BOUND=unix:PATH beside `uvicorn --uds PATH` (a socket every
# local user can open) gave every user admin rights with keys off
SERVE_ONLY = frozenset({"api_bound"})

# fields read from the environment only, refused from a .env file, each with what it names.
# .env is read from the working directory, and the CLI's first use is `cd cloned-repo &&
# ragstore ingest .`: a repository's own .env naming the compiler ran any program of its
# choice as the user, and one naming a server or a database decided where the user's
# documents, queries and keys went. A value the environment (or the caller) also sets is
# not refused: the .env's is not used.
ENV_ONLY: dict[str, str] = {
    "native_bm25_cc": "a program ragstore runs (the C compiler of the native BM25 kernel)",
    "native_bm25_prebuilt": "a folder of native code loaded into the embedded PostgreSQL",
    "data_dir": "the embedded PostgreSQL's folder, whose configuration names programs "
    "and libraries the server runs",
    "database_url": "the database ragstore trusts: its model pins say where documents, "
    "queries and API keys from your environment are sent",
    "read_database_urls": "databases ragstore trusts as replicas of its own",
    "url": "the server the CLI sends your documents, queries and RAGSTORE_API_KEY to",
}


class _UserSource(PydanticBaseSettingsSource):
    """The environment or ``.env`` (``source``), refusing the fields only ``ragstore
    serve`` passes (:data:`SERVE_ONLY`); a ``.env`` (``dotenv``) refuses the fields read
    from the environment only (:data:`ENV_ONLY`) unless a source that wins over it
    (``above``) sets them too."""

    def __init__(
        self,
        source: PydanticBaseSettingsSource,
        *,
        dotenv: bool = False,
        above: tuple[PydanticBaseSettingsSource, ...] = (),
    ) -> None:
        super().__init__(source.settings_cls)
        self.source = source
        self.dotenv = dotenv
        self.above = above

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = self.source()
        for name in sorted(SERVE_ONLY & values.keys()):
            if values[name] == "":
                continue  # the default's value
            raise ConfigError(
                f"{ENV_PREFIX}{name.upper()} is set (in the environment or .env), but it is "
                "no setting: `ragstore serve` tells the app it serves which addresses it "
                "bound, and the app trusts a Unix socket named there as the owner-only one "
                f"serve made; unset {ENV_PREFIX}{name.upper()} ({ENV_PREFIX}API_HOST names "
                "the address to serve on)"
            )
        if self.dotenv:
            shadowed = {name for source in self.above for name in source()}
            _refuse_env_only([n for n in ENV_ONLY if n in values and n not in shadowed])
        return values


def _refuse_env_only(names: list[str]) -> None:
    """One ConfigError naming each of ``names`` (fields of :data:`ENV_ONLY`) that the
    ``.env`` file sets, what it names, and where to set it instead."""
    if not names:
        return
    variables = [ENV_PREFIX + name.upper() for name in names]
    where = dotenv_path()
    named = "; ".join(f"{v} names {ENV_ONLY[n]}" for v, n in zip(variables, names, strict=True))
    listed = variables[0] if len(variables) == 1 else ", ".join(variables)
    raise ConfigError(
        f"{listed} {'is' if len(variables) == 1 else 'are'} set in {where}, which is read from "
        f"the working directory and may have come with it (a cloned repository's .env): "
        f"{named}. Set {'it' if len(variables) == 1 else 'them'} in the environment instead "
        f"(export {variables[0]}=...) and remove {'it' if len(variables) == 1 else 'them'} "
        f"from {where}"
    )


def dotenv_path() -> str:
    """The ``.env`` file settings are read from, as an absolute path (it may not exist)."""
    import os

    return os.path.abspath(str(Settings.model_config.get("env_file") or ".env"))


class Settings(BaseSettings):
    """The effective configuration of one ragstore process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # nan and inf passed as numbers and were refused by a bound they are not below
        # ("should be less than or equal to 300"), or taken where there is none
        allow_inf_nan=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in its order, the environment and .env refusing
        the fields only ``ragstore serve`` passes (:data:`SERVE_ONLY`), .env those read
        from the environment only (:data:`ENV_ONLY`)."""
        return (
            init_settings,
            _UserSource(env_settings),
            _UserSource(dotenv_settings, dotenv=True, above=(init_settings, env_settings)),
            file_secret_settings,
        )

    profile: Literal["dev", "test", "prod"] = Field(
        "dev", description="Settings profile; prod refuses unsafe defaults."
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded PostgreSQL keeps its data, and backups by default.",
    )
    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL of an external server; unset = embedded server."
    )
    url: str | None = Field(
        None,
        description="Base URL of a running `ragstore serve`: the CLI's search and "
        "ingest go through it instead of loading the model in the CLI process.",
    )
    api_key: SecretStr | None = Field(
        None, description="API key the CLI sends to RAGSTORE_URL (when the server wants one)."
    )
    client_retries: int = Field(
        3,
        ge=0,
        le=100,
        description="How often the CLI sends a request to RAGSTORE_URL again after a failure "
        "that passes (the server restarting or not ready, 429); 0 = never.",
    )
    client_max_retry_wait_s: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="Seconds one CLI request to RAGSTORE_URL may spend waiting between its "
        "retries, all waits together.",
    )
    collection: str = Field(
        "default",
        min_length=1,
        max_length=63,
        pattern=f"^{COLLECTION_NAME}$",
        description="Collection used when a command names none.",
    )
    model: str = Field("all-MiniLM-L6-v2", description="Embedding model for new collections.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where local models run; auto picks the GPU when there is one."
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Texts per encode call.")
    embed_concurrency: int = Field(
        0,
        ge=0,
        le=64,
        description="Requests to an HTTP model's endpoint in flight at once while embedding "
        "documents; 0 = what the model was pinned with (4 unless `models add --concurrency`).",
    )
    embed_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="Threads a local model computes with (process-wide); 0 = torch's default, "
        "one per physical core. On a CPU shared with other busy processes 1 can be faster.",
    )
    ingest_batch_chunks: int = Field(
        512, ge=1, le=100_000, description="Chunks gathered across documents per encode round."
    )
    ingest_workers: int = Field(
        0,
        ge=0,
        le=256,
        description="Processes that parse and chunk files in an ingest of more than 2 MB; "
        "0 = one per core on 4 or more cores, or on 2 or more when the model is remote or on a "
        "GPU (else in the ingesting process), "
        "1 = in the ingesting process.",
    )
    bulk_load_bytes: int = Field(
        4 * 1024 * 1024,
        ge=0,
        le=TIB,
        description="A first load into an empty collection above this many bytes defers the "
        "vector index and builds it once at the end; 0 = always incremental.",
    )
    bulk_load_wait_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="Seconds a bulk load waits for its share of the connection pool while "
        "this process's other bulk loads hold it, and for its collection's write locks while "
        "another write of that collection holds them (as do `ragstore import` and the BM25 "
        "recount of `ragstore db check --repair`), before it fails (database_unavailable, "
        "retryable; nothing stored).",
    )
    index_build_memory: str = Field(
        "1GB",
        pattern=r"^[0-9]+(kB|MB|GB|TB)$",
        description="maintenance_work_mem for building a vector index after a bulk load "
        "(at most 4x the vectors' table is used), and work_mem of its BM25 build (at most "
        "256MB).",
    )
    native_bm25: bool = Field(
        True,
        description="On the embedded server, compile and use the C kernel of BM25's top k "
        "(same results, faster); false drops it. External servers always run the SQL.",
    )
    native_bm25_cc: str = Field(
        "cc", description="The C compiler that builds the native BM25 kernel."
    )
    native_bm25_prebuilt: str = Field(
        "",
        description="A folder of native BM25 kernels compiled ahead of time (python -m "
        "ragstore.db.native --prebuild DIR): the one for this server is copied from there, "
        "never compiled; empty = none.",
    )
    max_file_bytes: int = Field(
        50 * 1024 * 1024,
        ge=1,
        le=TIB,
        description="Files above this size are skipped at ingest, and so are files whose "
        "text unpacks to more characters than this.",
    )
    parse_timeout_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Seconds a PDF, DOCX, PPTX or EPUB file, a Markdown, HTML, code or "
        "notebook file of 8 KB or more, or a plain text file of 256 KB or more, may take to "
        "parse (in a helper process) before it is stopped and fails with parse_timeout; 0 = "
        "parse in the ingesting process, without a limit.",
    )
    read_database_urls: SecretStr | None = Field(
        None,
        description="Comma-separated postgresql:// URLs (or libpq key=value strings) of"
        " read replicas (hot standbys); searches, listings and document reads go there,"
        " everything else to the primary. The list is split at a comma followed by a URL"
        " or a key= (and at one in a URL's path): a multi-host URL (postgresql://h1,h2/db)"
        " or host=h1,h2 is one replica. A password's comma is written %2C in a URL, or"
        " quoted in a key=value item (password='a,b').",
    )
    max_replica_lag_s: float = Field(
        10.0, gt=0, le=86400, description="A replica further behind than this is skipped."
    )
    replica_wait_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="How long a read-your-writes read waits for a replica to"
        " replay the caller's last write before it goes to the primary.",
    )
    pool_min_size: int = Field(1, ge=0, le=100)
    pool_max_size: int = Field(10, ge=1, le=1000)
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    search_k: int = Field(10, ge=1, le=1000, description="Hits returned when a search names no k.")
    hnsw_ef_search: int = Field(100, ge=1, le=1000, description="Default HNSW ef_search.")
    max_answer_chunks: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="The most chunks one search may ask to be answered with: k hits, each "
        "with its context (k x (1 + 2 x N) for N neighbouring chunks, k x 200 for a "
        "section); a search asking for more is refused with answer_too_large before it "
        "runs. The default lets any search of k <= 100 through, whatever its context.",
    )
    search_timeout_s: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="A search statement running longer is ended with search_timeout; 0 = no "
        "limit. Ingests, migrations and index builds are not limited.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines: JSON, or readable text when auto and on a terminal."
    )
    log_queries: bool = Field(
        False, description="Log query texts (debugging only; off keeps queries out of logs)."
    )
    allow_embedded_in_prod: bool = Field(
        False, description="Let profile prod run on the embedded database (single machine)."
    )
    # HTTP API (ragstore serve) and background workers (ragstore worker)
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys: auto = off only for the embedded database on loopback."
    )
    api_host: str = Field("127.0.0.1", description="Address `ragstore serve` binds.")
    api_port: int = Field(8080, ge=0, le=65535, description="Port `ragstore serve` binds.")
    api_bound: str = Field(
        "",
        description="Not settable (refused from the environment and .env): the addresses "
        "`ragstore serve` bound (comma-separated), which it passes to the app it serves; "
        "auth=auto and the loopback guard are decided from them.",
    )
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, le=GIB, description="Largest JSON request body (request_too_large)."
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024,
        ge=1024,
        le=TIB,
        description="Largest multipart upload (request_too_large).",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request head (request line and headers): a client that sends "
        "more without finishing it is answered 431 headers_too_large and disconnected.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a connection may take to send a whole request head, counted "
        "from when it opened or its last response ended; then it is closed.",
    )
    queue_wait_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Seconds a request waits for one of the server's worker threads "
        "while every one is busy; then it is answered 503 overloaded (Retry-After) and not "
        "run. Only the waits for a thread count, never a request body arriving (nor an "
        "upload's files written to disk as they arrive); /healthz and /readyz are never "
        "shed, and they and /metrics have threads of their own. 0 = wait without limit.",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Open HTTP connections one server process (each of RAGSTORE_API_WORKERS) "
        "holds at once, and at most half its open-file limit (ulimit -n): a connection past "
        "it is answered 503 not_ready (Retry-After) and closed at once, so a flood of idle "
        "or half-sent connections cannot use up the descriptors the database pool and "
        "uploads need.",
    )
    max_connections_per_address: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="Open HTTP connections one server process holds at once from one client "
        "address (an IPv6 client: its /64); unset = a quarter of the connection cap in "
        "effect, 0 = no per-address cap. Past it the connection is answered 503 not_ready "
        "(Retry-After) and closed, so one host cannot take every slot of "
        "RAGSTORE_MAX_CONNECTIONS. RAGSTORE_TRUSTED_PROXIES and Unix-socket peers are not "
        "capped per address (a proxy carries many clients).",
    )
    mcp_max_sessions: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Sessions `ragstore mcp --transport http` holds open at once (each "
        "about 40 KB of memory); a client that would open one more is answered 503 "
        "not_ready (Retry-After) until a session ends or idles out.",
    )
    mcp_session_idle_s: float = Field(
        600.0,
        ge=10,
        le=86_400,
        description="Seconds an MCP session over HTTP may go without a request (none in "
        "flight, no open GET stream) before it is closed; its client then opens a new one.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed; empty = none (the client "
        "address is the TCP peer's).",
    )
    background_ingest_bytes: int = Field(
        256 * 1024, ge=0, le=TIB, description="Uploads above this size are ingested by a job (202)."
    )
    rate_limit_per_minute: int = Field(
        1200, ge=0, le=1_000_000, description="Requests per minute per API key; 0 = unlimited."
    )
    worker_heartbeat_s: float = Field(10.0, gt=0, le=3600)
    worker_metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port `ragstore worker` serves its Prometheus metrics on; unset: none "
        "(a worker opens no port unless asked).",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1",
        description="Address the worker's metrics port binds; it has no authentication.",
    )
    worker_stalled_after_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="A worker silent this long whose database session ended has its job retried.",
    )
    worker_max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="A job whose worker stopped this many times (killed, out of memory) "
        "fails instead of being retried again.",
    )
    job_retention_days: float = Field(
        30.0,
        ge=0,
        le=36500,
        description="Finished background jobs (succeeded or failed) older than this many days "
        "are deleted by the workers; 0 keeps them for ever.",
    )

    @field_validator("url")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host, or unset: anything else was tried as an address and
        reported as the server being unavailable (exit 69), not as a setting to fix."""
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                "not an http(s) URL of a ragstore server (e.g. http://127.0.0.1:8080); "
                "unset it to work on the database directly"
            )
        return value.strip()

    @field_validator("data_dir", mode="before")
    @classmethod
    def _named_data_dir(cls, value: object) -> object:
        """An empty RAGSTORE_DATA_DIR (``=$UNSET_VAR``) is an error: taken as the path
        ``""``, the current directory, it created a whole PostgreSQL cluster in ``./pg``
        wherever the command ran, and the command worked on that empty store."""
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "it is empty; name a folder, or unset it to use the default "
                f"({_default_data_dir()})"
            )
        return value

    @field_validator("model")
    @classmethod
    def _named_model(cls, value: str) -> str:
        """An empty RAGSTORE_MODEL (``=$UNSET_VAR``) is an error: it was looked up as a
        model named ``''`` and refused as ``no pinned model ''``, naming no variable."""
        if not value.strip():
            default = cls.model_fields["model"].default
            raise ValueError(
                "it is empty; name an embedding model (`ragstore models list` lists the "
                f"pinned and built-in ones), or unset it to use the default ({default})"
            )
        return value

    @field_validator("index_build_memory")
    @classmethod
    def _server_memory(cls, value: str) -> str:
        """A size PostgreSQL takes for maintenance_work_mem: below 64 kB (or above its
        2^31 - 1 kB) it was refused only when the index was built, at the very end of a
        bulk load, and reported as bad input (``invalid_input``, exit 65)."""
        match = re.fullmatch(r"([0-9]+)([a-zA-Z]+)", value)
        if match is None or match[2] not in _MEMORY_UNITS_KB:
            return value  # refused by the field's pattern
        kilobytes = int(match[1]) * _MEMORY_UNITS_KB[match[2]]
        if kilobytes < MIN_SERVER_MEMORY_KB:
            raise ValueError(
                f"it is below PostgreSQL's least, {MIN_SERVER_MEMORY_KB}kB; give at least "
                "64kB (e.g. 1GB, the default)"
            )
        if kilobytes > MAX_SERVER_MEMORY_KB:
            raise ValueError(
                f"it is above PostgreSQL's most, {MAX_SERVER_MEMORY_KB}kB (just under 2TB); "
                "give less (e.g. 1GB, the default)"
            )
        return value

    @model_validator(mode="after")
    def _pool_sizes(self) -> Settings:
        """The pool's least size no more than its most: psycopg_pool refused it only at the
        first use of the database, with a traceback (``serve``: application startup
        failed)."""
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"{ENV_PREFIX}POOL_MIN_SIZE={self.pool_min_size} is above "
                f"{ENV_PREFIX}POOL_MAX_SIZE={self.pool_max_size}; lower it or raise the maximum"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A PostgreSQL URL (or libpq ``key=value`` string), or unset. A typo was reported
        as the database being unavailable (exit 69) at the first connection; an empty value
        (``RAGSTORE_DATABASE_URL=$UNSET``) reached libpq as "all defaults" and the command
        went to whatever server listened on the local socket."""
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            raise ValueError(
                "it is empty; set it to postgresql://user:password@host:5432/dbname, or "
                "unset it to use the embedded server under RAGSTORE_DATA_DIR"
            )
        _check_conninfo(text, "")
        return SecretStr(text)

    @field_validator("read_database_urls")
    @classmethod
    def _replica_urls(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Each item of the list a PostgreSQL URL: a typo was taken as a replica that is
        down, every read went to the primary, and nothing said why. No server is reached
        through two items (:func:`shared_servers`), and no item names every host the
        primary may be on (its one host, or all of a multi-host primary's): whichever is
        the primary, the item would reach it. An item naming some of a multi-host
        primary's hosts (its failover hosts, a standby while another is the primary) is a
        replica: refusing it stopped a common setup from starting; it is warned about
        (:func:`failover_replica_warnings`)."""
        if value is None:
            return None
        text = value.get_secret_value()
        ambiguous = ambiguous_password_item(text)
        if ambiguous is not None:
            raise ValueError(
                f"item {ambiguous} of the comma-separated list ends in a password followed by "
                "a comma and a key=: is that the password's own comma, or the start of the next "
                "replica? Quote the password (password='a,b=c') or percent-encode it in a URL "
                "(, as %2C, = as %3D) if it is the password's; put a space after the comma if "
                "the next replica starts there"
            )
        items = split_conninfo_list(text)
        for number, item in enumerate(items, 1):
            try:
                _check_conninfo(item, f"item {number} of the comma-separated list ")
            except ValueError as exc:
                if len(items) == 1:
                    raise
                # a comma the list was split at that belonged to the item (a password's)
                raise ValueError(
                    f"{exc} (the list is split at each comma followed by a URL, a key= or "
                    "nothing, and at a comma in a URL's path; write a password's comma as %2C)"
                ) from None
        seen: dict[tuple[object, ...], int] = {}
        for number, item in enumerate(items, 1):
            key = server_key(item)
            if key in seen:
                # each item is a pool of its own: one server listed twice (or spelled twice:
                # hosts in another order, other options) had twice the connections and twice
                # the share of the reads
                raise ValueError(
                    f"items {seen[key]} and {number} of the comma-separated list name the same "
                    f"server ({describe_server(key)}); list each replica once"
                )
            seen[key] = number
        # a server in two items (a multi-host item naming a host another one names) got
        # the reads of both: its share doubled, the others' shrank. The primary's server in
        # an item was read from as a replica (the first host that answers is the primary:
        # unless the item asks libpq for a standby, every read it got was the primary's)
        keys = [server_key(item) for item in items]
        for later in range(1, len(keys)):
            for earlier in range(later):
                shared = shared_servers(keys[earlier], keys[later])
                if shared is not None:
                    raise ValueError(
                        f"items {earlier + 1} and {later + 1} of the comma-separated list "
                        f"both name {describe_server(shared)}: that server would take the "
                        "reads of both (twice its share); name each server in one item only "
                        "(hosts are compared as written, no name resolved)"
                    )
        primary = info.data.get("database_url")
        if isinstance(primary, SecretStr) and primary.get_secret_value().strip():
            primary_key = server_key(primary.get_secret_value())
            primary_servers = primary_key[0]
            assert isinstance(primary_servers, frozenset)
            for number, (item, key) in enumerate(zip(items, keys, strict=True), 1):
                shared = shared_servers(primary_key, key)
                if shared is None or asks_for_standby(item) or shared[0] != primary_servers:
                    # a host of a multi-host primary (its failover hosts) is a standby
                    # while another is the primary: a valid replica, warned about
                    # (failover_replica_warnings)
                    continue
                # the item names every host the primary may be on: whichever it is, the
                # item reaches it
                if len(primary_servers) == 1:
                    raise ValueError(
                        f"item {number} of the comma-separated list names the primary's "
                        f"{describe_server(shared)} (RAGSTORE_DATABASE_URL): reads sent there "
                        "would be the primary's; remove that host from the item, or add "
                        "target_session_attrs=standby where its hosts take turns as the "
                        "primary (hosts are compared as written, no name resolved)"
                    )
                raise ValueError(
                    f"item {number} of the comma-separated list names every host of the "
                    f"primary's ({describe_server(shared)}; RAGSTORE_DATABASE_URL): "
                    "whichever of them is the primary, the item reaches it, a primary and "
                    "no replica; name only the standbys' hosts in the item, or add "
                    "target_session_attrs=standby (hosts are compared as written, no name "
                    "resolved)"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        """Addresses or networks only: ``*`` would let any client pick its own address, and
        so would a network of every address (``0.0.0.0/0``, ``::/0``), which was taken: a
        client then named its own address in ``X-Forwarded-For``, past the failed-key
        throttle and, with keys off, past the loopback guard."""
        for item in (p.strip() for p in value.split(",")):
            if not item:
                continue
            try:
                forms = proxy_network_forms(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                ) from None
            # ::ffff:0:0/96 is every IPv4 client of a dual-stack listener: its IPv4 form
            # is 0.0.0.0/0
            if any(network.prefixlen == 0 for network in forms):
                raise ValueError(
                    f"{item!r} is every address: any client could then name its own address "
                    "in X-Forwarded-For; give the proxies' own addresses or network "
                    "(e.g. 10.0.0.5, 10.0.0.0/24)"
                )
        return ",".join(p.strip() for p in value.split(",") if p.strip())

    def redacted(self) -> dict[str, Any]:
        """The settings as plain values with every secret replaced by ``**********``, and
        the password of a URL in any other setting masked as the CLI's errors mask it:
        RAGSTORE_URL (whose ``user:password@`` httpx sends as basic auth, for a proxy
        before the server) is no secret setting, and `config show` printed it whole."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, str):
                value = shown_url(value)
            out[name] = value
        return out

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def replica_urls(self) -> list[str]:
        """The read replicas' conninfos, in the order given (empty: reads go to the primary)."""
        if self.read_database_urls is None:
            return []
        return split_conninfo_list(self.read_database_urls.get_secret_value())


# where a new item of a list of conninfos starts: a URL (of any scheme, so that a wrong one
# is reported as such), a libpq key=value string, or nothing (an empty item)
_ITEM_START = re.compile(r"\s*(?:,|$|[A-Za-z][A-Za-z0-9+.-]*://|[A-Za-z_][A-Za-z0-9_]*\s*=)")
_URL_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")


def split_conninfo_list(text: str) -> list[str]:
    """``RAGSTORE_READ_DATABASE_URLS`` as its conninfos, stripped, empty items dropped.

    Split at every comma, a libpq multi-host replica
    (``postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-only``, ``host=h1,h2``)
    became broken pieces and the setting was refused. A comma now ends an item where a new
    one starts after it (``scheme://``, ``key=``, another comma or the end), and anywhere in
    a URL's path (a database name holds no comma: ``postgresql://h/db,typo`` is two items,
    the second refused); never inside a ``key=value`` item's quoted value
    (``password='a,b'``) nor after its backslash."""
    items = [text[start:end].strip() for start, end in _item_spans(text)]
    return [item for item in items if item]


# an item that ends in an unquoted password: a key=value item's last value, a URL's last
# query parameter
_ENDS_IN_PASSWORD = re.compile(r"(?:(?:^|\s)password\s*=\s*(?:[^\s'\\]|\\.)*|[?&]password=[^&#]*)$")
_KEY_NEXT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*=")


def ambiguous_password_item(text: str) -> int | None:
    """The number of the first item of a conninfo list that ends in an unquoted password
    followed by a comma and, with no space between, a ``key=`` (None: no such item).

    ``host=h password=a,dbname=b`` is a password ``a,dbname=b`` to libpq and two replicas
    to the list (``host=h password=a`` and ``dbname=b``, the local socket's): both items
    valid, the list was taken as two replicas, the first with a wrong password. Where the
    comma is the password's, the password is quoted (``password='a,dbname=b'``) or, in a
    URL, percent-encoded (``%2C``); where it ends the item, a space after it says so."""
    for number, (start, end) in enumerate(_item_spans(text), 1):
        if (
            end < len(text)
            and _KEY_NEXT.match(text, end + 1)
            and _ENDS_IN_PASSWORD.search(text[start:end].strip())
        ):
            return number
    return None


def _item_spans(text: str) -> list[tuple[int, int]]:
    """Where each item of :func:`split_conninfo_list` starts and ends in ``text`` (its
    comma, or the end), blanks and empty items included."""
    spans: list[tuple[int, int]] = []
    start = i = 0
    while start <= len(text):
        url = _URL_START.match(text, start)
        path = query = len(text)  # in a URL: where its path and its query start
        if url:
            path = _first_of(text, "/?#", url.end())
            query = _first_of(text, "?#", path)
        quoted = value_next = False  # in a key=value item: in quotes; a value comes next
        i = start
        while i < len(text):
            char = text[i]
            if not url and char == "\\":
                i, value_next = i + 2, False
                continue
            if quoted:
                quoted = char != "'"
            elif not url and char == "'" and value_next:
                quoted = True
            elif char == "," and (path <= i < query or _ITEM_START.match(text, i + 1)):
                break
            value_next = not url and (char == "=" or (value_next and char.isspace()))
            i += 1
        spans.append((start, min(i, len(text))))
        start = i + 1
    return spans


def server_key(conninfo: str) -> tuple[object, ...]:
    """What a (valid) conninfo connects to, for telling two spellings of one server apart:
    its hosts and ports (as a set: their order and libpq's defaults aside), its database
    (the user's name where it names none, as libpq does) and its service. Everything else
    (user, password, options, whitespace) leaves the server the same."""
    import os

    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v).strip() for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    names = (params.get("host") or os.environ.get("PGHOST", "")).split(",")
    addresses = (params.get("hostaddr") or os.environ.get("PGHOSTADDR", "")).split(",")
    if len(names) < len(addresses):
        names += [""] * (len(addresses) - len(names))
    # libpq connects to a host's hostaddr where one is given (its host is then only the
    # name that TLS and the password file check): two items naming one host with two
    # addresses (one certificate's name for several servers) are two servers
    hosts = [
        _host_as_written(address if address.strip() else name)
        for name, address in zip(names, addresses + [""] * len(names), strict=False)
    ]
    ports = [p.strip() for p in (params.get("port") or os.environ.get("PGPORT", "")).split(",")]
    if len(ports) == 1:
        ports *= len(hosts)  # one port for every host
    ports = [p or "5432" for p in ports]
    servers = frozenset(zip(hosts, ports, strict=False))
    user = params.get("user") or os.environ.get("PGUSER", "")
    dbname = params.get("dbname") or os.environ.get("PGDATABASE", "") or user
    return (servers, dbname, params.get("service", ""))


def _host_as_written(host: str) -> str:
    """A host of a conninfo for comparing: lower case, a socket directory (``/tmp/``)
    without its trailing ``/``. Nothing is resolved."""
    host = host.strip().lower()
    return (host.rstrip("/") or "/") if host.startswith("/") else host


def shared_servers(a: tuple[object, ...], b: tuple[object, ...]) -> tuple[object, ...] | None:
    """The servers two :func:`server_key` s have in common, as a key of their own (for
    :func:`describe_server`): the same host and port, the same database. None when they
    share none, or when either names a service (its hosts are in the service file, which is
    not read).

    Hosts are compared as written (case aside; a socket directory without a trailing
    ``/``), ports with libpq's default filled in: no name is resolved, so ``localhost`` and
    ``127.0.0.1``, or a host's name and its address, are two servers here."""
    servers_a, dbname_a, service_a = a
    servers_b, dbname_b, service_b = b
    assert isinstance(servers_a, frozenset) and isinstance(servers_b, frozenset)
    if service_a or service_b or dbname_a != dbname_b:
        return None
    shared = servers_a & servers_b
    return (frozenset(shared), dbname_a, "") if shared else None


# target_session_attrs under which libpq skips a primary that answers (prefer-standby
# takes one only when no standby does, and the router's probe then finds it no standby)
_STANDBY_ATTRS = frozenset({"standby", "prefer-standby", "read-only"})


def asks_for_standby(conninfo: str) -> bool:
    """Whether a (valid) conninfo has libpq pass over a primary among its hosts: a replica
    item naming the primary's host (hosts that take turns as the primary) reaches a standby."""
    from psycopg.conninfo import conninfo_to_dict

    attrs = conninfo_to_dict(conninfo).get("target_session_attrs") or ""
    return str(attrs).strip().lower() in _STANDBY_ATTRS


def failover_replica_warnings(settings: Settings) -> list[str]:
    """A line for each replica item naming some, not all, of the hosts of a multi-host
    primary (its failover hosts) without asking libpq for a standby.

    Such an item is accepted (the validator refuses only an item naming every host the
    primary may be on): that host is a standby while another is the primary. While it is
    the primary (after a failover to it) the router finds it no standby and skips the
    item; an item of other hosts too went on to them had it asked for a standby."""
    if settings.database_url is None or settings.read_database_urls is None:
        return []
    primary_key = server_key(settings.database_url.get_secret_value())
    lines = []
    for number, item in enumerate(settings.replica_urls, 1):
        key = server_key(item)
        shared = shared_servers(primary_key, key)
        if shared is None or asks_for_standby(item):
            continue
        others = shared[0] != key[0]  # the item has hosts the primary does not name
        lines.append(
            f"item {number} of RAGSTORE_READ_DATABASE_URLS names {describe_server(shared)}, "
            "a failover host of RAGSTORE_DATABASE_URL: while it is the primary (after a "
            "failover to it) it is no standby, and reads skip the item"
            + (
                "; add target_session_attrs=standby to the item to have libpq pass over it "
                "to the item's other hosts then"
                if others
                else " (they go to the other replicas, or to the primary)"
            )
        )
    return lines


def describe_server(key: tuple[object, ...]) -> str:
    """A :func:`server_key` as text for an error: hosts, ports and database, no secret."""
    servers, dbname, service = key
    assert isinstance(servers, frozenset)
    where = ", ".join(f"{host or 'the local socket'}:{port}" for host, port in sorted(servers))
    return (
        where
        + (f", database {dbname}" if dbname else "")
        + (f", service {service}" if service else "")
    )


def _first_of(text: str, chars: str, start: int) -> int:
    """Where the first of ``chars`` is in ``text`` from ``start`` (its length: none)."""
    found = [at for at in (text.find(c, start) for c in chars) if at != -1]
    return min(found, default=len(text))


# schemes read letter by letter whose first letter's name starts with a vowel sound
_SPELLED_AN = frozenset({"http", "https", "ftp", "ftps", "sftp", "smb", "ldap", "ldaps"})


def _check_conninfo(text: str, which: str) -> None:
    """Refuse what libpq could never take as a connection string: a URL of another
    scheme (``http://``), a bare word, or a URL or ``key=value`` string libpq cannot parse
    (an unquoted space or an unclosed quote in a password, a bad ``%`` escape). The value
    is never repeated (it may hold a password), nor what libpq quotes of it
    (:func:`conninfo_problem`); ``which`` says which item of a list was wrong.

    A string libpq could not parse was reported at the first connection as the database
    being unavailable (exit 69), quoting the piece it stopped at: ``missing "=" after
    "cret"`` of ``password=se cret``."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres"):
            if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme):
                # said letter by letter: an http://, an ftp://
                article = "an" if scheme[0] in "aeiou" or scheme in _SPELLED_AN else "a"
                shown = f"{article} {scheme}:// URL"
            else:
                shown = "a URL of another scheme"
            problem = f"{which or 'it '}is {shown}, not postgresql://"
            raise ValueError(f"{problem}; e.g. postgresql://user:password@host:5432/dbname")
        form, example = "PostgreSQL URL", "percent-encode a reserved character (@ as %40)"
    elif "=" in text:  # libpq's key=value form (host=/tmp dbname=x)
        form, example = (
            "libpq key=value string",
            "quote a value that holds a space or a quote: password='a b\\'c'",
        )
    else:
        raise ValueError(
            f"{which or 'it '}is not a PostgreSQL URL; "
            "e.g. postgresql://user:password@host:5432/dbname"
        )
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        raise ValueError(
            f"{which or 'it '}is not a valid {form}: {conninfo_problem(exc)}; {example}"
        ) from None
    # libpq reads the port only when it connects: ``host:notaport`` passed here and was
    # reported as the database being unavailable (exit 69). The port is not repeated: a
    # password with an unencoded ``@`` or ``:`` in it is what ends up there.
    ports = str(parts.get("port") or "").split(",")  # one per host of a multi-host URL
    if not all(p.strip() == "" or _is_port(p.strip()) for p in ports):
        raise ValueError(
            f"{which or 'it '}names a port that is not a number from 1 to 65535; e.g. "
            + (
                "postgresql://user:password@host:5432/dbname (percent-encode a reserved "
                "character of the password: @ as %40, : as %3A)"
                if "://" in text
                else "port=5432"
            )
        )
    # a password's unencoded ``@`` ends the password there: the rest became the host
    # (``bob:S3CR@ETpw@127.0.0.1`` is host ``ETpw@127.0.0.1``), which errors and logs then
    # printed as the server that could not be reached, the password's end with it
    hosts = str(parts.get("host") or "").split(",")
    if any("@" in host and not host.startswith("/") for host in hosts):
        raise ValueError(
            f"{which or 'it '}names a host with an @ in it; "
            + (
                "percent-encode @ in the password as %40: "
                "postgresql://user:pass%40word@host:5432/dbname"
                if "://" in text
                else "a host name holds no @"
            )
        )
    _check_options(parts, which)


# libpq's options that take one of a few words (the superset of libpq 14 to 18), compared
# as libpq compares them: case matters, except for the TLS versions
_FIXED_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "channel_binding": ("disable", "prefer", "require"),
    "gssencmode": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
_ANY_CASE = frozenset({"ssl_min_protocol_version", "ssl_max_protocol_version"})
# libpq's options that take a whole number (parse_int_param: a C int, blanks around it)
_INTEGER_OPTIONS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_C_INT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def _check_options(parts: dict[str, Any], which: str) -> None:
    """Refuse a value libpq would refuse for one of its fixed-choice or whole-number
    options (``sslmode=requre``, ``keepalives=maybe``). libpq refuses them only when it
    connects, and the error was reported as the database being unavailable (exit 69,
    retried). The value is not repeated: a password's unencoded ``&`` or ``?`` may be
    what ends up in an option."""
    for name, choices in _FIXED_CHOICES.items():
        value = parts.get(name)
        if value is None:
            continue
        given = str(value).lower() if name in _ANY_CASE else str(value)
        if given not in (c.lower() if name in _ANY_CASE else c for c in choices):
            raise ValueError(
                f"{which or 'it '}sets {name} to a value libpq does not take; use one of "
                + ", ".join(choices)
                + ("" if name in _ANY_CASE else " (lower case)")
            )
    for name in _INTEGER_OPTIONS:
        value = parts.get(name)
        if value is None:
            continue
        text = str(value)
        whole = _C_INT.fullmatch(text) is not None
        # psycopg reads connect_timeout itself, as a Python int of any size
        if whole and name != "connect_timeout":
            whole = -(1 << 31) <= int(text) < (1 << 31)
        if not whole:
            raise ValueError(
                f"{which or 'it '}sets {name} to something that is not a whole number; "
                f"e.g. {name}=" + ("1" if name == "keepalives" else "10")
            )


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


# the one message of libpq's on a conninfo it cannot parse whose quotes hold its own words
_MISSING_EQUALS = 'missing "=" after '


def conninfo_problem(exc: BaseException) -> str:
    """libpq's message on a conninfo it cannot parse, on one line, with what it quotes of
    the conninfo hidden: ``missing "=" after "cret"`` (``password=se cret``), ``invalid
    percent-encoded token: "s3cr%ZZ"`` and ``invalid connection option "et'"\\@/"`` (a
    broken quote) quote a password's. Everything from the first quote to the last is
    hidden: a piece may hold quotes of its own."""
    text = " ".join(str(exc).split())
    head = _MISSING_EQUALS if text.startswith(_MISSING_EQUALS) else ""
    rest = text[len(head) :]
    first, last = rest.find('"'), rest.rfind('"')
    if first == -1:
        return text
    return head + rest[:first] + '"…"' + (rest[last + 1 :] if last > first else "")


def describe_error(err: dict[str, Any]) -> str:
    """The line a user reads for one of pydantic's errors on a setting: the variable, its
    value (hidden where it may hold a secret) and what is wrong
    (:func:`~ragstore.errors.pydantic_message`)."""
    field = ".".join(str(p) for p in err.get("loc", ()))
    if not field:
        # a check of several settings together (the pool's sizes): its message names them
        return pydantic_message(err)
    variable = ENV_PREFIX + field.upper()
    value = err.get("input")
    if isinstance(value, SecretStr) or "url" in field or "password" in field or "key" in field:
        shown = "(secret)"
    else:
        shown = repr(value)
        if len(shown) > 100:  # a 401-digit number was echoed whole
            shown = shown[:100] + "..."
    problem = pydantic_message(err)
    if err.get("type") == "finite_number":
        # pydantic's "Input should be a finite number" said nothing of what nan is not
        problem = "it is not a finite number (nan and inf are not accepted); give a number"
        bounds = describe_bounds(field) if field in Settings.model_fields else ""
        problem += f" {bounds}" if bounds else ""
    return f"{variable}={shown}{_env_file_of(variable)} is invalid: {problem}"


def field_bounds(name: str) -> tuple[float | None, bool, float | None, bool]:
    """A numeric setting's bounds as its field declares them: the least value and whether
    it is allowed itself (``ge``) or not (``gt``), the most likewise; None: unbounded.
    The messages and docs/operations/configure.md's bounds are checked against them."""
    low: float | None = None
    high: float | None = None
    low_in = high_in = True
    for rule in Settings.model_fields[name].metadata:
        if getattr(rule, "ge", None) is not None:
            low, low_in = rule.ge, True
        elif getattr(rule, "gt", None) is not None:
            low, low_in = rule.gt, False
        if getattr(rule, "le", None) is not None:
            high, high_in = rule.le, True
        elif getattr(rule, "lt", None) is not None:
            high, high_in = rule.lt, False
    return low, low_in, high, high_in


def describe_bounds(name: str) -> str:
    """A numeric setting's bounds in words: ``from 1 to 1000``, ``above 0 and at most
    300``; empty when it has none."""
    low, low_in, high, high_in = field_bounds(name)
    if low is None and high is None:
        return ""
    if low is not None and high is not None and low_in and high_in:
        return f"from {low:,} to {high:,}"
    parts = []
    if low is not None:
        parts.append(f"{'at least' if low_in else 'above'} {low:,}")
    if high is not None:
        parts.append(f"{'at most' if high_in else 'below'} {high:,}")
    return " and ".join(parts)


def env_file_path() -> str:
    """The ``.env`` file settings are read from, as an absolute path (it may not exist)."""
    import os

    return os.path.abspath(str(Settings.model_config.get("env_file") or ".env"))


def unreadable_env_file(exc: OSError | UnicodeDecodeError) -> ConfigError:
    """The error for a ``.env`` that could not be read (``exc``): which file, why, and
    what to do. A ``.env`` that was not UTF-8, or that this user may not read, stopped
    every command with a traceback (exit 1)."""
    path = env_file_path()
    if isinstance(exc, UnicodeDecodeError):
        # the file's own offset (a decoder given the file in pieces counts from its piece)
        data, start = exc.object, exc.start
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            data.decode("utf-8")
        except UnicodeDecodeError as whole:
            start = whole.start
        except OSError:
            pass
        line = data.count(b"\n", 0, start) + 1
        return ConfigError(
            f"the settings file {path} is not UTF-8 text (byte 0x{data[start : start + 1].hex()} "
            f"at offset {start}, line {line}); save it as UTF-8 (e.g. iconv -f latin1 -t "
            "utf-8), or move it out of this directory"
        )
    reason = exc.strerror or type(exc).__name__
    return ConfigError(
        f"the settings file {path} cannot be read ({reason}); make it readable by this "
        "user (chmod u+r), or move it out of this directory"
    )


def _env_file_of(variable: str) -> str:
    """`` (from /path/.env)`` where ``variable`` came from the ``.env`` file, not the
    environment: ``RAGSTORE_SEARCH_K='abc' is invalid`` sent a user whose environment has
    no such variable looking for it there. Empty otherwise."""
    import os

    # the environment wins over .env; pydantic-settings reads both ignoring case
    if variable.lower() in {k.lower() for k in os.environ}:
        return ""
    env_file = str(Settings.model_config.get("env_file") or "")
    if not env_file or not os.path.isfile(env_file):
        return ""
    from dotenv import dotenv_values

    try:
        held = variable.lower() in {k.lower() for k in dotenv_values(env_file)}
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (from {os.path.abspath(env_file)})" if held else ""
