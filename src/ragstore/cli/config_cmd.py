"""``ragstore config``: show the effective settings, secrets redacted."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from ragstore.config import ENV_PREFIX, get_settings

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective settings (environment, .env, defaults); secrets are redacted."""
    values = get_settings().redacted()
    if as_json:
        typer.echo(json.dumps(values, indent=2, default=str))
        return
    table = Table("variable", "value", box=None)
    for name, value in values.items():
        table.add_row(ENV_PREFIX + name.upper(), "" if value is None else str(value))
    Console().print(table)
