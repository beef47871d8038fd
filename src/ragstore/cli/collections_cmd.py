"""``ragstore collections``: list, create, show and delete collections, and the fields a
search filter can name in one.

The same verbs as ``/v1/collections``; with ``RAGSTORE_URL`` set they go to that server.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from ragstore.cli.output import confirm, console, echo_json, err_console, escape, print_table

app = typer.Typer(help="Collections: list, create, show, delete, fields.", no_args_is_help=True)


def _row(c: dict[str, Any]) -> list[str]:
    return [
        c["name"],
        c["model"],
        str(c["dimension"]),
        c["distance"],
        str(c["documents"]),
        str(c["chunks"]),
        str(c["created_at"])[:19].replace("T", " "),
    ]


def _print_detail(c: dict[str, Any]) -> None:
    out = console()
    for key, value in c.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        out.print(f"[bold]{key:>10}[/]  {escape(str(shown))}")


def _local_list() -> list[dict[str, Any]]:
    """Store's answer, the API's: the catalog's own rows printed other dates
    (``2026-12-05 13:20:22+00:00``) than the same command through a server."""
    from ragstore.runtime import Runtime
    from ragstore.store import Store

    with Runtime() as rt:
        return Store.from_runtime(rt).list_collections()


def _local_show(name: str) -> dict[str, Any]:
    """Store's answer, the API's, as :func:`_local_list`."""
    from ragstore.runtime import Runtime
    from ragstore.store import Store

    with Runtime() as rt:
        return Store.from_runtime(rt).get_collection(name)


def _verb(verb: str, *args: Any, **kwargs: Any) -> Any:
    """``Client.<verb>`` against ``RAGSTORE_URL`` when it is set, else ``Store.<verb>`` on
    the local database: the two share their verbs (tests/api/test_clients.py)."""
    client = _client()
    if client is not None:
        with client:
            return getattr(client, verb)(*args, **kwargs)
    from ragstore.runtime import Runtime
    from ragstore.store import Store

    with Runtime() as rt:
        return getattr(Store.from_runtime(rt), verb)(*args, **kwargs)


def _local_delete(name: str) -> None:
    from ragstore.db import catalog
    from ragstore.db.errors import translated
    from ragstore.runtime import Runtime

    with Runtime() as rt:
        coll = rt.collection(name)
        with rt.db.connection() as conn, translated(f"deleting collection {name!r}"):
            catalog.delete_collection(conn, coll)


def _count(n: int, noun: str) -> str:
    return "" if not n else f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _client() -> Any:
    from ragstore.cli.remote import remote_client
    from ragstore.profiles import get_settings

    return remote_client(get_settings())


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every collection with its model and how many documents and chunks it holds."""
    client = _client()
    if client is not None:
        with client:
            data = client.list_collections()
    else:
        data = _local_list()
    if as_json:
        echo_json(data)
        return
    if not data:
        console().print("no collections yet (`ragstore ingest PATH -c NAME` creates one)")
        return
    print_table(
        ["name", "model", "dim", "distance", "documents", "chunks", "created"],
        [_row(c) for c in data],
    )


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="The collection."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One collection: model, settings, document and chunk counts."""
    client = _client()
    if client is not None:
        with client:
            data = client.get_collection(name)
    else:
        data = _local_show(name)
    if as_json:
        echo_json(data)
    else:
        _print_detail(data)


@app.command("fields")
def fields_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="The collection."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The fields a search filter (--where) can name: the built-ins, and the metadata
    paths a sample of the collection's documents and chunks carry, with their types and
    a few values."""
    data = _verb("fields", name)
    if as_json:
        echo_json(data)
        return
    rows = [
        [b["field"], b["type"], "built-in", ", ".join(b.get("values") or []) or b["about"]]
        for b in data["builtins"]
    ]
    for m in data["metadata"]:
        carriers = [_count(m["documents"], "document"), _count(m["chunks"], "chunk")]
        where = ", ".join(c for c in carriers if c)
        if m["indexed"]:
            where += f"; ranges indexed ({', '.join(m['indexed'])})"
        examples = ", ".join(json.dumps(e) for e in m["examples"])
        rows.append([m["field"], "|".join(m["types"]), where, examples])
    print_table(["field", "type", "carried by", "values"], rows)
    sampled = data["sampled"]
    err_console().print(
        f"metadata read from {_count(sampled['documents'], 'document') or '0 documents'} and "
        f"{_count(sampled['chunks'], 'chunk') or '0 chunks'}"
        + (" (more paths than listed)" if data["truncated"] else "")
    )
    # in --json alone, a key with a dot ("v1.2") was left out of the table unsaid, and a
    # reader looked for it in vain
    unnamed = data.get("unfilterable") or {}
    if unnamed.get("count"):
        shown = ", ".join(json.dumps(".".join(keys)) for keys in unnamed["examples"])
        err_console().print(
            f"{_count(unnamed['count'], 'metadata path')} left out, which no filter can "
            f"name (e.g. {escape(shown)}): {escape(str(unnamed['reason']))}"
        )


@app.command("create")
def create_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="Letters, digits, '_', '.', '-'."),
    model: str | None = typer.Option(
        None, "--model", metavar="MODEL", help="Embedding model [RAGSTORE_MODEL]."
    ),
    settings: str | None = typer.Option(
        None,
        "--settings",
        metavar="JSON",
        help='Collection settings, e.g. \'{"ts_config": "english"}\'.',
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an empty collection bound to an embedding model."""
    from ragstore.errors import InputError
    from ragstore.validation import loads_json

    values: dict[str, Any] = {}
    if settings is not None:
        try:
            values = loads_json(settings)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--settings is not valid JSON: {exc.msg} at character "
                f'{exc.pos}; e.g. \'{{"ts_config": "english"}}\''
            ) from None
        if not isinstance(values, dict):
            raise InputError('--settings must be a JSON object, e.g. \'{"ts_config": "english"}\'')
    # ``model``: a built-in or any model pinned with ``ragstore models add`` (NAME[@REVISION])
    data = _verb("create_collection", name, model=model, settings=values)
    if as_json:
        echo_json(data)
        return
    err_console().print(f"created collection {escape(name)!r} with {escape(data['model'])}")


@app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="The collection."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; delete at once."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete a collection with all its documents, chunks and vectors; asks first."""
    client = _client()
    if client is not None:
        with client:
            data = client.get_collection(name)
            confirm(f"Delete collection {name!r} with its {data['documents']} documents?", yes=yes)
            client.delete_collection(name)
    else:
        data = _local_show(name)
        confirm(f"Delete collection {name!r} with its {data['documents']} documents?", yes=yes)
        _local_delete(name)
    if as_json:
        echo_json({"deleted": name, "documents": data["documents"]})
        return
    err_console().print(f"deleted collection {escape(name)!r} ({data['documents']} documents)")
