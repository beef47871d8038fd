"""The root typer app and the one place ragstore errors become an exit status."""

from __future__ import annotations

import logging
import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from ragstore.errors import RagstoreError

app = typer.Typer(
    name="ragstore",
    help="Document retrieval on PostgreSQL + pgvector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _register() -> None:
    from ragstore.cli import (
        backup_cmd,
        config_cmd,
        db_cmd,
        eval_cmd,
        import_cmd,
        ingest_cmd,
        keys_cmd,
        models_cmd,
        search_cmd,
        sections_cmd,
        serve_cmd,
        worker_cmd,
    )

    app.add_typer(db_cmd.app, name="db")
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(models_cmd.app, name="models")
    ingest_cmd.register(app)
    search_cmd.register(app)
    eval_cmd.register(app)
    sections_cmd.register(app)
    app.add_typer(keys_cmd.app, name="keys")
    serve_cmd.register(app)
    worker_cmd.register(app)
    import_cmd.register(app)
    backup_cmd.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a RagstoreError is one line on stderr and its exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register()
    try:
        status = app(args=argv, standalone_mode=False)
    except RagstoreError as exc:
        err_console.print(f"[bold red]error\\[{exc.code}][/]: {escape(exc.message)}")
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(status, int) and status:
        sys.exit(status)
