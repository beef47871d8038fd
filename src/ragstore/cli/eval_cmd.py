"""``ragstore eval``: nDCG@10, Recall@100 and MRR@10 per search mode on a BEIR dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from ragstore.cli.output import console, echo_json, err_console
from ragstore.cli.search_cmd import (
    FULLTEXT_WEIGHT,
    RRF_K,
    VECTOR_WEIGHT,
    fusion_options,
    mode_options,
)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        ctx: typer.Context,
        dataset_dir: Path = typer.Argument(
            ..., help="BEIR dataset: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."
        ),
        mode: list[str] = typer.Option(
            [],
            "--mode",
            "-m",
            metavar="MODE",
            help="vector, fulltext or hybrid; repeat for several (default: all three).",
        ),
        split: str = typer.Option("test", "--split", help="Judgments file qrels/SPLIT.tsv."),
        collection: str | None = typer.Option(
            None,
            "--collection",
            "-c",
            metavar="NAME",
            help="Scratch collection (default eval-<dataset>).",
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="Evaluate only the first N judged queries."
        ),
        rrf_k: float = typer.Option(RRF_K, "--rrf-k", help="RRF constant (hybrid)."),
        vector_weight: float = typer.Option(VECTOR_WEIGHT, "--vector-weight"),
        fulltext_weight: float = typer.Option(FULLTEXT_WEIGHT, "--fulltext-weight"),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    ) -> None:
        """Ingest a BEIR dataset into a cached scratch collection and score each search mode.

        nDCG@10 and MRR@10 come from k=10 searches (the search a user runs), Recall@100
        from k=200 ones; ms/query is the k=10 searches'. Beside them, the nDCG@10 of the
        k=200 lists' top 10 is printed too (column "nDCG@10 k=200", "ndcg@10_k200" in
        --json: BEIR's reading). Stored documents that are no record of the corpus are
        removed from the scratch collection first."""
        from rich.table import Table

        from ragstore.cli.remote import refuse_remote
        from ragstore.errors import InputError
        from ragstore.runtime import Runtime
        from ragstore.search.eval import collection_name, evaluate, ingest_records, load_beir

        # a scratch collection in the database, searched in this process: the server's
        # search (what RAGSTORE_URL names) is not what would be measured
        refuse_remote("eval")
        err = err_console()
        modes = mode_options(ctx, mode)  # 64, as search
        fusion = fusion_options(ctx, rrf_k, vector_weight, fulltext_weight)
        ds = load_beir(dataset_dir, split)
        if limit is not None:
            keep = list(ds.qrels)[:limit]
            ds.qrels = {q: ds.qrels[q] for q in keep}
            ds.queries = {q: ds.queries[q] for q in keep}
        if not ds.qrels:
            # said before the ingest: said after it, a large corpus was embedded (minutes)
            # into a scratch collection only to end in "no judged queries to evaluate"
            raise InputError(
                f"{dataset_dir}: no query of qrels/{split}.tsv is in queries.jsonl, so "
                "there is nothing to evaluate; check the split (--split) and the query ids"
            )
        name = collection or collection_name(ds.name)
        with Runtime() as rt:
            records = [(i, t, x) for i, (t, x) in ds.corpus.items()]
            added = ingest_records(
                rt,
                name,
                records,
                progress=lambda done, total: err.print(f"ingested {done}/{total} documents"),
                removed=lambda gone: err.print(
                    f"removed {len(gone)} stored documents that are no record of the corpus"
                ),
            )
            err.print(
                f"collection {name!r}: {len(records)} documents ({added} newly ingested), "
                f"{len(ds.qrels)} judged queries ({split})"
            )
            results = evaluate(rt, ds, name, modes, fusion=fusion)
        if as_json:
            echo_json(
                {
                    r.mode: {
                        **r.metrics,
                        "ndcg@10_k200": r.deep_ndcg,
                        "ms_per_query": r.ms_per_query,
                    }
                    for r in results
                }
            )
            return
        table = Table(title=f"{ds.name} ({split}, {len(ds.qrels)} queries)")
        for col in ("mode", "nDCG@10", "Recall@100", "MRR@10", "nDCG@10 k=200", "ms/query"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for r in results:
            table.add_row(
                r.mode,
                f"{r.metrics['ndcg@10']:.4f}",
                f"{r.metrics['recall@100']:.4f}",
                f"{r.metrics['mrr@10']:.4f}",
                f"{r.deep_ndcg:.4f}",
                f"{r.ms_per_query:.1f}",
            )
        console().print(table)
