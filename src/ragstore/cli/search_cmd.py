"""``ragstore search``: ranked chunks with score, document, section path and text.

With ``RAGSTORE_URL`` set the query goes to that server; otherwise it runs here, and a
``--mode fulltext`` search never loads the model (nor imports torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from ragstore.cli.output import console, echo_json, err_console, escape, printable
from ragstore.errors import InputError

if TYPE_CHECKING:
    from ragstore.models import Hit
    from ragstore.search.context import HitWithContext
    from ragstore.search.hybrid import FusionParams
    from ragstore.search.service import Mode

# the defaults of ragstore.search.hybrid, repeated so that --help needs no search import
# (tests/test_cli_usage.py checks that they agree)
RRF_K = 10.0
VECTOR_WEIGHT = 1.0
FULLTEXT_WEIGHT = 1.0


def _explain_line(h: Hit) -> str:
    assert h.explain is not None
    parts = []
    if h.section_score is not None:  # the hit's own score, beside its section's
        parts.append(f"chunk score {h.score:.3f}")
    vec = h.explain.get("vector")
    ft = h.explain.get("fulltext")
    parts.append(f"vector #{vec['rank']} distance {vec['distance']:.4f}" if vec else "vector -")
    parts.append(f"fulltext #{ft['rank']} bm25 {ft['bm25']:.3f}" if ft else "fulltext -")
    return "; ".join(parts)


def _ranked_by(h: Hit) -> float:
    """The score the list is ordered by: the section's, or the chunk's with ``--chunks``."""
    return h.score if h.section_score is None else h.section_score


def print_hits(hits: Sequence[Hit], width: int = 240) -> None:
    """Each hit on two lines: rank, score, document and section; then the text, cut to
    width. The document is an upload's name, or a file's source (its path): an upload's
    source is the server's path of it, which its uploader never gave. The score is the one
    the list is ordered by: its section's when sections are ranked (the chunk's own
    score, printed before, read 0.077 above 0.083); ``--explain`` shows the chunk's."""
    out = console()
    if not hits:
        out.print("no results")
    for rank, h in enumerate(hits, 1):
        section = " > ".join(h.section_path) or "-"
        text = " ".join(h.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        out.print(
            f"[bold]{rank:>2}.[/] [cyan]{_ranked_by(h):.3f}[/]  "
            f"{escape(printable(h.name or h.source))}  "
            f"[dim]§ {escape(section)} ({h.chunk_type})[/]"
        )
        if h.explain is not None:
            out.print(f"    [dim]{escape(_explain_line(h))}[/]")
        out.print(f"    {escape(text)}")


def _hint_if_filtered_out(hits: Sequence[Any], where: Any, collection: str) -> None:
    """A filtered search that found nothing may name a path or value no document has
    (a filter on an absent path is valid and keeps nothing): say where to look."""
    if not hits and where:
        err_console().print(
            "the filter kept nothing; `ragstore collections fields "
            f"{escape(collection)}` lists the fields it can name and their values"
        )


def _print_with_context(shown: Sequence[HitWithContext]) -> None:
    from ragstore.search.context import render_context

    print_hits(shown)
    for rank, h in enumerate(shown, 1):
        console().print(
            f"\n[bold]context of hit {rank}[/] ({h.context_mode}):\n"
            f"{escape(render_context(h, width=240))}"
        )


def _hits_from_json(data: list[dict[str, Any]]) -> list[HitWithContext]:
    """The server's hits as the objects a local search returns, to print them the same way."""
    from dataclasses import fields

    from ragstore.models import Hit
    from ragstore.search.context import ContextChunk, HitWithContext

    hit_keys = {f.name for f in fields(Hit)}  # fields a newer server adds are not printed
    chunk_keys = {f.name for f in fields(ContextChunk)}
    out = []
    for d in data:
        context = [
            ContextChunk(**{k: v for k, v in c.items() if k in chunk_keys})
            for c in d.get("context") or []
        ]
        plain = {k: v for k, v in d.items() if k in hit_keys}
        out.append(
            HitWithContext(
                **plain,
                context=context,
                context_mode=d.get("context_mode") or "",
                merged_hits=d.get("merged_hits") or [],
            )
        )
    return out


# the most a ``--vector @FILE`` is read of: 16,000 numbers (the API's longest vector) at
# 25 characters each fit in 400 KB; a device or an endless pipe must not fill memory
MAX_VECTOR_FILE_BYTES = 4 * 1024 * 1024


def _read_vector_file(value: str) -> str:
    """The text of ``--vector @FILE``, read as UTF-8 and at most
    :data:`MAX_VECTOR_FILE_BYTES`: read whole, ``@/dev/zero`` grew until the kernel
    killed the command, and a file that is not UTF-8 ended it with a traceback."""
    where = value[1:]
    if not where:
        raise InputError("--vector @ names no file; give @PATH, e.g. --vector @query.json")
    try:
        with open(where, "rb") as f:
            data = f.read(MAX_VECTOR_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"--vector {value}: cannot read the file: {exc.strerror}") from None
    if len(data) > MAX_VECTOR_FILE_BYTES:
        raise InputError(
            f"--vector {value}: the file is over {MAX_VECTOR_FILE_BYTES // (1024 * 1024)} MiB; "
            "give a file holding one JSON array of numbers"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"--vector {value}: the file is not UTF-8 (byte {exc.start}); "
            "give a file holding one JSON array of numbers"
        ) from None


def parse_vector(value: str) -> list[float]:
    """``--vector``: a JSON array of numbers, or ``@path`` to a file holding one."""
    from ragstore.validation import loads_json

    text = _read_vector_file(value) if value.startswith("@") else value
    try:
        data = loads_json(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--vector is not a JSON array of numbers: {exc.msg}") from None
    if (
        not isinstance(data, list)
        or not data
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data)
    ):
        raise InputError("--vector must be a non-empty JSON array of numbers, e.g. [0.1, 0.2]")
    try:
        return [float(x) for x in data]
    except OverflowError:
        # an integer past a float's range (309 digits or more): float() raised, a traceback
        raise InputError(
            "--vector holds an integer too large for a float; give the model's numbers, "
            "e.g. [0.1, 0.2]"
        ) from None


T = TypeVar("T")


def _usage_error(ctx: typer.Context, option: str | Sequence[str], parse: Callable[[], T]) -> T:
    """``parse()``, its InputError (exit 65, the API's 422) a usage error naming ``option``
    (exit 64; several options as ``'--a' / '--b'``): TROUBLESHOOTING.md says a bad option
    value is one, as ``jobs list --status bogus`` and click's own checks are."""
    try:
        return parse()
    except InputError as exc:
        hint = f"'{option}'" if isinstance(option, str) else list(option)
        raise typer.BadParameter(exc.message, ctx=ctx, param_hint=hint) from None


def fusion_options(
    ctx: typer.Context, rrf_k: float, vector_weight: float, fulltext_weight: float
) -> FusionParams:
    """``--rrf-k``, ``--vector-weight`` and ``--fulltext-weight`` as the hybrid search's
    :class:`FusionParams`, a value it refuses (negative, over its limit, NaN, infinity, both
    weights 0) a usage error naming the option (exit 64): FusionParams' InputError exited
    65 here and, through a server, its 422 did too, where other bad option values exit 64.
    The rules stay FusionParams' (the API's); only the option is named here."""
    from ragstore.search.hybrid import FusionParams
    from ragstore.validation import finite_number

    given = (("--rrf-k", rrf_k), ("--vector-weight", vector_weight))
    for option, value in (*given, ("--fulltext-weight", fulltext_weight)):
        # "rrf_k must be a finite number" named the API's field, not the option
        _usage_error(ctx, option, partial(finite_number, value, "the value"))
    _usage_error(ctx, "--rrf-k", partial(FusionParams, k=rrf_k))
    _usage_error(ctx, "--vector-weight", partial(FusionParams, vector_weight=vector_weight))
    _usage_error(ctx, "--fulltext-weight", partial(FusionParams, fulltext_weight=fulltext_weight))
    return _usage_error(
        ctx,
        ("--vector-weight", "--fulltext-weight"),
        partial(FusionParams, rrf_k, vector_weight, fulltext_weight),
    )


def mode_options(ctx: typer.Context, modes: Sequence[str]) -> list[Mode]:
    """Repeated ``--mode`` values as search modes, all of them when none is given; a mode
    that is not one a usage error naming ``--mode`` and the modes (exit 64), as ``search
    --mode`` says: ``eval`` and ``eval-sections`` ended a bad one in ``invalid_input`` (65)."""
    from ragstore.search.service import MODES, parse_mode

    return [_usage_error(ctx, "--mode", partial(parse_mode, m)) for m in modes] or list(MODES)


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search(
        ctx: typer.Context,
        query: str | None = typer.Argument(
            None, help='What to search for (websearch syntax: "phrase", or, -word).'
        ),
        k: int = typer.Option(10, "-k", help="Number of hits.", min=1, max=1000),
        collection: str | None = typer.Option(
            None, "--collection", "-c", metavar="NAME", help="Collection [RAGSTORE_COLLECTION]."
        ),
        mode: str | None = typer.Option(
            None,
            "--mode",
            "-m",
            metavar="MODE",
            help="vector, fulltext or hybrid (RRF of both); "
            "hybrid by default, vector with --vector alone.",
        ),
        vector: str | None = typer.Option(
            None,
            "--vector",
            metavar="JSON|@FILE",
            help="Search by this embedding (a JSON array, or "
            "@file holding one) instead of embedding the query.",
        ),
        where: str | None = typer.Option(
            None,
            "--where",
            metavar="JSON",
            help='JSON filter, e.g. \'{"chunk_type": "table", "year": {"$gte": 2020}}\'.',
        ),
        explain: bool = typer.Option(
            False, "--explain", help="Show each list's rank and raw score."
        ),
        ef_search: int | None = typer.Option(
            None, "--ef-search", min=1, max=1000, help="HNSW ef_search for this query."
        ),
        rrf_k: float = typer.Option(RRF_K, "--rrf-k", help="RRF constant (hybrid)."),
        vector_weight: float = typer.Option(
            VECTOR_WEIGHT, "--vector-weight", help="Weight of the vector list (hybrid)."
        ),
        fulltext_weight: float = typer.Option(
            FULLTEXT_WEIGHT, "--fulltext-weight", help="Weight of the full-text list (hybrid)."
        ),
        sections: bool = typer.Option(
            True,
            "--sections/--chunks",
            help="Rank sections, each once (default), or chunks alone.",
        ),
        mmr: bool = typer.Option(
            False,
            "--mmr",
            help="Maximal marginal relevance: pick the k hits among the best --fetch-k "
            "for relevance and diversity.",
        ),
        fetch_k: int | None = typer.Option(
            None, "--fetch-k", metavar="N", help="With --mmr: candidates (default 20, >= k)."
        ),
        lambda_mult: float | None = typer.Option(
            None,
            "--lambda-mult",
            metavar="X",
            help="With --mmr: 1 relevance alone, 0 diversity alone (default 0.5).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        context: str | None = typer.Option(
            None,
            "--context",
            metavar="N|section",
            help="N neighbouring chunks on each side of a hit, or 'section'.",
        ),
    ) -> None:
        """Search a collection; prints ranked chunks with score, document and section."""
        from ragstore.cli.remote import remote_client
        from ragstore.profiles import get_settings
        from ragstore.search.context import check_answer_size, parse_context
        from ragstore.search.filters import parse_filter
        from ragstore.search.mmr import refuse_without_mmr
        from ragstore.search.service import resolve_mode

        query_vector = parse_vector(vector) if vector is not None else None
        if query is None and query_vector is None:  # a usage error, as when it was required
            from typer._click import exceptions as click_exceptions

            raise click_exceptions.MissingParameter(
                ctx=ctx, param_type="argument", param_hint="'QUERY'"
            )
        # a value outside an option's choices is a usage error (64), as click's own are
        search_mode = _usage_error(ctx, "--mode", lambda: resolve_mode(mode, query, query_vector))
        filter_spec = parse_filter(where) if where is not None else None
        context_mode = (
            _usage_error(ctx, "--context", lambda: parse_context(context, "the value"))
            if context is not None
            else None
        )
        if not mmr:  # the search's own check would name fetch_k and mmr, not the options
            refuse_without_mmr({"--fetch-k": fetch_k, "--lambda-mult": lambda_mult}, "--mmr")
        # checked here for a search through a server too (its 422 exited 65)
        fusion = fusion_options(ctx, rrf_k, vector_weight, fulltext_weight)
        settings = get_settings()
        client = remote_client(settings)
        if client is not None:
            with client:
                answer = client.search(
                    collection or settings.collection,
                    query,
                    k=k,
                    mode=search_mode,
                    where=filter_spec,
                    context=context_mode,
                    explain=explain,
                    ef_search=ef_search,
                    vector=query_vector,
                    rrf_k=fusion.k,
                    vector_weight=fusion.vector_weight,
                    fulltext_weight=fusion.fulltext_weight,
                    sections=sections,
                    mmr=mmr,
                    fetch_k=fetch_k,
                    lambda_mult=lambda_mult,
                )
            if as_json:
                echo_json(answer["data"])
                return
            hits = _hits_from_json(answer["data"])
            if context_mode is not None:
                _print_with_context(hits)
            else:
                print_hits(hits)
            _hint_if_filtered_out(hits, filter_spec, collection or settings.collection)
            return

        from ragstore.runtime import Runtime
        from ragstore.search.context import with_context
        from ragstore.search.service import search as run_search

        # as a server refuses it (store.search_response), before the database is opened
        check_answer_size(k, context_mode, settings.max_answer_chunks)
        with Runtime(settings) as rt:

            def searched() -> list[Hit]:
                return run_search(
                    rt,
                    query,
                    collection=collection or settings.collection,  # as through a server
                    k=k,
                    mode=search_mode,
                    where=filter_spec,
                    ef_search=ef_search,
                    explain=explain,
                    fusion=fusion,
                    vector=query_vector,
                    sections=sections,
                    mmr=mmr,
                    fetch_k=fetch_k,
                    lambda_mult=lambda_mult,
                )

            found = searched()
            # a document written since the search: the search runs again (with_context)
            shown: list[HitWithContext] = []
            if context_mode is not None:
                shown = with_context(rt, found, context_mode, search_again=searched)
                found = list(shown)  # the answering search's hits (a stale one left out)
        if as_json:
            # each hit as the API's schema prints it, the keys a search through a server
            # prints too (dataclass fields left out context, context_mode, merged_hits)
            from ragstore.store import hit_public

            echo_json([hit_public(h).model_dump(mode="json") for h in (shown or found)])
        elif shown:
            _print_with_context(shown)
        else:
            print_hits(found)
        if not as_json:
            _hint_if_filtered_out(found, filter_spec, collection or settings.collection)
