"""``ragstore keys``: create, list and revoke API keys."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from ragstore.auth import SCOPES, KeyStore
from ragstore.runtime import Runtime

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)


@app.command("create")
def create(
    scope: str = typer.Option(..., "--scope", help=f"One of {', '.join(SCOPES)}."),
    collection: str | None = typer.Option(None, "--collection", "-c",
                                          help="Limit the key to this collection."),
    name: str = typer.Option("", "--name", help="A label to recognise the key by."),
) -> None:
    """Create a key and print it once; only a salted hash of it is stored."""
    with Runtime() as rt:
        new = KeyStore(rt.db).create(scope, collection, name)
    typer.echo(new.secret)
    where = f", collection {collection}" if collection else ""
    typer.echo(f"key {new.key.key_id}: scope {new.key.scope}{where}; shown only now, "
               "store it safely", err=True)


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key with its scope, collection and state (never the secret)."""
    with Runtime() as rt:
        keys = KeyStore(rt.db).list()
    if as_json:
        typer.echo(json.dumps([{
            "id": k.key_id, "scope": k.scope, "collection": k.collection, "name": k.name,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "revoked": k.revoked_at is not None} for k in keys], indent=2))
        return
    table = Table("id", "scope", "collection", "name", "created", "last used", "state")
    for k in keys:
        table.add_row(k.key_id, k.scope, k.collection or "*", k.name,
                      k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
                      "revoked" if k.revoked_at else "active")
    console.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key's id (from `keys list`).")) -> None:
    """Revoke a key: its next request is refused with 401."""
    with Runtime() as rt:
        key = KeyStore(rt.db).revoke(key_id)
    typer.echo(f"revoked key {key.key_id}")
