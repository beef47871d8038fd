"""``ragstore config``: show the effective settings, secrets redacted."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective settings (environment, .env, defaults); secrets are redacted."""
    from ragstore.cli.output import echo_json, print_table
    from ragstore.config import ENV_PREFIX
    from ragstore.profiles import get_settings

    values = get_settings().redacted()
    if as_json:
        echo_json(values)
        return
    print_table(
        ["variable", "value"],
        [
            [ENV_PREFIX + name.upper(), "" if value is None else str(value)]
            for name, value in values.items()
        ],
    )
