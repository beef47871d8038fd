"""``ragstore search``: ranked chunks with score, document, section path and text."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ragstore.errors import InputError
from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.search import FusionParams, parse_filter
from ragstore.search import search as run_search
from ragstore.search.hybrid import (
    DEFAULT_FULLTEXT_WEIGHT,
    DEFAULT_RRF_K,
    DEFAULT_VECTOR_WEIGHT,
)

console = Console(highlight=False, soft_wrap=True)


def _explain_line(h: Hit) -> str:
    assert h.explain is not None
    parts = []
    vec = h.explain.get("vector")
    ft = h.explain.get("fulltext")
    parts.append(f"vector #{vec['rank']} distance {vec['distance']:.4f}" if vec else "vector -")
    parts.append(f"fulltext #{ft['rank']} bm25 {ft['bm25']:.3f}" if ft else "fulltext -")
    return "; ".join(parts)


def print_hits(hits: list[Hit], width: int = 240) -> None:
    if not hits:
        console.print("no results")
    for rank, h in enumerate(hits, 1):
        section = " > ".join(h.section_path) or "-"
        text = " ".join(h.text.split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        console.print(f"[bold]{rank:>2}.[/] [cyan]{h.score:.3f}[/]  {escape(h.source)}  "
                      f"[dim]§ {escape(section)} ({h.chunk_type})[/]")
        if h.explain is not None:
            console.print(f"    [dim]{escape(_explain_line(h))}[/]")
        console.print(f"    {escape(text)}")


def parse_vector(value: str) -> list[float]:
    """``--vector``: a JSON array of numbers, or ``@path`` to a file holding one."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--vector {value}: cannot read the file: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--vector is not a JSON array of numbers: {exc.msg}") from None
    if not isinstance(data, list) or not data or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in data):
        raise InputError("--vector must be a non-empty JSON array of numbers, e.g. [0.1, 0.2]")
    return [float(x) for x in data]


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search(
        query: str | None = typer.Argument(None, help="What to search for (websearch "
                                           "syntax: \"phrase\", or, -word)."),
        k: int = typer.Option(10, "-k", help="Number of hits.", min=1, max=1000),
        collection: str | None = typer.Option(None, "--collection", "-c"),
        mode: str | None = typer.Option(None, "--mode", "-m",
                                        help="vector, fulltext or hybrid (RRF of both); "
                                        "hybrid by default, vector with --vector alone."),
        vector: str | None = typer.Option(None, "--vector", metavar="JSON|@FILE",
                                          help="Search by this embedding (a JSON array, or "
                                          "@file holding one) instead of embedding the query."),
        where: str | None = typer.Option(None, "--where", help="JSON filter, e.g. "
                                         "'{\"chunk_type\": \"table\", \"year\": "
                                         "{\"$gte\": 2020}}'."),
        explain: bool = typer.Option(False, "--explain",
                                     help="Show each list's rank and raw score."),
        ef_search: int | None = typer.Option(None, "--ef-search", min=1, max=1000,
                                             help="HNSW ef_search for this query."),
        rrf_k: float = typer.Option(DEFAULT_RRF_K, "--rrf-k", help="RRF constant (hybrid)."),
        vector_weight: float = typer.Option(DEFAULT_VECTOR_WEIGHT, "--vector-weight",
                                            help="Weight of the vector list (hybrid)."),
        fulltext_weight: float = typer.Option(DEFAULT_FULLTEXT_WEIGHT, "--fulltext-weight",
                                              help="Weight of the full-text list (hybrid)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        context: str | None = typer.Option(None, "--context", help="N neighbouring chunks "
                                           "on each side of a hit, or 'section'."),
    ) -> None:
        """Search a collection; prints ranked chunks with score, document and section."""
        from ragstore.search.context import parse_context, render_context, with_context
        from ragstore.search.service import resolve_mode

        query_vector = parse_vector(vector) if vector is not None else None
        if query is None and query_vector is None:
            raise InputError("give the QUERY to search for, or --vector")
        search_mode = resolve_mode(mode, query, query_vector)
        filter_spec = parse_filter(where) if where is not None else None
        fusion = FusionParams(rrf_k, vector_weight, fulltext_weight)
        context_mode = parse_context(context) if context is not None else None
        with Runtime() as rt:
            hits = run_search(rt, query, collection=collection, k=k, mode=search_mode,
                              where=filter_spec, ef_search=ef_search, explain=explain,
                              fusion=fusion, vector=query_vector)
            shown = with_context(rt, hits, context_mode) if context_mode is not None else []
        if as_json:
            typer.echo(json.dumps([asdict(h) for h in (shown or hits)], indent=2, default=str))
        elif shown:
            print_hits(list(shown))
            for rank, h in enumerate(shown, 1):
                console.print(f"\n[bold]context of hit {rank}[/] ({h.context_mode}):\n"
                              f"{escape(render_context(h, width=240))}")
        else:
            print_hits(hits)
