"""``ragstore keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ragstore.cli.output import echo_json, print_table
from ragstore.cli.remote import refuse_remote

if TYPE_CHECKING:
    from ragstore.auth import ApiKey

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)


def _key_dict(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.key_id,
        "scope": k.scope,
        "collection": k.collection,
        "name": k.name,
        "created_at": k.created_at.isoformat(),
        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
        "revoked": k.revoked_at is not None,
    }


@app.command("create")
def create(
    ctx: typer.Context,
    scope: str = typer.Option(
        ...,
        "--scope",
        metavar="SCOPE",
        help="read, write or admin; metrics for a Prometheus scraper (reads /metrics only).",
    ),
    collection: str | None = typer.Option(
        None, "--collection", "-c", metavar="NAME", help="Limit the key to this collection."
    ),
    name: str = typer.Option(
        "", "--name", metavar="LABEL", help="A label to recognise the key by."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with the secret)."),
) -> None:
    """Create a key and print it once; only a salted hash of it is stored."""
    from ragstore.auth import SCOPES, KeyStore
    from ragstore.runtime import Runtime

    if scope not in SCOPES:  # a usage error (64) naming the option, as a bad value is
        raise typer.BadParameter(
            f"{scope!r} is no scope; give one of {', '.join(SCOPES)}",
            ctx=ctx,
            param_hint="'--scope'",
        )
    refuse_remote("keys create")  # keys live in the database; the API has no route
    with Runtime() as rt:
        new = KeyStore(rt.db).create(scope, collection, name)
    if as_json:
        echo_json({**_key_dict(new.key), "secret": new.secret})
        return
    typer.echo(new.secret)
    where = f", collection {collection}" if collection else ""
    typer.echo(
        f"key {new.key.key_id}: scope {new.key.scope}{where}; shown only now, store it safely",
        err=True,
    )


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key with its scope, collection and state (never the secret)."""
    from ragstore.auth import KeyStore
    from ragstore.runtime import Runtime

    refuse_remote("keys list")  # keys live in the database; the API has no route
    with Runtime() as rt:
        keys = KeyStore(rt.db).list()
    if as_json:
        echo_json([_key_dict(k) for k in keys])
        return
    print_table(
        ["id", "scope", "collection", "name", "created", "last used", "state"],
        [
            [
                k.key_id,
                k.scope,
                k.collection or "*",
                k.name,
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
                "revoked" if k.revoked_at else "active",
            ]
            for k in keys
        ],
    )


@app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., metavar="KEY_ID", help="The key's id (from `keys list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Revoke a key: its next request is refused with 401."""
    from ragstore.auth import KeyStore
    from ragstore.runtime import Runtime

    refuse_remote("keys revoke")  # keys live in the database; the API has no route
    with Runtime() as rt:
        key = KeyStore(rt.db).revoke(key_id)
    if as_json:
        echo_json(_key_dict(key))
        return
    typer.echo(f"revoked key {key.key_id}")
