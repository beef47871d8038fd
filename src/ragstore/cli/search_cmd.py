"""``ragstore search``: ranked chunks with score, document, section path and text."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.markup import escape

from ragstore.models import Hit
from ragstore.runtime import Runtime
from ragstore.search import search as run_search

console = Console(highlight=False, soft_wrap=True)


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
        console.print(f"    {escape(text)}")


def register(app: typer.Typer) -> None:
    @app.command("search")
    def search(
        query: str = typer.Argument(..., help="What to search for."),
        k: int = typer.Option(10, "-k", help="Number of hits.", min=1, max=1000),
        collection: str | None = typer.Option(None, "--collection", "-c"),
        ef_search: int | None = typer.Option(None, "--ef-search", min=1, max=1000,
                                             help="HNSW ef_search for this query."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Search a collection; prints ranked chunks with score, document and section."""
        with Runtime() as rt:
            hits = run_search(rt, query, collection=collection, k=k, ef_search=ef_search)
        if as_json:
            typer.echo(json.dumps([asdict(h) for h in hits], indent=2, default=str))
        else:
            print_hits(hits)
