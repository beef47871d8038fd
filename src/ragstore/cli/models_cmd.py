"""``ragstore models``: pinned embedding models, and moving a collection between them.

The collection is named with ``-c/--collection`` as everywhere else; the older positional
form (``ragstore models status docs``) still works and prints a deprecation line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import typer
from typer._click.exceptions import UsageError

from ragstore.cli.output import (
    confirm,
    console,
    deprecated,
    echo_json,
    err_console,
    escape,
    print_table,
    progress,
)
from ragstore.cli.remote import refuse_remote

if TYPE_CHECKING:
    from ragstore.modelops.migrate import MigrationReport

app = typer.Typer(
    help="Pinned embedding models: list, pin, migrate a collection, roll back, remove.",
    no_args_is_help=True,
)

LOCAL_PROVIDER = "sentence-transformers"  # ragstore.embedding.registry.LOCAL_PROVIDER
HTTP_PROVIDER = "openai"  # ragstore.embedding.registry.HTTP_PROVIDER
API_KEY_ENV = "RAGSTORE_EMBEDDING_API_KEY"  # ragstore.embedding.http.DEFAULT_API_KEY_ENV
DEFAULT_CONCURRENCY = 4  # ragstore.embedding.http.DEFAULT_CONCURRENCY
MAX_CONCURRENCY = 64  # ragstore.embedding.http.MAX_CONCURRENCY


def _collection_option() -> Any:
    return typer.Option(
        None, "--collection", "-c", metavar="NAME", help="Collection [RAGSTORE_COLLECTION]."
    )


def _positional() -> Any:
    return typer.Argument(
        None, hidden=True, metavar="[COLLECTION]", help="Deprecated: use -c/--collection."
    )


def pick_collection(option: str | None, positional: str | None, command: str) -> str:
    """The collection named by ``-c`` (or, deprecated, positionally), else the default."""
    if positional is not None:
        deprecated(
            f"`ragstore models {command} {positional}`",
            f"`ragstore models {command} -c {positional}`",
        )
        if option is not None and option != positional:
            raise UsageError(
                f"the collection is given twice ({positional!r} and -c {option!r}); give -c only"
            )
        return positional
    if option is not None:
        return option
    from ragstore.profiles import get_settings

    return get_settings().collection


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every pinned model and the collections that use it (keys and checksums in full)."""
    from ragstore.modelops.specs import list_models
    from ragstore.runtime import Runtime

    refuse_remote("models list", "; the server lists its models at GET /v1/models")
    with Runtime() as rt:
        models = list_models(rt)
    if as_json:
        echo_json([m.as_dict() for m in models])
        return
    if not models:
        console().print("no pinned models yet (a collection pins its model when it is created)")
        return
    print_table(
        ["model", "provider", "dim", "distance", "checksum", "collections"],
        [
            [
                m.spec.key,
                m.spec.provider,
                str(m.spec.dimension),
                m.spec.distance,
                m.spec.checksum,
                ", ".join(f"{c['collection']} ({c['status']})" for c in m.collections) or "-",
            ]
            for m in models
        ],
    )


@app.command("show")
def show_cmd(
    model: str = typer.Argument(..., metavar="MODEL", help="NAME or NAME@REVISION."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Everything a pin records about one model."""
    from ragstore.modelops.specs import find_model
    from ragstore.runtime import Runtime

    refuse_remote("models show")
    with Runtime() as rt:
        found = find_model(rt, model, pin_builtin=False)
    data = found.as_dict()
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        console().print(f"[bold]{key:>12}[/]  {escape(str(shown))}")


@app.command("add")
def add_cmd(
    source: str = typer.Argument(
        ...,
        metavar="SOURCE",
        help="Local model directory, or the base URL of an "
        "OpenAI-compatible endpoint (with --provider openai).",
    ),
    name: str = typer.Option(..., "--name", help="Name to pin the model under."),
    revision: str | None = typer.Option(
        None, "--revision", help="Revision label (default: from the checksum)."
    ),
    provider: str = typer.Option(
        LOCAL_PROVIDER, "--provider", help=f"{LOCAL_PROVIDER} or {HTTP_PROVIDER}."
    ),
    distance: str = typer.Option("cosine", "--distance", help="cosine, l2 or ip."),
    normalize: bool = typer.Option(
        True,
        "--normalize/--no-normalize",
        help="Scale every vector to length 1 (default), or keep the lengths the model gives.",
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Tokens the model reads."),
    truncate_dim: int | None = typer.Option(
        None,
        "--truncate-dim",
        min=8,
        help="Keep the first N dimensions (local); an HTTP endpoint is asked for N "
        "(OpenAI's `dimensions`).",
    ),
    remote_model: str | None = typer.Option(
        None, "--remote-model", help="Model id the endpoint expects (HTTP)."
    ),
    api_key_env: str = typer.Option(
        API_KEY_ENV,
        "--api-key-env",
        metavar="VARIABLE",
        help="Environment variable holding the API key (HTTP), or USER:PASSWORD with --auth basic.",
    ),
    auth: str = typer.Option(
        "bearer",
        "--auth",
        metavar="SCHEME",
        help="How the --api-key-env secret is sent (HTTP): bearer ('Authorization: Bearer "
        "KEY') or basic (HTTP basic auth of USER:PASSWORD).",
    ),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", metavar="DIR", help="Local tokenizer directory for chunking (HTTP)."
    ),
    batch_size: int = typer.Option(
        64,
        "--batch-size",
        min=1,
        max=2048,
        metavar="N",
        help="Texts in one request to the endpoint (HTTP; OpenAI takes up to 2048 texts "
        "and 300,000 tokens a request).",
    ),
    concurrency: int = typer.Option(
        DEFAULT_CONCURRENCY,
        "--concurrency",
        min=1,
        max=MAX_CONCURRENCY,
        metavar="N",
        help="Requests to the endpoint in flight at once while embedding documents (HTTP).",
    ),
    query_prefix: str = typer.Option(
        "", "--query-prefix", metavar="TEXT", help="Prepended to queries (e5: 'query: ')."
    ),
    passage_prefix: str = typer.Option(
        "", "--passage-prefix", metavar="TEXT", help="Prepended to documents (e5: 'passage: ')."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pin a model: hash its weights (or probe the endpoint) and record its spec."""
    from ragstore.errors import InputError
    from ragstore.modelops.specs import add_http_model, add_local_model
    from ragstore.runtime import Runtime

    refuse_remote("models add")  # a local SOURCE is hashed here, the pin goes to the database
    with Runtime() as rt:
        if provider == LOCAL_PROVIDER:
            pinned = add_local_model(
                rt,
                source,
                name=name,
                revision=revision,
                distance=distance,
                normalize=normalize,
                max_tokens=max_tokens,
                truncate_dim=truncate_dim,
                query_prefix=query_prefix,
                passage_prefix=passage_prefix,
            )
        elif provider == HTTP_PROVIDER:
            pinned = add_http_model(
                rt,
                source,
                name=name,
                remote_model=remote_model,
                revision=revision,
                distance=distance,
                normalize=normalize,
                max_tokens=max_tokens or 512,
                api_key_env=api_key_env,
                tokenizer=tokenizer,
                query_prefix=query_prefix,
                passage_prefix=passage_prefix,
                dimensions=truncate_dim,
                batch_size=batch_size,
                concurrency=concurrency,
                auth=auth,
            )
        else:
            raise InputError(
                f"--provider {provider!r} is not one of {LOCAL_PROVIDER}, {HTTP_PROVIDER}"
            )
    if as_json:
        echo_json(pinned.as_dict())
        return
    out = console()
    out.print(
        f"pinned {escape(pinned.spec.key)}: {pinned.spec.dimension} dimensions, "
        f"{pinned.spec.distance}, checksum {pinned.spec.checksum}"
    )
    out.print(f"use it: ragstore models migrate -c COLLECTION --to {escape(pinned.spec.key)}")


def _migrated_line(report: MigrationReport) -> str:
    """The summary of a migration's embedding. A rate under 10 chunks/s keeps a decimal: 7
    chunks in 16.9 s (the model's load counts) printed "0 chunks/s" beside "7 chunks
    embedded", which read as nothing embedded."""
    unit = "documents" if report.recut else "chunks"
    rate = report.chunks_per_second
    shown = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
    ingested = f"{report.ingested} written by ingest meanwhile, " if report.ingested else ""
    return (
        f"collection {report.collection!r}: {report.embedded} chunks embedded with "
        f"{escape(report.target)} ({report.resumed_from} {unit} already done, "
        f"{ingested}{report.total} in all) in {report.seconds:.1f}s, {shown} chunks/s"
    )


@app.command("migrate")
def migrate_cmd(
    positional: str | None = _positional(),
    collection: str | None = _collection_option(),
    to: str = typer.Option(
        ..., "--to", metavar="MODEL", help="Target model: NAME or NAME@REVISION."
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", min=1, max=100_000, help="Chunks per committed batch."
    ),
    switch: bool = typer.Option(
        True, "--switch/--no-switch", help="Switch to the new model once validated."
    ),
    sample_queries: int = typer.Option(
        8,
        "--sample-queries",
        min=0,
        max=1000,
        help="Queries asked of the new space before switching.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-embed a collection with another model beside the old one, then switch.

    Resumable: run it again after an interruption and it continues where it stopped.
    Searches use the old model until the switch; `ragstore models rollback` undoes it.
    """
    from ragstore.cli.signals import terminate_as_interrupt
    from ragstore.modelops.migrate import migrate
    from ragstore.runtime import Runtime

    # POST /v1/collections/{name}/model/migrate runs the whole backfill in one request:
    # past the client's timeout the CLI would report a failure while the server goes on
    refuse_remote(
        "models migrate",
        "; a short migration can also be asked of the server (POST "
        "/v1/collections/NAME/model/migrate), without progress or Ctrl-C",
    )
    name = pick_collection(collection, positional, "migrate")
    try:
        with (
            terminate_as_interrupt(),
            Runtime() as rt,
            progress("re-embedding", "chunks") as update,
        ):
            report = migrate(
                rt,
                name,
                to,
                batch_size=batch_size,
                switch=switch,
                sample_queries=sample_queries,
                progress=lambda done, total: update(done, total, ""),
            )
    except KeyboardInterrupt as exc:
        sys.exit(_print_interrupted(exc, name))
    if as_json:
        echo_json({**asdict(report), "chunks_per_second": report.chunks_per_second})
        return
    err = err_console()
    err.print(_migrated_line(report))
    if report.sample_queries:
        err.print(
            f"validated: {report.sample_queries} sample queries answered, "
            f"{report.sample_self_recall:.0%} found their own chunk"
        )
    if report.switched:
        err.print(
            f"switched {report.collection!r} from {escape(report.source)} to "
            f"{escape(report.target)}; undo with `ragstore models rollback "
            f"-c {report.collection}`"
        )
    for note in report.notes:
        err.print(note)


def _print_interrupted(exc: KeyboardInterrupt, name: str) -> int:
    """Say where an interrupted migration stands, read back from the database (each batch
    commits on its own, so that is exact), and how to go on; return the exit status."""
    from ragstore.cli.signals import interrupt_status
    from ragstore.errors import RagstoreError
    from ragstore.modelops.migrate import model_status
    from ragstore.runtime import Runtime

    how, status = interrupt_status(exc)
    err = err_console()
    try:
        with Runtime() as rt:
            rows = model_status(rt, name)
    except RagstoreError as error:
        err.print(f"interrupted by {how}; where the migration stands is unknown: {error}")
        return status
    active = next((r["model"] for r in rows if r["status"] == "active"), "?")
    for r in rows:
        if r["status"] == "building":
            model, have, missing = escape(r["model"]), r["vectors"], r["missing"]
            done = (
                f"{have} of {have + missing} chunks have a vector for {model}"
                if r["chunks"] == "live"  # else the target has a chunk set of its own
                else f"{have} vectors stored for {model}, {missing} documents to re-cut"
            )
            err.print(
                f"interrupted by {how}: {done} (each batch is committed); searches still "
                f"use {escape(active)}"
            )
            break
    else:
        err.print(f"interrupted by {how}: {name!r} uses {escape(active)}")
    err.print(
        "  run the same command again to resume where it stopped, or drop the new space "
        f"with `ragstore models cancel -c {name}`; `ragstore models status -c {name}` "
        "shows where it stands"
    )
    return status


@app.command("rollback")
def rollback_cmd(
    positional: str | None = _positional(),
    collection: str | None = _collection_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Switch a collection back to its previous model at once (its vectors were kept)."""
    from ragstore.cli.remote import remote_client
    from ragstore.modelops.migrate import rollback
    from ragstore.profiles import get_settings
    from ragstore.runtime import Runtime

    name = pick_collection(collection, positional, "rollback")
    client = remote_client(get_settings())
    if client is not None:  # POST /v1/collections/{name}/model/rollback: the same switch
        with client:
            answer = client.rollback_model(name)
        old, new = str(answer["previous"]), str(answer["active"])
    else:
        with Runtime() as rt:
            old, new = rollback(rt, name)
    if as_json:
        echo_json({"collection": name, "from": old, "to": new})
        return
    err_console().print(f"rolled {name!r} back from {escape(old)} to {escape(new)}")


@app.command("prune")
def prune_cmd(
    positional: str | None = _positional(),
    collection: str | None = _collection_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; drop at once."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Drop the vectors of models the collection no longer uses (no rollback past this);
    lists what goes and asks first."""
    from ragstore.modelops.migrate import prune
    from ragstore.runtime import Runtime

    refuse_remote("models prune")
    name = pick_collection(collection, positional, "prune")
    err = err_console()
    with Runtime() as rt:
        dropped = prune(rt, name, dry_run=True)
        if dropped and not dry_run:
            for sp in dropped:
                err.print(f"to drop: {sp.table} ({escape(sp.model.key)})")
            confirm(
                f"Drop these {len(dropped)} table(s) of {name!r}? Rollback to their "
                "models becomes impossible",
                yes=yes,
            )
            dropped = prune(rt, name, expected=[sp.table for sp in dropped])
    if as_json:
        echo_json(
            {
                "collection": name,
                "dry_run": dry_run,
                "dropped": [{"table": sp.table, "model": sp.model.key} for sp in dropped],
            }
        )
        return
    verb = "would drop" if dry_run else "dropped"
    if not dropped:
        err.print(f"nothing to prune in {name!r}")
    for sp in dropped:
        err.print(f"{verb} {sp.table} ({escape(sp.model.key)})")


@app.command("remove")
def remove_cmd(
    model: str = typer.Argument(..., metavar="MODEL", help="NAME@REVISION (or NAME alone)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only check that nothing uses it; remove nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; remove at once."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete a pinned model that no collection uses (not as its model, not kept for a
    rollback, not being migrated to); refused, naming each use, otherwise. Asks first."""
    from ragstore.modelops.remove import remove_model
    from ragstore.runtime import Runtime

    refuse_remote("models remove")  # pins are made and kept on the database, not the server
    with Runtime() as rt:
        pinned = remove_model(rt, model, dry_run=True)
        if not dry_run:
            confirm(
                f"Remove the pin of model {pinned.spec.key}? No collection uses it; pinning "
                "it again takes `ragstore models add`",
                yes=yes,
            )
            pinned = remove_model(rt, pinned.spec.key)
    if as_json:
        echo_json({"model": pinned.spec.key, "dry_run": dry_run, "removed": not dry_run})
        return
    verb = "would remove" if dry_run else "removed"
    err_console().print(f"{verb} {escape(pinned.spec.key)} (no collection uses it)")


@app.command("cancel")
def cancel_cmd(
    positional: str | None = _positional(),
    collection: str | None = _collection_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Drop an unfinished migration's new space; the active model is untouched."""
    from ragstore.modelops.migrate import cancel
    from ragstore.runtime import Runtime

    refuse_remote("models cancel")
    name = pick_collection(collection, positional, "cancel")
    with Runtime() as rt:
        dropped = cancel(rt, name)
    if as_json:
        echo_json(
            {
                "collection": name,
                "cancelled": [
                    {"table": sp.table, "model": sp.model.key, "action": action}
                    for sp, action in dropped
                ],
            }
        )
        return
    err = err_console()
    if not dropped:
        err.print(f"no migration in progress in {name!r}")
    for sp, action in dropped:
        err.print(f"cancelled the migration to {escape(sp.model.key)} ({sp.table} {action})")


@app.command("status")
def status_cmd(
    positional: str | None = _positional(),
    collection: str | None = _collection_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The embedding spaces of a collection: which model is active, building or retired.

    The chunk set column says which chunks a space's vectors are of: live, the
    collection's searched chunks; own, a set cut for that model of its own (kept for a
    rollback after a migration that cut the documents again)."""
    from ragstore.modelops.migrate import model_status
    from ragstore.runtime import Runtime

    refuse_remote(
        "models status",
        "; the server shows a collection's spaces at GET /v1/collections/NAME/model",
    )
    name = pick_collection(collection, positional, "status")
    with Runtime() as rt:
        rows = model_status(rt, name)
    if as_json:
        echo_json(rows)
        return
    print_table(
        # "chunk set": the collection's live chunks, or a set cut for this model of its
        # own; a column "chunks" holding "live" and "own" read as a count gone wrong
        ["space", "model", "dim", "status", "chunk set", "vectors", "missing", "activated"],
        [
            [
                r["table"],
                r["model"],
                str(r["dimension"]),
                r["status"],
                r["chunks"],
                str(r["vectors"]),
                str(r["missing"]),
                str(r["activated_at"] or "-"),
            ]
            for r in rows
        ],
    )
