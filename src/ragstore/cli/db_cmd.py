"""``ragstore db``: schema status, upgrade and downgrade (Alembic under an advisory lock)."""

from __future__ import annotations

import typer

from ragstore.db import migrations
from ragstore.runtime import Runtime

app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)


@app.command("status")
def status() -> None:
    """Show the schema revision of the database and of the code."""
    with Runtime() as rt:
        db = rt.raw_db()
        st = migrations.status(db)
        typer.echo(f"database: {db.where}")
        typer.echo(f"current:  {st.current or '(empty database)'}")
        typer.echo(f"head:     {st.head}")
        if st.unknown:
            typer.echo("state:    AHEAD of this code (unknown revision)")
        elif st.pending:
            typer.echo(f"state:    behind; pending {', '.join(st.pending)} "
                       "(run `ragstore db upgrade`)")
        else:
            typer.echo("state:    current")


@app.command("upgrade")
def upgrade(
    to: str = typer.Option("head", "--to", help="Target revision."),
    sql: bool = typer.Option(False, "--sql", help="Print the SQL instead of running it."),
    no_backup: bool = typer.Option(False, "--no-backup",
                                   help="Do not back the database up before upgrading."),
) -> None:
    """Upgrade the schema to the code's revision (or --to REV); backs up first."""
    if sql:
        typer.echo(migrations.upgrade_sql(None, to))
        return
    with Runtime() as rt:
        upgrade_with_backup(rt, to, backup=not no_backup)


def upgrade_with_backup(rt: Runtime, to: str = "head", *, backup: bool = True) -> None:
    """Back up a database that holds a schema (unless told not to), then upgrade it."""
    db = rt.raw_db()
    pre = migrations.status(db)
    before = pre.current
    if before is not None and pre.pending and backup:
        from ragstore.backup import create_backup

        info = create_backup(db, rt.settings, reason="upgrade")
        typer.echo(f"backup: {info.path} (restore with `ragstore restore {info.path}`)")
    st = migrations.upgrade(db, to)
    if before == st.current:
        typer.echo(f"schema already at {st.current}; nothing to do")
    else:
        typer.echo(f"upgraded {before or '(empty)'} -> {st.current}")


@app.command("downgrade")
def downgrade(to: str = typer.Option(..., "--to", help="Target revision, or 'base'.")) -> None:
    """Downgrade the schema to an earlier revision ('base' drops every ragstore table)."""
    with Runtime() as rt:
        db = rt.raw_db()
        before = migrations.status(db).current
        st = migrations.downgrade(db, to)
        typer.echo(f"downgraded {before or '(empty)'} -> {st.current or 'base'}")


@app.command("stop")
def stop() -> None:
    """Stop the embedded PostgreSQL under RAGSTORE_DATA_DIR now.

    It stops by itself when the last ragstore process using it exits normally; after a
    ``kill -9`` of that last process it keeps running until this command (or the next
    ragstore process to exit) stops it. Any ragstore command starts it again.
    """
    from ragstore.config import get_settings
    from ragstore.db import embedded
    from ragstore.errors import ConfigError

    settings = get_settings()
    if not settings.uses_embedded_database:
        raise ConfigError("RAGSTORE_DATABASE_URL is set: ragstore does not manage that "
                          "server; stop it with its own tools")
    pg = settings.data_dir / "pg"
    if embedded.stop(settings.data_dir):
        typer.echo(f"stopped the embedded PostgreSQL under {pg}")
    else:
        typer.echo(f"no embedded PostgreSQL was running under {pg}")
