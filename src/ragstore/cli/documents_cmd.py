"""``ragstore documents``: list, show and delete the documents of a collection.

A document is named by its id (from ``documents list``) or by its source: the path it
was ingested from (relative paths are resolved) or the name it was uploaded under. With
``RAGSTORE_URL`` set the commands go to that server: an id, an uploaded name (a relative
path, as ``ragstore ingest`` through it names each file) or an absolute source.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from typing import TYPE_CHECKING, Any

import typer

from ragstore.cli.output import (
    confirm,
    console,
    echo_json,
    err_console,
    escape,
    print_more,
    print_table,
    printable,
)

if TYPE_CHECKING:
    from ragstore.runtime import Runtime

app = typer.Typer(help="Documents of a collection: list, show, delete.", no_args_is_help=True)


# the largest id a page cursor carries (api/deps.py decode_cursor): a larger --after was
# refused as "invalid cursor '...'", a cursor the user never gave
MAX_AFTER = 10**18 - 1
DEFAULT_LIMIT = 100  # documents per page when --limit is not given


def _collection_option() -> Any:
    return typer.Option(
        None, "--collection", "-c", metavar="NAME", help="Collection [RAGSTORE_COLLECTION]."
    )


def _settings_and_client() -> tuple[Any, Any]:
    from ragstore.cli.remote import remote_client
    from ragstore.profiles import get_settings

    settings = get_settings()
    return settings, remote_client(settings)


def _is_id(document: str) -> bool:
    """Whether ``document`` names a document by id: ASCII digits only. ``str.isdigit()``
    is true of '²' (``int()`` then raised a traceback) and of '٣', which named document 3
    where the user meant a file of that name."""
    return document.isascii() and document.isdigit()


def _storable(source: str) -> bool:
    """Whether ``source`` could be a stored source: a path that is not UTF-8 (a file name's
    undecodable bytes) never is, and sending it to the database raised a traceback."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _find(rt: Runtime, collection: str, document: str) -> dict[str, Any]:
    """The document named by id or source (an ingested path, or an uploaded name)."""
    from ragstore.db import catalog
    from ragstore.db.errors import translated
    from ragstore.errors import DocumentNotFoundError, InputError
    from ragstore.uploads import names

    coll = rt.collection(collection)
    with rt.db.connection() as conn, translated(f"reading document {document!r}"):
        if _is_id(document):
            return catalog.document(conn, coll, int(document))
        # realpath, not Path.resolve(): that raises on a link loop (a traceback), and the
        # ingest package's own helper for it would cost this command 0.8 s of imports
        candidates = [os.path.realpath(document)]
        with contextlib.suppress(InputError):  # not a name an upload could have
            candidates.append(names.source_of(rt.settings, collection, document))
        for source in filter(_storable, candidates):
            try:
                return catalog.document_by_source(conn, coll, source)
            except DocumentNotFoundError:
                continue
    raise catalog.document_not_found(document, coll)


def _remote_find(client: Any, collection: str, document: str) -> dict[str, Any]:
    """The document named by id or source through the server, as :func:`_find` names it
    here: a relative path is the name it was uploaded under (``ragstore ingest`` through a
    server uploads each file so), an absolute one its source on the server's disk. Only
    ids were taken, so a script that named documents by path broke against a server."""
    from ragstore.errors import DocumentNotFoundError

    if _is_id(document):
        return dict(client.get_document(collection, int(document)))
    if not _storable(document):  # no source, and it cannot be sent as a query
        raise DocumentNotFoundError.missing(document, collection)
    try:
        return dict(client.find_document(collection, document))
    except DocumentNotFoundError as exc:
        if os.path.isabs(document):
            raise
        # ``documents show corpus/notes.txt`` of a file ingested from disk found it here
        # (its path from the current folder) and not through a server: say why
        raise DocumentNotFoundError(
            f"{exc.message}; through a server (RAGSTORE_URL) a relative path names an "
            "upload, as `ragstore documents list` shows it: name a file ingested from "
            "disk by its absolute path or its id"
        ) from None


def _relative_prefix_hint(collection: str, source_prefix: str | None, *, remote: bool) -> None:
    """Say what a relative ``--source-prefix`` that found nothing was matched against.

    On the database itself a relative prefix names uploaded documents (their names), as
    the API reads it, while a file ingested from this machine is stored under its absolute
    path: ``ragstore ingest docs/`` then ``documents list --source-prefix docs/`` answered
    "no documents" with nothing saying why or what to write instead."""
    if remote or not source_prefix or source_prefix.startswith("/"):
        return
    absolute = os.path.realpath(source_prefix) + ("/" if source_prefix.endswith("/") else "")
    if not _storable(absolute):
        return
    hint = ["ragstore", "documents", "list", "-c", collection, "--source-prefix", absolute]
    err_console().print(
        "a relative --source-prefix names uploaded documents; a file ingested from this "
        f"machine is stored under its absolute path: {escape(shlex.join(hint))}"
    )


def _check_start(after: int | None, cursor: str | None) -> None:
    """A usage error (64) for a ``--cursor`` that is no page's token, or given with
    ``--after``, checked before anything is asked: a mangled token read through a server
    as "pass the next_cursor of a previous page", naming no option of this command."""
    from ragstore.paging import cursor_parts

    if cursor is None:
        return
    if after is not None:
        raise typer.BadParameter(
            "--after and --cursor both say where the page starts; give one (the more: "
            "line's --cursor)",
            param_hint="'--cursor'",
        )
    if cursor_parts(cursor) is None:
        raise typer.BadParameter(
            f"{printable(cursor[:100])!r} is no page's token; give the --cursor of a more: "
            "line, or no --cursor for the first page",
            param_hint="'--cursor'",
        )


@app.command("list")
def list_cmd(
    collection: str | None = _collection_option(),
    # at most 500, as the API and Store take: 501-1000 worked here but not through a server
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=1, max=500, help="Documents per page."),
    after: int | None = typer.Option(
        None,
        "--after",
        min=0,
        max=MAX_AFTER,
        metavar="ID",
        help=(
            "Start after this document id: the ids above it in the collection the name "
            "holds now, unchecked (the more: line's --cursor is checked)."
        ),
    ),
    cursor: str | None = typer.Option(
        None,
        "--cursor",
        metavar="TOKEN",
        help=(
            "Start after the page whose more: line gave this token; refused "
            "(cursor_stale) once the collection was deleted and made again."
        ),
    ),
    source_prefix: str | None = typer.Option(
        None, "--source-prefix", metavar="PATH", help="Only sources starting with this."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Documents in id order, a page at a time (`--cursor TOKEN` of the more: line, or
    `--after LAST_ID`, for the next page)."""
    from ragstore.paging import encode_cursor

    _check_start(after, cursor)
    settings, client = _settings_and_client()
    name = collection or settings.collection
    if after is not None:  # a plain id: "after N", whichever collection the name holds now
        cursor = encode_cursor(after)
    # Client here, Store on the database: the same verb and the same answer either way
    # (rows read from the catalog lacked the API's name, collection and status, and
    # printed other dates; an uploaded document showed its staging path, not its name)
    if client is not None:
        with client:
            page = client.list_documents(
                name, limit=limit, source_prefix=source_prefix, cursor=cursor
            )
    else:
        from ragstore.runtime import Runtime
        from ragstore.store import Store

        with Runtime(settings) as rt:
            page = Store.from_runtime(rt).list_documents(
                name, limit=limit, source_prefix=source_prefix, cursor=cursor
            )
    rows: list[dict[str, Any]] = page["data"]
    more = ["ragstore", "documents", "list", "-c", name]
    sized = str(limit) if limit != DEFAULT_LIMIT else None
    # the next page of this listing: without its --source-prefix the hint listed every
    # document after the id, and without its --limit pages of another size. Its --cursor
    # is the page's cursor, not the last id: it carries the collection's id, so the
    # command run later refuses another collection of the name (cursor_stale) where
    # `--after ID` went on into its documents as if they followed
    options = {"--source-prefix": source_prefix, "--limit": sized}
    if as_json:
        echo_json(rows)  # the list as it was; the more: line on stderr, for a script
        if page.get("next_cursor"):
            print_more(more, options, str(page["next_cursor"]), flag="--cursor")
        return
    if not rows:
        console().print(
            f"no documents in {escape(name)!r}"
            + (f" whose source starts with {escape(source_prefix)!r}" if source_prefix else "")
            + (" after that id" if after is not None else "")
            + (" after that page" if after is None and cursor else "")
        )
        _relative_prefix_hint(name, source_prefix, remote=client is not None)
        return
    print_table(
        ["id", "source", "format", "chunks", "bytes", "updated"],
        [
            [
                str(r["id"]),
                str(r.get("name") or r["source"]),
                str(r["format"]),
                str(r["chunks"]),
                str(r["size_bytes"]),
                str(r["updated_at"])[:19].replace("T", " "),
            ]
            for r in rows
        ],
    )
    if page.get("next_cursor"):  # only when a row follows (a page exactly full: none)
        print_more(more, options, str(page["next_cursor"]), flag="--cursor")


@app.command("show")
def show_cmd(
    document: str = typer.Argument(..., metavar="DOCUMENT", help="Id or source."),
    collection: str | None = _collection_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One document: source, title, format, hash, size, metadata and chunk count."""
    settings, client = _settings_and_client()
    name = collection or settings.collection
    if client is not None:
        with client:
            data = _remote_find(client, name, document)
    else:
        from ragstore.runtime import Runtime
        from ragstore.store import Store

        with Runtime(settings) as rt:  # the API's answer, as through a server
            data = Store.from_runtime(rt).get_document(name, _find(rt, name, document)["id"])
    if as_json:
        echo_json(data)
        return
    from ragstore.cli.output import shown_value

    out = console()
    for key, value in data.items():
        out.print(f"[bold]{key:>12}[/]  {escape(shown_value(value))}")


@app.command("delete")
def delete_cmd(
    document: str = typer.Argument(..., metavar="DOCUMENT", help="Id or source."),
    collection: str | None = _collection_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; delete at once."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete a document with its chunks and vectors; asks first."""
    settings, client = _settings_and_client()
    name = collection or settings.collection
    if client is not None:
        with client:
            data = _remote_find(client, name, document)
            confirm(
                f"Delete {printable(data.get('name') or data['source'])} from {name!r}?", yes=yes
            )
            client.delete_document(name, data["id"])
    else:
        from ragstore.runtime import Runtime
        from ragstore.store import Store

        with Runtime(settings) as rt:  # the API's answer, as through a server
            store = Store.from_runtime(rt)
            data = store.get_document(name, _find(rt, name, document)["id"])
            confirm(
                f"Delete {printable(data.get('name') or data['source'])} from {name!r}?", yes=yes
            )
            store.delete_document(name, data["id"])
    if as_json:
        echo_json({"deleted": data["id"], "source": data["source"], "collection": name})
        return
    err_console().print(
        f"deleted document {data['id']} ({escape(printable(str(data['source'])))}) "
        f"from {escape(name)!r}"
    )
