"""``ragstore backup [PATH]`` and ``ragstore restore PATH``: pg_dump / pg_restore archives."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import typer

from ragstore.cli.output import confirm, echo_json, printable


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no ragstore schema"


def _kept(taken: list[str]) -> str:
    """The clause naming the backups a restore took of what it replaces, if it took any:
    the last one's (what the restore replaced), then the earlier tries' (:func:`_named`)."""
    if not taken:
        return ""
    earlier = f" (and those of its earlier tries: {', '.join(taken[:-1])})" if taken[1:] else ""
    return f"; the backup of what it replaced is kept: {taken[-1]}{earlier}"


def _named(taken: list[str]) -> dict[str, object]:
    """The ``--json`` keys naming every backup a restore took of what it replaces:
    ``replaced_backup``, the last (what the restore replaced: restoring it undoes the
    restore), and ``earlier_backups``, those of earlier tries, oldest first.

    A restore behind another session's transaction is tried again (``backup._replay``),
    and each try takes its own backup once it holds the writes; a try rolled back lets
    writes in before the next. Only the last was named, the earlier tries' files left on
    disk unnamed. They are named, not removed: each is a whole copy of the database
    seconds older than the last one (lacking only the writes between the tries), a
    fallback for a user who must roll back should the last one be lost or damaged, and a
    removed copy cannot be had again. There are several only where a backup is quick (one
    that outlasts the restore's tries in all, ``RESTORE_LOCK_GIVE_UP_S``, leaves no time
    for another try), so their disk is small, and the user, told their names, removes
    them."""
    return {"replaced_backup": taken[-1] if taken else None, "earlier_backups": taken[:-1]}


def _undo_lines(taken: list[str]) -> list[str]:
    """The human output's lines saying which backup undoes a restore that took ``taken``
    (:func:`_named`'s ``replaced_backup``) and that the others are earlier copies. A
    restore tried again printed one ``backup:`` line per try, each saying "restore with",
    and nothing said which of them held what the restore replaced."""
    if not taken:
        return []
    last = printable(taken[-1])
    # named, not spelled as a command: a backup at a schema revision this version does
    # not know is restored by the newer ragstore that wrote it (its ``backup:`` line)
    lines = [f"  to undo it, restore {last}, the backup of what it replaced (see its backup: line)"]
    if taken[1:]:
        earlier = ", ".join(printable(p) for p in taken[:-1])
        lines.append(
            f"  the other {'backups' if taken[2:] else 'backup'} above ({earlier}) "
            f"{'are earlier copies' if taken[2:] else 'is an earlier copy'} from the "
            "restore's earlier tries, older than that one: a fallback, or remove "
            f"{'them' if taken[2:] else 'it'}"
        )
    return lines


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(
        ctx: typer.Context,
        path: str | None = typer.Argument(
            None,
            metavar="[PATH]",
            help="Archive file or folder to write (default: "
            "DATA_DIR/backups/ragstore-<time>.dump).",
        ),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Replace a file already at PATH (once the new backup is complete); "
            "without it an existing file is refused and kept.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Back up the whole database to a pg_dump custom-format archive."""
        from ragstore.backup import BackupInterrupted, create_backup
        from ragstore.cli.output import err_console
        from ragstore.cli.remote import refuse_remote
        from ragstore.cli.signals import interrupt_status, terminate_as_interrupt
        from ragstore.runtime import Runtime

        if path == "":
            # Path("") is ".": ``backup "$UNSET_VAR"`` wrote a whole copy of the database
            # into the current folder, where the user named no place at all
            raise typer.BadParameter(
                "the path is empty; name a file or a folder, or leave it out to write "
                "under DATA_DIR/backups",
                ctx=ctx,
                param_hint="'[PATH]'",
            )
        target = None if path is None else Path(path)
        refuse_remote("backup")
        try:
            existed = target is not None and (target.is_file() or target.is_symlink())
        except OSError:  # a name too long: create_backup says so
            existed = False
        try:
            # SIGTERM unwinds as Ctrl-C does: killed outright, this process left pg_dump
            # writing a whole copy of the database to a hidden .partial file nothing removed
            with terminate_as_interrupt(), Runtime() as rt:
                info = create_backup(
                    rt.raw_db(),
                    rt.settings,
                    target,
                    reason="manual",
                    overwrite=overwrite,
                    overwrite_flag="--overwrite",
                )
        except KeyboardInterrupt as exc:
            how, status = interrupt_status(exc)
            if isinstance(exc, BackupInterrupted):
                what = exc.what
            else:
                what = "no backup was taken (its unfinished file was removed)"
                if existed:
                    what += f"; {printable(str(target))} is as it was"
            err_console().print(f"interrupted by {how}: {what}", markup=False)
            sys.exit(status)
        if as_json:
            echo_json(asdict(info))
            return
        typer.echo(f"backup: {printable(info.path)} ({info.bytes} bytes, sha256 {info.sha256})")
        typer.echo(
            f"  of {info.database} at schema revision {info.revision or '(none)'}: "
            f"{_counts(info.counts)}"
        )

    @app.command("restore")
    def restore(
        path: Path = typer.Argument(
            ..., metavar="PATH", help="An archive written by `ragstore backup`."
        ),
        yes: bool = typer.Option(
            False, "--yes", "-y", help="Do not ask; replace the database's contents."
        ),
        no_backup: bool = typer.Option(
            False, "--no-backup", help="Do not back up what the restore replaces first."
        ),
        drop_dependents: bool = typer.Option(
            False,
            "--drop-dependents",
            help="Also drop objects outside ragstore's schema that depend on its tables "
            "(a view, a foreign key); without it such objects are named and the restore "
            "is refused.",
        ),
        unchecked: bool = typer.Option(
            False,
            "--unchecked",
            help="Restore an archive that has no sidecar (PATH.json, its sha256), whose "
            "damage cannot be detected; without it such an archive is refused.",
        ),
        ignore_models: bool = typer.Option(
            False,
            "--ignore-models",
            help="Restore an archive whose collections' pinned embedding models this "
            "machine cannot load (weights missing or not the pinned ones), e.g. a scratch "
            "restore whose weights are installed afterwards; without it such an archive "
            "is refused (model_mismatch), naming each model.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Replace the database's contents with a backup, in one transaction, after
        backing up what it replaces (as `db upgrade` and `db downgrade` do)."""
        from ragstore.backup import (
            BackupInterrupted,
            RestoreInterrupted,
            precheck_archive,
            restore_backup,
        )
        from ragstore.cli.db_cmd import backup_before
        from ragstore.cli.output import err_console
        from ragstore.cli.remote import refuse_remote
        from ragstore.cli.signals import interrupt_status, terminate_as_interrupt
        from ragstore.db import migrations
        from ragstore.errors import BackupError, RagstoreError
        from ragstore.runtime import Runtime

        refuse_remote("restore")
        # a missing, unreadable or foreign file is refused before the question: asked
        # first, a "yes" was answered with "no such file"
        precheck_archive(path)
        taken: list[str] = []  # each try's backup of what it replaces, oldest first
        unwritten: list[bool] = []  # that backup failed (the restore stopped before it)
        try:
            # SIGTERM unwinds as Ctrl-C does: killed outright, this process left psql to
            # commit the restore after the command had died without a word
            with terminate_as_interrupt(), Runtime() as rt:
                db = rt.raw_db()
                confirm(f"Replace everything in {db.where} with {printable(str(path))}?", yes=yes)

                def back_up(snapshot: str) -> None:
                    # once the archive passed its checks, in the restore's transaction,
                    # which holds the writes from before that snapshot to its commit
                    if not migrations.holds_ragstore_data(db):
                        return  # no ragstore data to keep
                    try:
                        path = backup_before(rt, db, "restore", quiet=as_json, snapshot=snapshot)
                    except BackupError:
                        unwritten.append(True)
                        raise
                    taken.append(path)

                result = restore_backup(
                    db,
                    path,
                    None if no_backup else back_up,
                    drop_dependents=drop_dependents,
                    unchecked=unchecked,
                    ignore_models=ignore_models,
                )
        except KeyboardInterrupt as exc:
            how, status = interrupt_status(exc)
            what = (
                exc.what
                if isinstance(exc, RestoreInterrupted)
                else "nothing was restored; the database is as it was"
            )
            if isinstance(exc, BackupInterrupted):  # as the backup first got its names
                what += f"; {exc.what}"
            err_console().print(f"interrupted by {how}: {what}{_kept(taken)}", markup=False)
            sys.exit(status)
        except RagstoreError as exc:
            # with --json the backup taken first was named nowhere: after a restore whose
            # outcome is unknown, the one copy of what it may have replaced
            if taken:
                exc.message += _kept(taken)
                exc.args = (exc.message,)
            if unwritten and type(exc) is BackupError:  # its outcome read: nothing restored
                # "cannot create .../backups: Permission denied" and the outcome alone
                # left the user to guess why the restore stopped there, and how to go on
                exc.message += (
                    "; the restore did not start, as the backup of what it replaces could "
                    "not be written: fix that and run it again, or add --no-backup to "
                    "restore without that backup"
                )
                exc.args = (exc.message,)
            raise
        if as_json:
            echo_json({**asdict(result), **_named(taken)})
            return
        typer.echo(f"restored {printable(result.path)} into {result.database}")
        if result.counts is None:
            typer.echo(f"  {result.unread}")
        else:
            typer.echo(f"  schema revision {result.revision or '(none)'}: {_counts(result.counts)}")
        for line in _undo_lines(taken):
            typer.echo(line)
