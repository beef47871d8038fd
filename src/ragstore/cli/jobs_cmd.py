"""``ragstore jobs``: the background ingest jobs that ``ragstore worker`` runs.

An upload over ``RAGSTORE_BACKGROUND_INGEST_BYTES`` (or sent with ``background``) is a
job on the queue in PostgreSQL; these commands show what is queued, running, succeeded
or failed, with each job's attempts, progress and per-document errors. With
``RAGSTORE_URL`` set they ask that server (``GET /v1/jobs``); else they read the database
through the same service the route answers from (``ragstore.jobs.reading``), so a job
prints the same either way. The API only reads jobs: there is nothing to cancel or retry.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import typer

from ragstore.cli.output import console, echo_json, escape, print_more, print_table

app = typer.Typer(help="Background ingest jobs: list, show.", no_args_is_help=True)

STATUSES = ("queued", "running", "succeeded", "failed")  # as the API's ?status= takes
DEFAULT_LIMIT = 50  # jobs per page when --limit is not given, as the API's default
MAX_ID = 2**63 - 1  # a job id, as the API's path takes it (a larger one: a usage error)


def _client() -> Any:
    from ragstore.cli.remote import remote_client
    from ragstore.profiles import get_settings

    return remote_client(get_settings())


def _check_filters(ctx: typer.Context, status: str | None, collection: str | None) -> None:
    """A usage error (64) naming the option for a filter the API refuses, checked before
    anything is asked, so that it reads the same here and through a server (whose 422
    named a query parameter, where the database here would have found no jobs)."""
    from ragstore.errors import invalid_collection_name
    from ragstore.models import COLLECTION_NAME

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(
            f"{status!r} is no job status; give one of {', '.join(STATUSES)}",
            ctx=ctx,
            param_hint="'--status'",
        )
    if collection is not None and not re.fullmatch(COLLECTION_NAME, collection):
        raise typer.BadParameter(
            invalid_collection_name(collection).message, ctx=ctx, param_hint="'--collection'"
        )


def _not_found(job_id: int) -> Exception:
    from ragstore.errors import JobNotFoundError

    return JobNotFoundError(f"job {job_id} does not exist; `ragstore jobs list` lists the jobs")


def _local_page(
    limit: int, after: int | None, status: str | None, collection: str | None
) -> dict[str, Any]:
    """The page ``GET /v1/jobs`` answers, read from the database."""
    from ragstore.jobs.reading import job_public, read_jobs
    from ragstore.paging import encode_cursor
    from ragstore.runtime import Runtime

    with Runtime() as rt:
        rows, more = read_jobs(rt, after=after, limit=limit, status=status, collection=collection)
    data = [job_public(j).model_dump(mode="json") for j in rows]
    return {
        "data": data,
        "count": len(data),
        "next_cursor": encode_cursor(rows[-1].id) if more else None,
    }


def _local_job(job_id: int) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` answers it, read from the database."""
    from ragstore.jobs.reading import job_public, read_job
    from ragstore.runtime import Runtime

    with Runtime() as rt:
        job: dict[str, Any] = job_public(read_job(rt, job_id)).model_dump(mode="json")
    return job


def _age(created_at: str | None, now: datetime) -> str:
    """How long ago, in its largest unit: ``45s``, ``12m``, ``3h``, ``9d``."""
    if not created_at:
        return ""
    seconds = max(0, int((now - datetime.fromisoformat(created_at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _error_cell(job: dict[str, Any]) -> str:
    """The first error's code, and how many more there are."""
    errors = job.get("errors") or []
    if not errors:
        return ""
    first = str(errors[0].get("code") or "error")
    return first if len(errors) == 1 else f"{first} (+{len(errors) - 1})"


def _row(job: dict[str, Any], now: datetime) -> list[str]:
    return [
        str(job["id"]),
        str(job["collection"]),
        str(job["status"]),
        str(job["attempts"]),
        f"{job['documents_done']}/{job['total_documents']}",
        _age(job.get("created_at"), now),
        _error_cell(job),
    ]


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    status: str | None = typer.Option(
        None,
        "--status",
        "-s",
        metavar="STATUS",
        help="Only jobs in this status: queued, running, succeeded or failed.",
    ),
    collection: str | None = typer.Option(
        None, "--collection", "-c", metavar="NAME", help="Only jobs of this collection."
    ),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=1, max=500, help="Jobs per page."),
    after: int | None = typer.Option(
        None,
        "--after",
        min=1,
        max=MAX_ID,
        metavar="ID",
        help="Start after this job id (next page; the newest job comes first).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Jobs newest first: id, collection, status, attempts, progress, age, first error."""
    from ragstore.paging import encode_cursor

    _check_filters(ctx, status, collection)
    client = _client()
    if client is not None:
        with client:
            cursor = encode_cursor(after) if after is not None else None
            page = client.list_jobs(
                cursor=cursor, limit=limit, status=status, collection=collection
            )
    else:
        page = _local_page(limit, after, status, collection)
    rows: list[dict[str, Any]] = page["data"]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console().print(
            "no jobs"
            + (f" {status}" if status else "")
            + (f" of collection {escape(collection)!r}" if collection else "")
            + (" after that id" if after is not None else "")
        )
        return
    now = datetime.now(UTC)
    print_table(
        ["id", "collection", "status", "attempts", "progress", "age", "error"],
        [_row(j, now) for j in rows],
    )
    if page.get("next_cursor"):  # the next page of this listing, its filters kept
        sized = str(limit) if limit != DEFAULT_LIMIT else None
        options = {"--status": status, "-c": collection, "--limit": sized}
        print_more(["ragstore", "jobs", "list"], options, rows[-1]["id"])


@app.command("show")
def show_cmd(
    job_id: int = typer.Argument(..., metavar="ID", min=1, max=MAX_ID, help="The job's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One job: status, attempts, progress, summary, times and each document's error."""
    from ragstore.errors import JobNotFoundError

    client = _client()
    try:
        if client is not None:
            with client:
                job = dict(client.get_job(job_id))
        else:
            job = _local_job(job_id)
    except JobNotFoundError:
        raise _not_found(job_id) from None
    if as_json:
        echo_json(job)
        return
    from ragstore.cli.output import shown_value

    out = console()
    errors = job.pop("errors", [])
    for key, value in job.items():
        out.print(f"[bold]{key:>15}[/]  {escape(shown_value(value))}")
    out.print(f"[bold]{'errors':>15}[/]  {len(errors)}")
    for e in errors:
        where = str(e.get("document") or "(job)")
        code, detail = str(e.get("code")), shown_value(e.get("detail"))
        # "empty.md: empty_document: empty.md: the file is empty" named the file twice
        detail = detail.removeprefix(f"{where}: ")
        out.print(f"  {escape(where)}: {escape(code)}: {escape(detail)}")
