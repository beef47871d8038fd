"""``ragstore models``: pinned embedding models, and moving a collection between them."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ragstore.embedding.http import DEFAULT_API_KEY_ENV
from ragstore.embedding.registry import HTTP_PROVIDER, LOCAL_PROVIDER
from ragstore.errors import InputError
from ragstore.modelops.migrate import cancel, migrate, model_status, prune, rollback
from ragstore.modelops.specs import add_http_model, add_local_model, find_model, list_models
from ragstore.runtime import Runtime

app = typer.Typer(help="Pinned embedding models: list, pin, migrate a collection, roll back.",
                  no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every pinned model and the collections that use it."""
    with Runtime() as rt:
        models = list_models(rt)
    if as_json:
        _echo_json([m.as_dict() for m in models])
        return
    if not models:
        console.print("no pinned models yet (a collection pins its model when it is created)")
        return
    table = Table("model", "provider", "dim", "distance", "checksum", "collections")
    for m in models:
        used = ", ".join(f"{c['collection']} ({c['status']})" for c in m.collections) or "-"
        table.add_row(escape(m.spec.key), m.spec.provider, str(m.spec.dimension),
                      m.spec.distance, m.spec.checksum[:23], escape(used))
    console.print(table)


@app.command("show")
def show_cmd(model: str = typer.Argument(..., help="NAME or NAME@REVISION."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Everything a pin records about one model."""
    with Runtime() as rt:
        found = find_model(rt, model, pin_builtin=False)
    data = found.as_dict()
    if as_json:
        _echo_json(data)
        return
    for key, value in data.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        console.print(f"[bold]{key:>12}[/]  {escape(str(shown))}")


@app.command("add")
def add_cmd(
    source: str = typer.Argument(..., help="Local model directory, or the base URL of an "
                                 "OpenAI-compatible endpoint (with --provider openai)."),
    name: str = typer.Option(..., "--name", help="Name to pin the model under."),
    revision: str | None = typer.Option(None, "--revision",
                                        help="Revision label (default: from the checksum)."),
    provider: str = typer.Option(LOCAL_PROVIDER, "--provider",
                                 help=f"{LOCAL_PROVIDER} or {HTTP_PROVIDER}."),
    distance: str = typer.Option("cosine", "--distance", help="cosine, l2 or ip."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Tokens the model reads."),
    truncate_dim: int | None = typer.Option(None, "--truncate-dim", min=8,
                                            help="Keep the first N dimensions (local)."),
    remote_model: str | None = typer.Option(None, "--remote-model",
                                            help="Model id the endpoint expects (HTTP)."),
    api_key_env: str = typer.Option(DEFAULT_API_KEY_ENV, "--api-key-env",
                                    help="Environment variable holding the API key (HTTP)."),
    tokenizer: str | None = typer.Option(None, "--tokenizer",
                                         help="Local tokenizer directory for chunking (HTTP)."),
    query_prefix: str = typer.Option("", "--query-prefix",
                                     help="Prepended to queries (e5: 'query: ')."),
    passage_prefix: str = typer.Option("", "--passage-prefix",
                                       help="Prepended to documents (e5: 'passage: ')."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pin a model: hash its weights (or probe the endpoint) and record its spec."""
    with Runtime() as rt:
        if provider == LOCAL_PROVIDER:
            pinned = add_local_model(rt, source, name=name, revision=revision,
                                           distance=distance, normalize=normalize,
                                           max_tokens=max_tokens, truncate_dim=truncate_dim,
                                           query_prefix=query_prefix,
                                           passage_prefix=passage_prefix)
        elif provider == HTTP_PROVIDER:
            pinned = add_http_model(rt, source, name=name, remote_model=remote_model,
                                          revision=revision, distance=distance,
                                          normalize=normalize, max_tokens=max_tokens or 512,
                                          api_key_env=api_key_env, tokenizer=tokenizer,
                                          query_prefix=query_prefix,
                                          passage_prefix=passage_prefix)
        else:
            raise InputError(f"--provider {provider!r} is not one of {LOCAL_PROVIDER}, "
                             f"{HTTP_PROVIDER}")
    if as_json:
        _echo_json(pinned.as_dict())
        return
    console.print(f"pinned {escape(pinned.spec.key)}: {pinned.spec.dimension} dimensions, "
                  f"{pinned.spec.distance}, checksum {pinned.spec.checksum}")
    console.print(f"use it: ragstore models migrate COLLECTION --to {escape(pinned.spec.key)}")


@app.command("migrate")
def migrate_cmd(
    collection: str = typer.Argument(..., help="Collection to re-embed."),
    to: str = typer.Option(..., "--to", help="Target model: NAME or NAME@REVISION."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, max=100_000,
                                   help="Chunks per committed batch."),
    switch: bool = typer.Option(True, "--switch/--no-switch",
                                help="Switch to the new model once validated."),
    sample_queries: int = typer.Option(8, "--sample-queries", min=0, max=1000,
                                       help="Queries asked of the new space before switching."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-embed a collection with another model beside the old one, then switch.

    Resumable: run it again after an interruption and it continues where it stopped.
    Searches use the old model until the switch; `ragstore models rollback` undoes it.
    """
    with Runtime() as rt, Progress(
            TextColumn("re-embedding"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("re-embedding", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = migrate(rt, collection, to, batch_size=batch_size, switch=switch,
                             sample_queries=sample_queries, progress=progress)
    if as_json:
        _echo_json({**asdict(report), "chunks_per_second": report.chunks_per_second})
        return
    err.print(
        f"collection {report.collection!r}: {report.embedded} chunks embedded with "
        f"{escape(report.target)} ({report.resumed_from} already done, {report.total} in all) "
        f"in {report.seconds:.1f}s, {report.chunks_per_second:.0f} chunks/s"
    )
    if report.sample_queries:
        err.print(f"validated: {report.sample_queries} sample queries answered, "
                  f"{report.sample_self_recall:.0%} found their own chunk")
    if report.switched:
        err.print(f"switched {report.collection!r} from {escape(report.source)} to "
                  f"{escape(report.target)}; undo with `ragstore models rollback "
                  f"{report.collection}`")
    for note in report.notes:
        err.print(note)


@app.command("rollback")
def rollback_cmd(collection: str = typer.Argument(...)) -> None:
    """Switch a collection back to its previous model at once (its vectors were kept)."""
    with Runtime() as rt:
        old, new = rollback(rt, collection)
    err.print(f"rolled {collection!r} back from {escape(old)} to {escape(new)}")


@app.command("prune")
def prune_cmd(collection: str = typer.Argument(...),
              dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go.")
              ) -> None:
    """Drop the vectors of models the collection no longer uses (no rollback past this)."""
    with Runtime() as rt:
        dropped = prune(rt, collection, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    if not dropped:
        err.print(f"nothing to prune in {collection!r}")
    for sp in dropped:
        err.print(f"{verb} {sp.table} ({escape(sp.model.key)})")


@app.command("cancel")
def cancel_cmd(collection: str = typer.Argument(...)) -> None:
    """Drop an unfinished migration's new space; the active model is untouched."""
    with Runtime() as rt:
        dropped = cancel(rt, collection)
    if not dropped:
        err.print(f"no migration in progress in {collection!r}")
    for sp, action in dropped:
        err.print(f"cancelled the migration to {escape(sp.model.key)} ({sp.table} {action})")


@app.command("status")
def status_cmd(collection: str = typer.Argument(...),
               as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The embedding spaces of a collection: which model is active, building or retired."""
    with Runtime() as rt:
        rows = model_status(rt, collection)
    if as_json:
        _echo_json(rows)
        return
    table = Table("space", "model", "dim", "status", "vectors", "missing", "activated")
    for r in rows:
        table.add_row(r["table"], escape(r["model"]), str(r["dimension"]), r["status"],
                      str(r["vectors"]), str(r["missing"]), r["activated_at"] or "-")
    console.print(table)
