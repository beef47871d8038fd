"""The native BM25 kernel: C functions compiled for, and created on, the embedded server.

``ragstore_bm25_topk`` calls ``ragstore_native.bm25_contenders`` (revision 0023) and
``ragstore_native.bm25_lists`` (revision 0024) where those functions exist and the SQL
``ragstore_bm25_contenders`` / ``ragstore_bm25_lists`` otherwise; each pair returns the
same arrays, bit for bit. :func:`sync` puts the C function in place when ragstore opens its
embedded server (after the schema check): it compiles ``ragstore_bm25.c`` with the
server's own ``pg_config`` headers (once a machine: into the build cache,
:func:`build_cache`; the file name holds a hash of the source, the flags and the server
version), copies it into ``DATA_DIR/pg/ragstore_native``, then creates the
functions in the schema ``ragstore_native``, naming the library relative to the server's
data directory. With the function already there and its library on disk it is
one query. Anything that fails (no compiler, a compile error, a server that will not load
it, a role that is not superuser) logs one warning and leaves the SQL path (a failed
compile, or a library the server would not load, is remembered for a day, so later opens
neither retry it nor warn again); an external
server (``RAGSTORE_DATABASE_URL``) is never touched. ``RAGSTORE_NATIVE_BM25=false`` drops
the schema, so every session of the database takes the SQL path.

A machine without a compiler (the Docker image's runtime stage) gets the library ahead of
time: :func:`prebuild` (``python -m ragstore.db.native --prebuild DIR``) compiles it where a
compiler is, named as :func:`install` looks for it (:func:`library_path` with the version
the embedded binaries report, :func:`embedded_server_version`), and
``RAGSTORE_NATIVE_BM25_PREBUILT=DIR`` makes :func:`install` copy it from there before it
looks in the build cache, never compiling. A directory without this source's, flags' and
server's file (built for another server version) is passed over as if unset.

The schema is outside ``public``: backups leave it out (``pg_dump --exclude-schema``), so
an archive restores on any server, and the embedded server gets it back at its next open.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ragstore.db.database import Database
from ragstore.db.embedded import pg_bin_dir

log = logging.getLogger("ragstore.db.native")

SCHEMA = "ragstore_native"
SOURCE = Path(__file__).with_name("ragstore_bm25.c")
# -ffp-contract=off: no fused multiply-add, whose single rounding would change the sums
CFLAGS = ("-O2", "-fPIC", "-ffp-contract=off")
COMPILE_TIMEOUT_S = 120
# (name, arguments, result, C symbol, options): revision 0023's ragstore_bm25_contenders
# and revision 0024's ragstore_bm25_lists (NULLs as the SQL takes them) and revision
# 0009's ragstore_bm25_score (STRICT:
# ragstore_bm25_topk never passes it a NULL)
FUNCTIONS = (
    (
        "bm25_contenders",
        "ids integer[], ws float8[], cuts float8[], cbs float8[], ratio float8, rest float8, "
        "theta float8, sids bigint[], OUT contenders bigint[], OUT bounds float8[]",
        "record",
        "ragstore_bm25_contenders",
        "",
    ),
    (
        "bm25_lists",
        "ids integer[], ws float8[], n integer, k1 float8, b float8, avgdl float8, "
        "OUT cand bigint[], OUT all_read boolean",
        "record",
        "ragstore_bm25_lists",
        "",
    ),
    (
        "bm25_score",
        "ids bigint[], lexs text[], ws float8[], k1 float8, b float8, avgdl float8",
        "TABLE (chunk_id bigint, raw float8)",
        "ragstore_bm25_score",
        "STRICT",
    ),
)
# one process at a time creates the functions (pg_advisory_xact_lock key)
_LOCK_KEY = 0x7261_6773_6E61_7476


RETRY_FAILED_BUILD_S = 24 * 3600  # a compile that failed is tried again after this


class NativeUnavailable(Exception):
    """Why the native kernel could not be put in place (logged, never raised further);
    ``quiet`` when it was logged already (a failed build remembered)."""

    def __init__(self, message: str, *, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


def library_dir(data_dir: Path) -> Path:
    """Where the embedded server under ``data_dir`` gets its library: inside its own data
    directory (``embedded.start`` runs it in ``data_dir/pg``), named relative to it."""
    return data_dir / "pg" / SCHEMA


def library_path(cache_dir: Path, server_version: str) -> Path:
    """Where the library for this source, these flags and this server goes."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(repr((CFLAGS, server_version, sys.platform)).encode())
    return cache_dir / f"ragstore_bm25-{digest.hexdigest()[:16]}.so"


def installed(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The library ``ragstore_native.bm25_contenders`` loads; None when it does not exist."""
    row = conn.execute(
        "SELECT p.probin FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        (SCHEMA, FUNCTIONS[0][0]),
    ).fetchone()
    return str(row[0]) if row else None


# one call on nothing, as _create_functions makes: it loads the library in the session
_CALL_ON_NOTHING = (
    f"SELECT * FROM {SCHEMA}.bm25_contenders('{{}}', '{{}}', '{{}}', '{{}}', 1, 0, 0, NULL)"
)


def unloadable(conn: psycopg.Connection[Any]) -> str | None:
    """Why the server behind ``conn`` cannot run the native kernel its catalog names, or
    None (it runs it, or none is installed). Raises where the connection failed.

    The functions reach a standby through the primary's WAL; the library file does not (it
    lies in the primary's data directory). A standby copied before the kernel was put in
    place, or before an upgrade changed its file's name, has the functions and no file:
    every hybrid and full-text search there failed (SQLSTATE 58P01, "could not access
    file"), while the replica looked healthy."""
    if installed(conn) is None:
        return None
    try:
        conn.execute(_CALL_ON_NOTHING).fetchone()
    except psycopg.Error as exc:
        if conn.broken or conn.closed or not exc.sqlstate:
            raise  # no answer from the server: not the kernel's
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        return (
            f"it cannot run the native BM25 kernel the primary installed ({reason}): "
            f"copy the primary's DATA_DIR/pg/{SCHEMA} folder into this standby's data "
            "directory, or set RAGSTORE_NATIVE_BM25=false for the primary's server "
            "(searches then take the SQL path everywhere)"
        )
    return None


def sync(
    db: Database,
    cache_dir: Path,
    *,
    enabled: bool = True,
    cc: str = "cc",
    prebuilt: Path | None = None,
) -> bool:
    """Install the native kernel on ``db`` (``enabled``) or remove it; whether it is in place.

    Never raises for a kernel that cannot be built or loaded: one warning, and search
    keeps the SQL path.
    """
    try:
        if not enabled:
            uninstall(db)
            return False
        return install(db, cache_dir, cc=cc, prebuilt=prebuilt)
    except (NativeUnavailable, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
        quiet = isinstance(exc, NativeUnavailable) and exc.quiet
        (log.debug if quiet else log.warning)(
            "native BM25 kernel not in use, search takes the SQL path: %s", exc
        )
        return False


def uninstall(db: Database) -> None:
    """Drop the native functions: every session takes the SQL path from its next search."""
    with db.connect(autocommit=True) as conn:
        if installed(conn) is not None:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def install(db: Database, cache_dir: Path, *, cc: str = "cc", prebuilt: Path | None = None) -> bool:
    """Compile (when neither ``prebuilt`` nor the build cache has it) and create the native
    functions; raises when it cannot."""
    if os.name != "posix":
        raise NativeUnavailable("built on POSIX systems only")
    with db.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        ).fetchone()
        assert row is not None
        version, superuser = str(row[0]), bool(row[1])
        lib = library_path(cache_dir, version)
        probin = _server_name(conn, lib) if superuser else str(lib)
        if installed(conn) == probin and lib.exists():
            return True
        if not superuser:
            raise NativeUnavailable("creating a C function needs a superuser role")
        if not lib.exists():
            _obtain(lib, cc, prebuilt)
        refused = _load_refusal(lib)
        if refused is not None:
            raise NativeUnavailable(refused, quiet=True)
        try:
            _create_functions(conn, probin)
        except psycopg.Error as exc:
            _remember_refusal(lib, exc)
            raise
    for stale in cache_dir.glob("ragstore_bm25-*.so"):
        if stale != lib:  # a server session that loaded it keeps its mapping
            stale.unlink(missing_ok=True)
    log.debug("native BM25 kernel in use (%s)", lib)
    return True


def _create_functions(conn: psycopg.Connection[tuple[object, ...]], probin: str) -> None:
    """The native functions created from the library the server knows as ``probin``, and
    called once, in one transaction: a library the server cannot load changes nothing."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO PUBLIC")
        for name, args, result, symbol, options in FUNCTIONS:
            # loading checks the library's magic block and finds the symbol
            conn.execute(
                sql.SQL(
                    f"CREATE OR REPLACE FUNCTION {SCHEMA}.{name}({args}) RETURNS {result} "
                    f"LANGUAGE C STABLE {options} PARALLEL SAFE AS {{lib}}, {{symbol}}"
                ).format(lib=sql.Literal(probin), symbol=sql.Literal(symbol))
            )
        conn.execute(_CALL_ON_NOTHING).fetchone()  # the library runs in this server


def _refusal_marker(lib: Path) -> Path:
    return lib.with_name(f".{lib.stem}.refused")


def _signature(lib: Path) -> str:
    st = lib.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _load_refusal(lib: Path) -> str | None:
    """Why the server refused this very file (same size and mtime) within the last day, or
    None: a library that does not load (a prebuilt one for another platform, a corrupt
    copy) is not offered to the server, nor warned about, at every open; a new file at the
    path is tried again at once."""
    marker = _refusal_marker(lib)
    try:
        if time.time() - marker.stat().st_mtime >= RETRY_FAILED_BUILD_S:
            return None
        signature, _, why = marker.read_text(encoding="utf-8").partition("\n")
        if signature != _signature(lib):
            return None
    except OSError:
        return None
    return f"the server refused {lib.name}: {why.strip()} (remembered in {marker})"


def _remember_refusal(lib: Path, exc: psycopg.Error) -> None:
    with contextlib.suppress(OSError):
        reason = " ".join(str(exc).split())
        _refusal_marker(lib).write_text(f"{_signature(lib)}\n{reason}\n", encoding="utf-8")


def _server_name(conn: psycopg.Connection[tuple[object, ...]], lib: Path) -> str:
    """How the server names ``lib``: relative to its data directory when it lies inside it.

    A server process works in its data directory, so a relative name holds wherever the
    directory moves and needs no permission on the folders above it (the server runs as
    another OS user when ragstore runs as root, and those folders may be private)."""
    row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    try:
        return str(lib.resolve().relative_to(Path(str(row[0])).resolve()))
    except ValueError:
        return str(lib)


def build_cache() -> Path:
    """The machine's build cache (``$XDG_CACHE_HOME/ragstore/native``, else
    ``~/.cache/ragstore/native``): a library compiled once serves every data directory."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ragstore" / "native"


def _obtain(lib: Path, cc: str, prebuilt: Path | None = None) -> None:
    """Put the library at ``lib``: copied from ``prebuilt`` when it holds this very file (an
    image built without a compiler at run time), else from the build cache, compiled there
    first when it is not; compiled in place when the cache cannot be written (a read-only
    home)."""
    if prebuilt is not None:
        ready = prebuilt / lib.name
        if ready.is_file():
            _copy(ready, lib)
            return
        log.debug("no prebuilt native BM25 kernel %s (another server version?)", ready)
    shared = build_cache() / lib.name
    try:
        if not shared.exists():
            _build(shared, cc)
        _copy(shared, lib)
    except NativeUnavailable:
        raise  # the compile failed (or failed within the day): the same in place
    except OSError as exc:
        log.debug("native BM25 build cache %s not usable (%s); building in place", shared, exc)
        _build(lib, cc)


def embedded_server_version() -> str:
    """What ``SHOW server_version`` returns on the embedded server, read from its binary
    (``postgres -V``: "postgres (PostgreSQL) 18.6" gives "18.6"), so that a library can be
    named for that server without one running (:func:`prebuild`)."""
    postgres = pg_bin_dir() / "postgres"
    out = subprocess.run(
        [str(postgres), "-V"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    prefix = "postgres (PostgreSQL) "  # then PG_VERSION, which server_version shows
    if not out.startswith(prefix):
        raise NativeUnavailable(f"{postgres} -V printed {out!r}, not {prefix}VERSION")
    return out[len(prefix) :]


def prebuild(dest_dir: Path, cc: str = "cc") -> Path:
    """Compile the library into ``dest_dir`` for the embedded server, without running it;
    the path it went to.

    Named as :func:`install` looks for it (``RAGSTORE_NATIVE_BM25_PREBUILT=dest_dir``), so a
    machine or image stage with a compiler builds it for one without. Raises
    :class:`NativeUnavailable` (or ``OSError``) when it cannot: a build step should fail.
    """
    lib = library_path(dest_dir, embedded_server_version())
    compile_library(lib, cc)
    return lib


def _copy(src: Path, lib: Path) -> None:
    """``src`` to ``lib`` atomically, readable by the server's OS user."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.parent.chmod(0o755)  # the server may run as another OS user (embedded.system_user)
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        tmp.chmod(0o755)
        tmp.replace(lib)
    finally:
        tmp.unlink(missing_ok=True)


def _build(lib: Path, cc: str) -> None:
    """:func:`compile_library`, a failure remembered for a day (next to the library) so that
    each command on a machine without a compiler neither tries again nor warns again."""
    tag = hashlib.sha256(cc.encode()).hexdigest()[:8]
    failed = lib.with_name(f".{lib.stem}.{tag}.failed")
    try:
        if time.time() - failed.stat().st_mtime < RETRY_FAILED_BUILD_S:
            why = failed.read_text(encoding="utf-8").strip()
            raise NativeUnavailable(f"{why} (remembered in {failed})", quiet=True)
    except OSError:
        pass  # no failure remembered
    try:
        compile_library(lib, cc)
    except (NativeUnavailable, OSError, subprocess.SubprocessError) as exc:
        with contextlib.suppress(OSError):
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(f"{exc}\n", encoding="utf-8")
        raise
    failed.unlink(missing_ok=True)


def compile_library(lib: Path, cc: str) -> None:
    """Compile ``SOURCE`` into ``lib`` with the embedded server's headers (atomically: a
    library half written is never at that path)."""
    pg_config = pg_bin_dir() / "pg_config"
    if not pg_config.exists():
        raise NativeUnavailable(f"no pg_config at {pg_config}")
    include = subprocess.run(
        [str(pg_config), "--includedir-server"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.parent.chmod(0o755)  # the server may run as another OS user (embedded.system_user)
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    try:
        try:
            done = subprocess.run(
                [cc, *CFLAGS, *link, f"-I{include}", "-o", str(tmp), str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:
            # no compiler is a build failure (remembered, not retried in place), not a
            # cache folder that cannot be written
            raise NativeUnavailable(
                f"no C compiler {cc!r} ({exc.strerror}): install one or point "
                "RAGSTORE_NATIVE_BM25_CC at it"
            ) from None
        if done.returncode != 0:
            first = next((x for x in done.stderr.splitlines() if x.strip()), "")
            raise NativeUnavailable(
                f"{cc} exited with {done.returncode} compiling {SOURCE.name}"
                + (f": {first.strip()}" if first else "")
            )
        tmp.chmod(0o755)
        tmp.replace(lib)
    finally:
        tmp.unlink(missing_ok=True)
