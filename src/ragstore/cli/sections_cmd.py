"""``ragstore eval-sections``: section hit rates on long documents, baselines beside them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ragstore.cli.output import console as stdout_console
from ragstore.cli.output import err_console
from ragstore.cli.search_cmd import mode_options


def register(app: typer.Typer) -> None:
    @app.command("eval-sections")
    def eval_sections(
        ctx: typer.Context,
        set_dir: Path = typer.Argument(
            ..., help="Question set: questions.tsv (question, file, section_regex) and docs/."
        ),
        mode: list[str] = typer.Option(
            [],
            "--mode",
            "-m",
            metavar="MODE",
            help="vector, fulltext or hybrid; repeat for several (default: all three).",
        ),
        questions: str | None = typer.Option(
            None, "--questions", "-q", help="Only questions FIRST-LAST (1-based), e.g. 21-40."
        ),
        collection: str | None = typer.Option(
            None,
            "--collection",
            "-c",
            help="Scratch collection (default sections-<set>-<8 hex digits of its path>).",
        ),
        baselines: bool = typer.Option(
            True,
            "--baselines/--no-baselines",
            help="Also score the 150-word window baselines: cosine with the collection's "
            "model, BM25 over the windows' PostgreSQL lexemes (the collection's text search "
            "configuration, stemmed as full-text search is) and their RRF.",
        ),
        sections: bool = typer.Option(
            True,
            "--sections/--chunks",
            help="Rank sections (the default search) or chunks alone, to compare.",
        ),
        per_question: bool = typer.Option(
            False, "--per-question", help="Also print each question's first hit rank."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    ) -> None:
        """Top-1 and top-3 section hit rates per search mode on a long-document question
        set, with the naive 150-word window baselines (dense, BM25, RRF) from the same run.

        docs/ is ingested as `ragstore ingest --sync --prune` would (subfolders too; the
        documents of deleted files removed) and read the same way for the baselines; the
        questions' files are paths relative to docs/. Questions are searched as plain text
        (as `ragstore eval`). The BM25 baseline analyses windows and questions with the
        database's to_tsvector under the collection's text search configuration."""
        from rich.table import Table

        from ragstore.cli.remote import refuse_remote
        from ragstore.runtime import Runtime
        from ragstore.search.sections import evaluate_sections

        refuse_remote("eval-sections")  # as `eval`: a scratch collection searched here
        modes = mode_options(ctx, mode)  # 64, as search --mode
        with Runtime() as rt:
            result = evaluate_sections(
                rt,
                set_dir,
                modes=modes,
                questions=questions,
                collection=collection,
                baselines=baselines,
                sections=sections,
            )
        n = len(result.questions)
        console, err = stdout_console(), err_console()
        err.print(
            f"collection {result.collection!r}: {result.ingested} documents newly "
            f"ingested ({result.ingest_seconds:.1f} s), {n} questions"
        )
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "questions": n,
                        "ingested": result.ingested,
                        "ingest_seconds": round(result.ingest_seconds, 2),
                        "modes": {
                            s.mode: {
                                "top1": s.hits_at(1),
                                "top3": s.hits_at(3),
                                "ranks": {str(q): r for q, r in s.ranks.items()},
                            }
                            for s in result.scores
                        },
                    },
                    indent=2,
                )
            )
            return
        table = Table(title=f"{set_dir.resolve().name}: section hits of {n} questions")
        for col in ("mode", "top-1", "top-3", "top-1 %", "top-3 %"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for s in result.scores:
            one, three = s.hits_at(1), s.hits_at(3)
            table.add_row(
                s.mode, str(one), str(three), f"{100 * one / n:.0f}", f"{100 * three / n:.0f}"
            )
        console.print(table)
        if per_question:
            console.print("question  " + "  ".join(f"{s.mode:>13}" for s in result.scores))
            for q in result.questions:
                ranks = [s.ranks[q.number] for s in result.scores]
                console.print(
                    f"{q.number:>8}  " + "  ".join(f"{'-' if r is None else r:>13}" for r in ranks)
                )
