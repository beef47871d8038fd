"""``ragstore backup [PATH]`` and ``ragstore restore PATH``: pg_dump / pg_restore archives."""

from __future__ import annotations

from pathlib import Path

import typer

from ragstore.backup import create_backup, restore_backup
from ragstore.runtime import Runtime


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no ragstore schema"


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(
        path: Path | None = typer.Argument(None, help="Archive file or folder to write "
                                           "(default: DATA_DIR/backups/ragstore-<time>.dump)."),
    ) -> None:
        """Back up the whole database to a pg_dump custom-format archive."""
        with Runtime() as rt:
            info = create_backup(rt.raw_db(), rt.settings, path, reason="manual")
        typer.echo(f"backup: {info.path} ({info.bytes} bytes, sha256 {info.sha256[:16]})")
        typer.echo(f"  of {info.database} at schema revision {info.revision or '(none)'}: "
                   f"{_counts(info.counts)}")

    @app.command("restore")
    def restore(
        path: Path = typer.Argument(..., help="An archive written by `ragstore backup`."),
        yes: bool = typer.Option(False, "--yes", "-y",
                                 help="Do not ask; replace the database's contents."),
    ) -> None:
        """Replace the database's contents with a backup, in one transaction."""
        with Runtime() as rt:
            db = rt.raw_db()
            if not yes:
                typer.confirm(f"Replace everything in {db.where} with {path}?", abort=True)
            result = restore_backup(db, path)
        typer.echo(f"restored {result.path} into {result.database}")
        typer.echo(f"  schema revision {result.revision or '(none)'}: {_counts(result.counts)}")
