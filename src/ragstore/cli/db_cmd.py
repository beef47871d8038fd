"""``ragstore db``: schema status, upgrade and downgrade (Alembic under an advisory lock),
checks, and the metadata fields indexed for range filters.

Both directions back the database up first (``--no-backup`` skips it); a downgrade also
asks before it drops anything (``--yes`` answers for scripts).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from ragstore.cli.output import confirm, echo_json
from ragstore.cli.remote import refuse_remote

if TYPE_CHECKING:
    from ragstore.db import migrations
    from ragstore.db.database import Database
    from ragstore.db.migrations import SchemaStatus
    from ragstore.runtime import Runtime

app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)


# A space still being filled is a model migration under way or interrupted (killed, a
# lost connection): its missing index is no finding, but the operator needs the way on.
BUILDING_HINT = (
    "    a model migration fills this space and has not switched to it: under way, or "
    "interrupted; `ragstore models status` shows it, the same `ragstore models migrate` "
    "again finishes it, `ragstore models cancel` drops it"
)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the schema revision of the database and of the code."""
    from ragstore.db import migrations
    from ragstore.db.inspection import database_collation
    from ragstore.runtime import Runtime

    refuse_remote("db status")
    with Runtime() as rt:
        db = rt.raw_db()
        st = migrations.status(db)
        if st.current is None:  # it said "(empty database)" of ragstore's tables
            migrations.refuse_lost(db)
        with db.connect() as conn:
            collation, byte_order = database_collation(conn)
    state = "ahead" if st.unknown else "behind" if st.pending else "current"
    if as_json:
        echo_json(
            {
                "database": db.where,
                "current": st.current,
                "head": st.head,
                "pending": st.pending,
                "state": state,
                "collation": collation,
                "collation_byte_order": byte_order,
            }
        )
        return
    typer.echo(f"database: {db.where}")
    typer.echo(f"current:  {st.current or '(empty database)'}")
    typer.echo(f"head:     {st.head}")
    if st.unknown:
        typer.echo("state:    AHEAD of this code (unknown revision)")
    elif st.pending:
        typer.echo(f"state:    behind; pending {', '.join(st.pending)} (run `ragstore db upgrade`)")
    else:
        typer.echo("state:    current")
    if byte_order:
        typer.echo(f"collation: {collation}")
    else:
        typer.echo(
            f"collation: {collation}: string ranges in filters follow its language rules "
            "(punctuation skipped at first, so a folder's source range can leave files out); "
            "a database made with LC_COLLATE 'C' orders them byte by byte "
            "(docs/operations/install.md)"
        )


@app.command("upgrade")
def upgrade(
    to: str = typer.Option("head", "--to", metavar="REV", help="Target revision."),
    sql: bool = typer.Option(
        False, "--sql", help="Print the SQL that would run on the database instead of running it."
    ),
    start: str | None = typer.Option(
        None,
        "--from",
        metavar="REV",
        help="With --sql: print from this revision (base: an empty database) without "
        "opening the database.",
    ),
    no_backup: bool = typer.Option(
        False, "--no-backup", help="Do not back the database up before upgrading."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Upgrade the schema to the code's revision (or --to REV); backs up first."""
    from ragstore.errors import InputError
    from ragstore.runtime import Runtime

    if not to.strip():  # Alembic fails an empty target on an assert: a traceback
        raise InputError("--to is empty; give a schema revision (`ragstore db status`) or head")
    if start is not None and not sql:
        raise InputError("--from goes with --sql (it says where the printed SQL starts)")
    if sql:
        _print_upgrade_sql(to, start)
        return
    refuse_remote("db upgrade")
    with Runtime() as rt:
        upgrade_with_backup(rt, to, backup=not no_backup, as_json=as_json)


def _print_upgrade_sql(to: str, start: str | None) -> None:
    """Print the SQL ``db upgrade --to TO`` would run: from the database's revision, or
    from ``start`` (``--from``) without opening the database. It printed the SQL for an
    empty database whatever the database's revision (every revision from the first),
    which failed on its first statement when applied. A database already at ``to``
    prints nothing and says so on stderr; one at a revision this code does not know, or
    below ``to``, is refused as ``db upgrade`` refuses it."""
    from ragstore.db import migrations
    from ragstore.errors import InputError
    from ragstore.runtime import Runtime

    known = migrations.known_revisions()
    if start is not None:  # offline: the database is not read
        if start != "base" and start not in known:
            raise InputError(
                f"--from {start!r} is not a schema revision this version of ragstore knows; "
                f"give one of {known[0]}..{known[-1]} (`ragstore db status` says the "
                "database's), or base for an empty database"
            )
        begin = None if start == "base" else start
        target = known[-1] if to == "head" else to
        if begin is not None and target in known and known.index(target) < known.index(begin):
            raise InputError(
                f"--to {to} is below --from {start}: an upgrade only goes up "
                f"(`ragstore db downgrade --to {to}` goes down)"
            )
        where = (
            f"{f'revision {begin}' if begin else 'an empty database'} (given with --from; no "
            "database was read)"
        )
        there = f"--from {start}"
    else:
        refuse_remote("db upgrade --sql", "; or give --from REV to print it without a database")
        with Runtime() as rt:
            db = rt.raw_db()
            st = migrations.status(db)
            if st.current is None:
                migrations.refuse_lost(db)
            migrations.refuse_unknown(db, "upgrade", st.current)
            _upgrade_target_reached(st, to)  # a --to below the database's is refused
            begin = st.current
            where = (
                f"revision {begin} (the database's on {db.where})"
                if begin
                else f"an empty database (the database on {db.where} holds no schema)"
            )
            there = f"the database on {db.where}"
    text = migrations.upgrade_sql(None, to, begin)
    steps = re.findall(r"^-- Running upgrade (\S*) -> (\S+)$", text, re.MULTILINE)
    if not steps:
        typer.echo(
            f"{there} is already at {begin or '(empty)'}, the upgrade's target: nothing to "
            "apply, no SQL printed",
            err=True,
        )
        return
    typer.echo(migrations.sql_header(where, steps[-1][1]) + text, nl=False)


def backup_before(
    rt: Runtime, db: Database, reason: str, *, quiet: bool = False, snapshot: str | None = None
) -> str:
    """Back the database up before a command changes it (upgrade, downgrade, restore);
    ``snapshot``: the one to dump (a restore's, taken with the writes held)."""
    from ragstore.backup import create_backup

    info = create_backup(db, rt.settings, reason=reason, snapshot=snapshot)
    if not quiet:
        typer.echo(f"backup: {info.path} ({_how_to_restore(info.path, info.revision)})")
    return info.path


def _how_to_restore(path: str, revision: str | None) -> str:
    """How the backup at ``path`` (of a database at schema ``revision``) is restored. A
    database at a revision this version does not know (a newer ragstore upgraded it) was
    backed up before a restore with the hint "restore with `ragstore restore PATH`",
    which this version refuses for that very revision."""
    from ragstore.db import migrations

    if revision is not None and revision not in migrations.known_revisions():
        return (
            f"at schema revision {revision}, which this version of ragstore does not know: "
            f"restore it with the newer ragstore that wrote it, `ragstore restore {path}`"
        )
    return f"restore with `ragstore restore {path}`"


def upgrade_with_backup(
    rt: Runtime, to: str = "head", *, backup: bool = True, as_json: bool = False
) -> None:
    """Back up a database that holds a schema (unless told not to), then upgrade it."""
    from ragstore.db import migrations

    db = rt.raw_db()
    pre = migrations.status(db)
    before = pre.current
    if before is None:  # "already at (empty)" to --to base, of ragstore's tables
        migrations.refuse_lost(db)
    if _upgrade_target_reached(pre, to):
        if as_json:
            echo_json({"from": before, "to": before, "backup": None})
        else:
            typer.echo(f"schema already at {before or '(empty)'}; nothing to do")
        return
    path = None
    if before is not None and pre.pending and backup:
        if to != "head" and to not in migrations.known_revisions():
            migrations.refuse_unresolvable(before, to)  # before the backup, not after it
        with _backing_up("upgrade"):
            path = backup_before(rt, db, "upgrade", quiet=as_json)
    with _saying_where("upgrade", path):
        done = migrations.migrate(db, "upgrade", to)
    _report("upgrade", before, done, path, as_json=as_json)


def _upgrade_target_reached(st: SchemaStatus, to: str) -> bool:
    """Whether the database is already at ``to`` (True), or refuse a ``to`` below it, before
    the backup. ``db upgrade --to REV`` with the database at REV, or above it (or ``--to
    base``), took a whole backup first (minutes at a million chunks, kept on disk), and
    then, Alembic doing nothing, ended with status 0 saying "nothing to do", as though
    the database were at the revision asked for."""
    from ragstore.db import migrations
    from ragstore.errors import InputError

    known = migrations.known_revisions()
    current = st.current
    if st.unknown or (to != "base" and to not in known):  # refused, or resolved, later
        return False
    if to == current:
        return True
    if to == "base" or (current is not None and known.index(to) < known.index(current)):
        if current is None:
            return True
        raise InputError(
            f"--to {to} is below the database's revision {current}: an upgrade only goes "
            f"up (`ragstore db downgrade --to {to}` goes down)"
        )
    return False


def _report(
    action: str, before: str | None, done: migrations.Migrated, path: str | None, *, as_json: bool
) -> None:
    """Say what an upgrade or downgrade did, from the revision it found under the migration
    lock: a second command run alongside another read the old revision first, waited for
    the lock, found the work done, and still said "upgraded X -> Y" after taking a whole
    backup for nothing. Where another process changed the schema meanwhile and this one
    changed nothing, it says so. The backup it took first is removed only where it holds
    the schema as it is now (taken after the other's change: a copy of nothing lost); one
    of the schema as it was before is kept and said to be, since the other process may
    have taken none (``--no-backup``): removed, the one copy of the database from before
    the change, which this command had just named, was gone."""
    now = done.status.current
    note = ""
    if not done.changed and done.found != before:
        note = (
            f" when the migration lock was had: another process changed it from "
            f"{before or '(empty)'} meanwhile"
        )
        if path is not None and not _backup_holds(path, now):
            note += (
                "; the backup taken first is kept (it may be the one copy of the database "
                f"from before that change): {path}"
            )
        elif path is not None:
            if _remove_backup(path):
                note += f"; the backup taken first was not needed and was removed: {path}"
                path = None
            else:
                note += f"; the backup taken first was not needed, and is kept: {path}"
    if as_json:
        echo_json({"from": done.found, "to": now, "backup": path})
    elif not done.changed:
        typer.echo(f"schema already at {now or '(empty)'}{note}; nothing to do")
    else:
        past = "upgraded" if action == "upgrade" else "downgraded"
        typer.echo(f"{past} {done.found or '(empty)'} -> {now or 'base'}")


def _backup_holds(path: str, revision: str | None) -> bool:
    """Whether a backup this command took records the schema at ``revision`` (its
    sidecar); False where that cannot be read (the backup is then kept: nothing says it
    is not needed)."""
    from pathlib import Path

    from ragstore.backup import read_info
    from ragstore.errors import RagstoreError

    try:
        info = read_info(Path(path))
    except (OSError, RagstoreError):
        return False
    return info is not None and info.revision == revision


def _remove_backup(path: str) -> bool:
    """Remove a backup (archive and sidecar) this command took and did not need; False
    where it could not be (it is then kept whole, or at least its archive)."""
    import contextlib
    from pathlib import Path

    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # without its archive it describes nothing
        Path(f"{path}.json").unlink(missing_ok=True)
    return True


@contextmanager
def _backing_up(action: str) -> Iterator[None]:
    """Take the backup before a migration so that SIGTERM stops it as Ctrl-C does:
    killed outright, the command left pg_dump running on its own, writing a whole copy
    of the database to a hidden ``.partial`` file that nothing ever removed, and said
    nothing. pg_dump is stopped, its file removed, and the command says so. A backup that
    fails says that the migration did not run and how to go on: "cannot create
    .../backups: Permission denied" alone left the user to guess both."""
    import sys

    from ragstore.backup import BackupInterrupted
    from ragstore.cli.output import err_console
    from ragstore.cli.signals import interrupt_status, terminate_as_interrupt
    from ragstore.errors import BackupError

    try:
        with terminate_as_interrupt():
            yield
    except BackupError as exc:
        exc.message += (
            f"; the {action} did not start, the schema was not changed: fix that and run it "
            f"again, or add --no-backup to {action} without a backup"
        )
        exc.args = (exc.message,)
        raise
    except KeyboardInterrupt as exc:
        how, status = interrupt_status(exc)
        if isinstance(exc, BackupInterrupted):  # it came as the backup got its names
            what = f"{exc.what}; the {action} did not start, the schema was not changed"
        else:
            what = (
                f"the backup before the {action} was not finished and was removed; the "
                f"{action} did not start, nothing was changed"
            )
        err_console().print(f"interrupted by {how}: {what}", markup=False)
        sys.exit(status)


@contextmanager
def _saying_where(action: str, backup: str | None) -> Iterator[None]:
    """Run a migration so that its end says where the schema is and names the backup
    taken before it: SIGTERM killed the command without a word, Ctrl-C ended it with
    "interrupted" alone, and an error named neither (with ``--json``, no backup at all).
    An interrupt ends it with ``interrupted by HOW: WHERE`` and 130 or 143; an error
    keeps its class, the backup added to its message."""
    import sys

    from ragstore.cli.output import err_console
    from ragstore.cli.signals import interrupt_status, terminate_as_interrupt
    from ragstore.db.migrations import MigrationInterrupted
    from ragstore.errors import RagstoreError

    kept = f"; the backup taken before it is kept: {backup}" if backup else ""
    try:
        with terminate_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        how, status = interrupt_status(exc)
        what = (
            exc.what
            if isinstance(exc, MigrationInterrupted)
            else f"the {action} was rolled back; the schema is as it was"
        )
        err_console().print(f"interrupted by {how}: {what}{kept}", markup=False)
        sys.exit(status)
    except RagstoreError as exc:
        if kept:
            exc.message += kept
            exc.args = (exc.message,)
        raise


def _check_downgrade_target(st: SchemaStatus, to: str) -> None:
    """Refuse a target a downgrade cannot reach before asking and backing up: Alembic
    found out only after the backup (minutes at a million chunks) and said it its way."""
    from ragstore.db import migrations
    from ragstore.errors import InputError, SchemaMismatchError

    current = st.current
    assert current is not None
    if st.unknown:
        raise SchemaMismatchError(
            f"the database is at schema revision {current}, which this version of ragstore "
            "does not know (a newer one wrote it); downgrade it with that version"
        )
    if to == "base":
        return
    known = migrations.known_revisions()
    if to not in known:
        raise InputError(
            f"--to {to!r} is not a schema revision of this ragstore; give one of "
            f"{', '.join(known[: known.index(current)])} or 'base' (`ragstore db status`)"
        )
    if known.index(to) > known.index(current):
        raise InputError(
            f"--to {to} is not below the database's revision {current}: a downgrade only "
            "goes down (`ragstore db upgrade --to REV` goes up)"
        )


@app.command("downgrade")
def downgrade(
    to: str = typer.Option(..., "--to", metavar="REV", help="Target revision, or 'base'."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; downgrade at once."),
    no_backup: bool = typer.Option(
        False, "--no-backup", help="Do not back the database up before downgrading."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Downgrade the schema to an earlier revision ('base' drops every ragstore table);
    backs up first and asks before it drops anything."""
    from ragstore.db import migrations
    from ragstore.runtime import Runtime

    refuse_remote("db downgrade")
    with Runtime() as rt:
        db = rt.raw_db()
        st = migrations.status(db)
        before = st.current
        if before is None:
            # "holds no ragstore schema", of a database whose revision alone was lost
            migrations.refuse_lost(db)
            if as_json:
                echo_json({"from": None, "to": None, "backup": None})
            else:
                typer.echo("the database holds no ragstore schema; nothing to downgrade")
            return
        _check_downgrade_target(st, to)
        if to == before:
            if as_json:
                echo_json({"from": before, "to": before, "backup": None})
            else:
                typer.echo(f"schema already at {before}; nothing to do")
            return
        confirm(
            f"Downgrade {db.where} from {before} to {to}? Tables and columns added "
            "since are dropped with their data",
            yes=yes,
        )
        path = None
        if not no_backup:
            with _backing_up("downgrade"):
                path = backup_before(rt, db, "downgrade", quiet=as_json)
        with _saying_where("downgrade", path):
            done = migrations.migrate(db, "downgrade", to)
    _report("downgrade", before, done, path, as_json=as_json)


@app.command("check")
def check(
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Check this collection only (default: all)."
    ),
    repair: bool = typer.Option(False, "--repair", help="Fix what is found."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check that every collection holds what it acknowledged: a vector for each chunk, no
    stray vectors, its HNSW index, full-text statistics equal to a recount, and no tables
    left by a stopped bulk load. Exits 1 when something is found and not repaired; 69 when
    a repair waited past RAGSTORE_BULK_LOAD_WAIT_S for another write of its collection, or,
    with --repair, a bulk load held a collection so it was not checked (the others are
    repaired: run it again once that write ends). A repair that needs a model this
    machine cannot load is reported not possible, and the others go on (exit 1). Without
    --repair a collection a bulk load holds is listed as busy and not checked, and the
    exit is 0 if nothing else is found."""
    from ragstore.errors import DatabaseUnavailableError
    from ragstore.integrity import check as run_check
    from ragstore.runtime import Runtime

    refuse_remote("db check")
    with Runtime() as rt:
        report = run_check(rt, collection, repair=repair)
    if as_json:
        echo_json(report.as_dict())
    else:
        for c in report.collections:
            name = c.name + (" (shadow)" if c.shadow else "")
            # headings have no vector by design: said, or "1,440 chunks" beside "1,350
            # vectors, 0 chunks without one" read as 90 vectors missing
            headings = (
                f" ({c.headings:,} headings, which have no vector)"
                if c.headings > 1
                else " (1 heading, which has no vector)"
                if c.headings
                else ""
            )
            typer.echo(f"collection {name}: {c.chunks:,} chunks{headings}")
            for s in c.spaces:
                missing = "" if s.missing is None else f", {s.missing:,} chunks without one"
                index = "HNSW index" if s.index else "no index"
                typer.echo(
                    f"  {s.table} ({s.status}, {s.model}): {s.vectors:,} vectors{missing}, "
                    f"{s.stray:,} stray, {index}"
                )
                if s.status == "building":
                    typer.echo(BUILDING_HINT)
            b = c.bm25
            same = "equal to a recount" if b["stored"] == b["counted"] else "DIFFER"
            typer.echo(
                f"  full-text statistics: {b['counted'][0]:,} chunks, {b['terms']:,} terms, "
                f"{same}; {b['terms_differing']:,} terms differ"
            )
        for f in report.findings:
            tried = f.busy or f.impossible
            state = "repaired" if f.repaired else "not repaired" if tried else "found"
            typer.echo(f"{state}: {f.where}: {f.problem} ({f.fix})")
            if f.busy:
                typer.echo(f"  busy: {f.busy}")
            if f.impossible:
                typer.echo(f"  not possible here: {f.impossible}")
        for w in report.warnings:
            typer.echo(f"warning: {w.where}: {w.problem}")
            typer.echo(f"  fix: {w.fix}")
        for n in report.notes:
            typer.echo(f"note: {n.where}: {n.problem}")
            typer.echo(f"  fix: {n.fix}")
        if not repair:  # with --repair each is a finding above
            for name in report.busy:
                typer.echo(
                    f"busy: collection {name}: a bulk load holds its tables, so it was not "
                    "checked; check it again when the load has ended"
                )
        if not report.findings and report.busy:
            typer.echo(
                f"ok: nothing to repair in the collections checked; {len(report.busy)} not "
                "checked (busy, above)"
            )
        elif not report.findings:
            typer.echo("ok: nothing to repair")
    if report.retry:  # the others were repaired: this is the busy error's, retryable
        raise typer.Exit(DatabaseUnavailableError.exit_code)
    if not report.ok:
        raise typer.Exit(1)


@app.command("index-field")
def index_field(
    field: str = typer.Argument(..., help="The metadata path, dot-separated: year, author.name."),
    kind: str = typer.Option(
        ..., "--type", help="The values to index: number or string (ISO dates are strings)."
    ),
    drop: bool = typer.Option(False, "--drop", help="Drop the field's indexes instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Index a metadata field for range filters ($gt, $gte, $lt, $lte), in every collection.

    A selective range on an indexed field is then ranked exactly among the chunks that
    pass, instead of both search lists reading deep for them. Builds two indexes
    (documents, and chunks with a value of their own) without blocking writers; each
    costs every write of a document a little. Equality and $in need no index."""
    from ragstore.cli.remote import remote_client
    from ragstore.db import field_indexes
    from ragstore.profiles import get_settings
    from ragstore.runtime import Runtime

    def waiting(blockers: list[field_indexes.Blocker]) -> None:
        oldest = blockers[0]
        since = f" since {oldest.since:%H:%M:%S %Z}" if oldest.since else ""
        doing = f": {' '.join(oldest.query.split())}" if oldest.query else ""
        more = f" and {len(blockers) - 1} more" if len(blockers) > 1 else ""
        work, done = ("drop", "dropped") if drop else ("build", "built")
        typer.echo(
            f"waiting for transactions that began before the {work}: pid {oldest.pid} "
            f"({oldest.state or 'open'}{since}{doing}){more}. The indexes are {done} once "
            "they end (a bulk ingest or import holds one to its end); Ctrl-C stops here, "
            "and the command can be run again later",
            err=True,
        )

    client = remote_client(get_settings())
    if client is not None:  # POST/DELETE /v1/field-indexes do the same (an admin key)
        with client:
            answer = (
                client.drop_field_index(field, kind) if drop else client.index_field(field, kind)
            )
        changed = bool(answer["changed"])
    else:
        with Runtime() as rt:
            changed = field_indexes.declare(rt.db, field, kind, drop=drop, on_wait=waiting)
    if as_json:
        echo_json({"field": field, "type": kind, "indexed": not drop, "changed": changed})
    elif drop:
        typer.echo(f"dropped: {kind} field {field!r}" if changed else f"not indexed: {field!r}")
    else:
        typer.echo(f"indexed: {kind} field {field!r}" + ("" if changed else " (already)"))


@app.command("index-fields")
def index_fields(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the metadata fields indexed for range filters."""
    from ragstore.cli.remote import remote_client
    from ragstore.db import field_indexes
    from ragstore.profiles import get_settings
    from ragstore.runtime import Runtime

    client = remote_client(get_settings())
    if client is not None:  # GET /v1/field-indexes: the same list
        with client:
            found = [(str(i["field"]), str(i["type"])) for i in client.field_indexes()]
    else:
        with Runtime() as rt:
            found = [(i.field, i.kind) for i in field_indexes.listed(rt.db)]
    if as_json:
        echo_json([{"field": f, "type": kind} for f, kind in found])
        return
    for f, kind in found:
        typer.echo(f"{f}\t{kind}")
    if not found:
        typer.echo("no indexed fields (ragstore db index-field FIELD --type number|string)")


@app.command("stop")
def stop() -> None:
    """Stop the embedded PostgreSQL under RAGSTORE_DATA_DIR now.

    It stops by itself when the last ragstore process using it exits normally; after a
    ``kill -9`` of that last process it keeps running until this command (or the next
    ragstore process to exit) stops it. Any ragstore command starts it again.
    """
    from ragstore.db import embedded
    from ragstore.errors import ConfigError
    from ragstore.profiles import get_settings

    # this machine's embedded PostgreSQL, maybe the one a server here runs on: with
    # RAGSTORE_URL set the user may think it stops (or stops using) the server's database
    refuse_remote("db stop")
    settings = get_settings()
    if not settings.uses_embedded_database:
        raise ConfigError(
            "RAGSTORE_DATABASE_URL is set: ragstore does not manage that "
            "server; stop it with its own tools"
        )
    pg = settings.data_dir / "pg"
    if embedded.stop(settings.data_dir):
        typer.echo(f"stopped the embedded PostgreSQL under {pg}")
    else:
        typer.echo(f"no embedded PostgreSQL was running under {pg}")
