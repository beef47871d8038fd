"""Top-level commands: ``ingest`` and ``demo``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ragstore.cli.output import console, echo_json, err_console, escape, printable, progress
from ragstore.errors import InputError

if TYPE_CHECKING:
    from ragstore.cli.remote import RemoteIngest
    from ragstore.client import Client
    from ragstore.ingest import IngestReport
    from ragstore.runtime import Runtime


def _parse_meta(items: list[str]) -> dict[str, str]:
    """``--meta KEY=VALUE``: each value stored as the string given.

    Raises ``ValueError`` with what is wrong with which item (the caller makes it a usage
    error, exit 64, as :func:`_parse_meta_json` does, before anything is read or stored).
    A key given twice is refused rather than the last value kept silently: which value
    was meant is unknowable, and ``--meta-json`` refuses it the same way."""
    return dict(_key_values(items, "KEY=VALUE (e.g. --meta team=search)", {}))


def _key_values(
    items: list[str], form: str, others: Mapping[str, object]
) -> Iterator[tuple[str, str]]:
    """``(key, text)`` of each ``KEY=...`` item, or ValueError for an item without ``=``
    or a key, and for a key given twice or already in ``others`` (the other option's)."""
    seen: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{item!r} is not {form}")
        if key in seen or key in others:
            again = "twice" if key in seen else "by --meta too"
            raise ValueError(f"the key {key!r} is given {again}; give each key once")
        seen.add(key)
        yield key, text


def _parse_meta_json(items: list[str], strings: Mapping[str, str]) -> dict[str, Any]:
    """``--meta-json KEY=JSON``: each value parsed as JSON (a number, true/false, null, a
    list, an object or a quoted string), so that ``year=2024`` is the number a range
    filter (``{"year": {"$gte": 2020}}``) compares, where ``--meta year=2024`` stores the
    string "2024", which no numeric range finds. ``--meta`` keeps its meaning (strings).

    Raises ``ValueError`` with what is wrong with which key (the caller makes it a usage
    error, before anything is read or stored). A key given twice, or by ``--meta`` too,
    is refused: which value was meant is unknowable (JSON objects refuse a repeated key
    the same way, :func:`ragstore.validation.loads_json`)."""
    from ragstore.validation import loads_json, problem_in

    out: dict[str, Any] = {}
    for key, text in _key_values(items, "KEY=JSON (e.g. --meta-json year=2024)", strings):
        try:
            value = loads_json(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the value of {key!r} is not JSON ({exc.msg} at character {exc.pos + 1}); "
                f"write a number (year=2024), true, false, null, a list, an object or a "
                f"quoted string (note='\"a b\"'), or use --meta {key}=TEXT for a string"
            ) from None
        # what PostgreSQL or the API would refuse (NaN, an integer past 64 bits, a NUL)
        if found := problem_in(value, json_only=True):
            raise ValueError(f"the value of {key!r} holds {found}")
        out[key] = value
    return out


def _failed_status(paths: list[Path], failed: Sequence[tuple[str | None, str | None]]) -> int:
    """The exit status of an ingest in which ``failed`` (document, code) failed and nothing
    else happened: ``path_not_found``'s 66 when they are every path given, each missing
    (``ingest missing-dir`` said 1, where TROUBLESHOOTING.md maps the code to 66, as
    ``restore nothere.dump`` exits); 1 otherwise, some files failed (a file of a folder
    removed while it was read among them)."""
    from ragstore.errors import PathNotFoundError

    given = {printable(str(p)) for p in paths}
    missing = failed and all(code == PathNotFoundError.code for _, code in failed)
    if missing and {printable(str(doc)) for doc, _ in failed} == given:
        return PathNotFoundError.exit_code
    return 1


def _print_report(report: IngestReport, *, prune: bool = False) -> None:
    synced = ""
    if report.count("removed") or report.count("vanished"):
        synced = f", {report.count('removed')} removed, {report.count('vanished')} vanished"
    skipped = f", {report.count('skipped')} skipped" if report.count("skipped") else ""
    unattempted = report.count("not_attempted")
    stopped = f", {unattempted} not attempted" if report.stopped_by is not None else ""
    # headings have no vector (as `db check` says): 12 stored, 5 embedded, 0 reused left
    # 7 unexplained
    n = report.headings
    headings = f" ({n} heading{'s' if n != 1 else ''}, not embedded)" if n else ""
    err = err_console()
    err.print(
        f"collection {report.collection!r}: {report.count('added')} added, "
        f"{report.count('updated')} updated, {report.count('unchanged')} unchanged, "
        f"{len(report.failed)} failed{stopped}{skipped}{synced}; {report.chunks} chunks stored"
        f"{headings}, {report.embedded} embedded, {report.reused} reused "
        f"({report.seconds:.1f}s)"
    )
    for o in report.failed:
        err.print(f"  [red]failed[/] {escape(printable(f'[{o.code}] {o.error}'))}")
    for o in report.outcomes:
        if o.status == "skipped":
            err.print(f"  [yellow]skipped[/] {escape(printable(f'[{o.code}] {o.error}'))}")
    if not report.outcomes:
        from ragstore.formats import supported_suffixes

        err.print(
            "  no files to ingest: folders are searched for supported suffixes only "
            f"({', '.join(sorted(supported_suffixes()))}) and hidden files are skipped; "
            "name a file to ingest it whatever its suffix"
        )
    vanished = [o.source for o in report.outcomes if o.status == "vanished"]
    if vanished:
        # with --prune, those under a folder left empty (failed above, saying why)
        how = "" if prune else "; run again with --sync --prune to remove them"
        err.print(f"  {len(vanished)} stored document(s) no longer on disk were kept{how}")
    if report.stopped_by is not None:
        from ragstore.ingest.service import stops_reading

        fails = "every later file" if stops_reading(report.stopped_by) else "every write"
        err.print(
            f"stopped by an error that fails {fails}: {unattempted} file(s) not "
            "attempted (nothing of them stored); fix the error below and run the same "
            "command again to resume (what is stored is skipped as unchanged)"
        )


def _print_interrupted(exc: KeyboardInterrupt) -> int:
    """Say what an interrupted ingest stored and how to resume; return the exit status."""
    from ragstore.cli.signals import interrupt_status
    from ragstore.ingest import IngestInterrupted

    how, status = interrupt_status(exc)
    err = err_console()
    if not isinstance(exc, IngestInterrupted):
        err.print(f"interrupted by {how}")
        return status
    report = exc.report
    err.print(
        f"interrupted by {how}: {report.count('added')} added, {report.count('updated')} "
        f"updated, {report.count('unchanged')} unchanged, {len(report.failed)} failed "
        f"of {exc.total} files; {report.chunks} chunks stored ({report.seconds:.1f}s)"
    )
    for o in report.failed:
        err.print(f"  [red]failed[/] {escape(printable(f'[{o.code}] {o.error}'))}")
    err.print(
        "  each document is stored whole or not at all; run the same command again to "
        "resume (what is stored is skipped as unchanged)"
    )
    return status


def _announce_vanished(prune: bool) -> Callable[[list[str]], None]:
    def announce(sources: list[str]) -> None:
        err = err_console()
        verb = "removing" if prune else "vanished (kept without --prune)"
        err.print(f"{verb}: {len(sources)} document(s) no longer on disk")
        for source in sources:
            err.print(f"  [yellow]-[/] {escape(printable(source))}")

    return announce


def do_ingest(
    rt: Runtime,
    paths: list[Path],
    collection: str | None,
    meta: dict[str, Any],
    *,
    sync: bool = False,
    prune: bool = False,
) -> IngestReport:
    """Ingest ``paths`` here, with a progress bar (a terminal) or progress lines (a log)."""
    from ragstore.ingest import ingest_paths

    with progress("ingesting", "files") as update:

        def on_progress(_event: str, files: int, chunks: int) -> None:
            update(files, None, f"{chunks} chunks")

        report = ingest_paths(
            rt,
            paths,
            collection,
            metadata=meta,
            progress=on_progress,
            sync=sync,
            prune=prune,
            on_vanished=_announce_vanished(prune),
        )
    return report


def _ingest_through(
    client: Client,
    server: str,
    paths: list[Path],
    collection: str,
    meta: dict[str, Any],
    as_json: bool,
) -> None:
    """Ingest by uploading to the server at RAGSTORE_URL (its model does the embedding)."""
    from ragstore.cli.remote import RemoteFailed, RemoteInterrupted, ingest_remote
    from ragstore.cli.signals import interrupt_status, terminate_as_interrupt

    try:
        with terminate_as_interrupt(), client, progress("uploading", "files") as update:
            result = ingest_remote(client, server, paths, collection, meta, update)
    except RemoteFailed as exc:
        # say what the server had acknowledged before the error, then the error itself
        if as_json:
            echo_json(asdict(exc.result))
        c = exc.result.counts
        err_console().print(
            f"stopped by an error: the server acknowledged {c.get('added', 0)} added, "
            f"{c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged, "
            f"{len(exc.result.failed)} failed"
            + (f", {c['not_attempted']} not attempted" if c.get("not_attempted") else "")
            + _queued(exc.result)
            + f" of {exc.total} files; fix the error below "
            "and run the same command again to resume (what is stored is skipped as "
            "unchanged)"
        )
        for f in exc.result.failed:
            line = f"[{f['code']}] {f['detail']}"
            err_console().print(f"  [red]failed[/] {escape(printable(line))}")
        raise exc.error from None
    except KeyboardInterrupt as exc:
        how, status = interrupt_status(exc)
        if not isinstance(exc, RemoteInterrupted):  # not while uploading
            err_console().print(f"interrupted by {how}")
            sys.exit(status)
        c = exc.result.counts
        err_console().print(
            f"interrupted by {how}: the server acknowledged {c.get('added', 0)} added, "
            f"{c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged, "
            f"{len(exc.result.failed)} failed of {exc.total} files; the request in flight "
            "may have been stored too (each document whole or not at all); run the same "
            "command again to resume (what is stored is skipped as unchanged)"
        )
        sys.exit(status)
    if as_json:
        echo_json(asdict(result))
    c = result.counts
    err = err_console()
    err.print(
        f"collection {collection!r} via {escape(server)}: {c.get('added', 0)} added, "
        f"{c.get('updated', 0)} updated, {c.get('unchanged', 0)} unchanged, "
        f"{len(result.failed)} failed"
        + (
            f", {c['superseded']} left for a later write (superseded)"
            if c.get("superseded")
            else ""
        )
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
        + _queued(result)
        + f" ({result.seconds:.1f}s)"
        + (
            "; an upload whose answer was lost was sent again: files it stored are "
            "counted unchanged"
            if result.resent
            else ""
        )
    )
    for f in result.failed:
        line = f"[{f['code']}] {f['detail']}"
        err.print(f"  [red]failed[/] {escape(printable(line))}")
    for f in result.skipped:
        line = f"[{f['code']}] {f['detail']}"
        err.print(f"  [yellow]skipped[/] {escape(printable(line))}")
    if result.failed:
        done = sum(result.counts.values()) - len(result.failed)
        gone = [(f["document"], f["code"]) for f in result.failed]
        raise typer.Exit(_failed_status(paths, gone) if not done else 1)
    if result.unfinished_jobs:  # not known stored: not the 0 of a finished ingest
        raise typer.Exit(1)


def _queued(result: RemoteIngest) -> str:
    """The files in jobs the server accepted whose end the ingest did not see (a job not
    finished within ``remote.JOB_TIMEOUT_S``, or the server lost while it was waited
    for): neither stored nor failed yet, and where to follow them."""
    if not result.unfinished_jobs:
        return ""
    ids = ", ".join(str(j) for j in result.unfinished_jobs)
    jobs = "job" if len(result.unfinished_jobs) == 1 else "jobs"
    return (
        f", {result.counts.get('queued', 0)} queued in {jobs} {ids} not seen to finish "
        "(the server holds them and a `ragstore worker` stores them; `ragstore jobs show "
        f"{result.unfinished_jobs[0]}` tells their fate)"
    )


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        ctx: typer.Context,
        paths: list[Path] = typer.Argument(..., help="Files or folders to ingest."),
        collection: str | None = typer.Option(
            None, "--collection", "-c", help="Target collection (created if new)."
        ),
        meta: list[str] = typer.Option(
            [], "--meta", help="KEY=VALUE document metadata (the value is a string)."
        ),
        meta_json: list[str] = typer.Option(
            [],
            "--meta-json",
            help="KEY=JSON document metadata, the value typed: year=2024, draft=true, "
            'tags=\'["a","b"]\', note=\'"text"\'.',
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        sync: bool = typer.Option(
            False,
            "--sync",
            help="Also report stored documents under PATHS that are gone from disk.",
        ),
        prune: bool = typer.Option(
            False,
            "--prune",
            help="With --sync: remove the documents that are gone from disk (listed first).",
        ),
    ) -> None:
        """Ingest Markdown, text, HTML, PDF, DOCX, PPTX, EPUB, notebook and source files;
        unchanged files are skipped without embedding, changed ones replaced in one transaction."""
        from ragstore.cli.remote import remote_client
        from ragstore.profiles import get_settings
        from ragstore.runtime import Runtime

        # a usage error (64) each, as a bad option value is, naming the option
        try:
            strings = _parse_meta(meta)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), ctx=ctx, param_hint="'--meta'") from None
        user_meta: dict[str, Any] = dict(strings)
        try:
            user_meta.update(_parse_meta_json(meta_json, strings))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), ctx=ctx, param_hint="'--meta-json'") from None
        from ragstore.validation import problem_in

        # its keys too (one past MAX_KEY_CHARS no filter could name), as every write checks
        if found := problem_in(user_meta, json_only=True, paths=True):
            raise typer.BadParameter(
                f"the metadata holds {found}", ctx=ctx, param_hint="'--meta' / '--meta-json'"
            )
        if prune and not sync:
            raise typer.BadParameter(
                "it only works with --sync (e.g. ingest docs/ --sync --prune)",
                ctx=ctx,
                param_hint="'--prune'",
            )
        settings = get_settings()
        client = remote_client(settings)
        if client is not None:
            if sync:
                raise InputError(
                    "--sync needs the database itself: unset RAGSTORE_URL to sync a folder"
                )
            from ragstore.urls import shown_url

            _ingest_through(
                client,
                shown_url(settings.url),  # printed: its password masked
                paths,
                collection or settings.collection,
                user_meta,
                as_json,
            )
            return
        from ragstore.cli.signals import terminate_as_interrupt

        try:
            with terminate_as_interrupt(), Runtime(settings) as rt:
                report = do_ingest(rt, paths, collection, user_meta, sync=sync, prune=prune)
        except KeyboardInterrupt as exc:
            sys.exit(_print_interrupted(exc))
        if as_json:
            echo_json(asdict(report))
        _print_report(report, prune=prune)
        if report.stopped_by is not None:  # its own exit status, as through a server
            raise report.stopped_by
        if report.failed:
            alone = len(report.failed) == len(report.outcomes)  # nothing else happened
            gone = [(o.source, o.code) for o in report.failed]
            raise typer.Exit(_failed_status(paths, gone) if alone else 1)

    @app.command("demo")
    def demo(
        collection: str = typer.Option("demo", "--collection", "-c"),
    ) -> None:
        """Ingest the bundled sample corpus and run a few searches over it.

        On the embedded database the demo first brings an older schema up to date (taking
        a backup, as `ragstore db upgrade` does), so it runs on any earlier data dir.
        """
        from importlib import resources

        from ragstore.cli.db_cmd import upgrade_with_backup
        from ragstore.cli.remote import refuse_remote
        from ragstore.cli.search_cmd import print_hits
        from ragstore.db import migrations
        from ragstore.runtime import Runtime
        from ragstore.search.service import search as run_search

        # ingests into the database and searches in this process; with RAGSTORE_URL set the
        # user's next `ragstore search -c demo` goes to the server, which never saw it
        refuse_remote("demo")
        sample = Path(str(resources.files("ragstore") / "sample"))
        with Runtime() as rt:
            if rt.settings.uses_embedded_database:
                st = migrations.status(rt.raw_db())
                if st.current is not None and st.pending and not st.unknown:
                    upgrade_with_backup(rt)
            console().print(
                f"[bold]ragstore demo[/]: ingesting {sample} into {collection!r} "
                f"on {'the embedded PostgreSQL' if rt.db.embedded else rt.db.where}"
            )
            report = do_ingest(rt, [sample], collection, {"corpus": "sample"})
            _print_report(report)
            for query in (
                "how are schema migrations rolled back?",
                "combine keyword and vector search",
                "what happens to files that did not change?",
            ):
                console().print(f"\n[bold]search:[/] {query}")
                print_hits(run_search(rt, query, collection=collection, k=3), width=160)
        if report.failed:
            raise typer.Exit(1)
