"""``ragstore import``: bring vectors in from a basic store, validated, backed up and verified."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer._click.exceptions import UsageError

from ragstore.cli.output import console, deprecated, echo_json, escape, printable, progress

if TYPE_CHECKING:
    from ragstore.imports import ImportPlan, ImportReport


def _mark(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def print_plan(plan: ImportPlan) -> None:
    from ragstore.models import VECTOR_ONLY_PROVIDER

    spec = plan.spec
    usable = (
        "text and vector queries"
        if spec.provider != VECTOR_ONLY_PROVIDER
        else "vector queries only (ragstore cannot load this model)"
    )
    console().print(
        f"source:      {escape(printable(plan.source))} ({plan.validation.read} records)"
    )
    console().print(
        f"model:       {escape(spec.key)} ({spec.provider}, {spec.dimension} dims, "
        f"{spec.distance}; {usable})"
    )
    console().print(
        f"collection:  {escape(plan.collection)} ({'existing' if plan.exists else 'new'})"
    )
    console().print(f"model check: {escape(plan.model_check)}")
    v = plan.validation
    if not v.issues:
        console().print(f"validation:  ok, {v.read} records pass every check")
    else:
        console().print("validation:")
        for issue in v.issues:
            console().print(
                f"  {issue.kind:<19} {issue.count:>7}  {issue.action:<5}  first: "
                f"{escape(', '.join(issue.first))}"
            )
        if v.ok:
            console().print(f"  {'to import':<19} {len(v.kept):>7}  ({v.skipped} skipped)")
        else:
            kinds = ", ".join(i.kind for i in v.aborting)
            console().print(f"  refused: the policy for {kinds} is abort")


def print_report(report: ImportReport) -> None:
    if report.backup is not None:
        console().print(
            f"backup:      {escape(printable(report.backup.path))} ({report.backup.bytes} bytes)"
        )
    else:
        console().print("backup:      none (--no-backup)")
    s = report.seconds
    console().print(
        f"written:     {report.written} documents, chunks and vectors into "
        f"{escape(report.collection)!r}{' (new collection)' if report.created else ''}"
        f" in {s.get('write', 0):.1f}s; index {s.get('index', 0):.1f}s"
    )
    console().print(
        f"batch:       {report.batch} (each document's metadata import.batch: "
        f'--where \'{{"import.batch": "{report.batch}"}}\' finds them)'
    )
    v = report.verification
    console().print("verify:")
    console().print(
        f"  rows        source {v.source_rows} = pgvector {v.stored_rows}  {_mark(v.rows_ok)}"
    )
    console().print(
        f"  checksum    source {v.source_checksum[:16]} = pgvector "
        f"{v.stored_checksum[:16]}  {_mark(v.checksum_ok)}"
    )
    console().print(
        f"  recall@10   {v.recall_at_10:.3f} over {v.queries} queries (ef_search "
        f"{v.ef_search}, min {v.min_recall:.2f})  {_mark(v.recall_ok)}"
    )
    console().print(
        f"imported {report.written} records into {escape(report.collection)!r}; "
        f"{report.skipped} skipped ({s.get('verify', 0):.1f}s verifying)"
    )


def _plan_dict(plan: ImportPlan) -> dict[str, Any]:
    return {
        "source": plan.source,
        "collection": plan.collection,
        "exists": plan.exists,
        "model": plan.spec.key,
        "provider": plan.spec.provider,
        "dimension": plan.spec.dimension,
        "distance": plan.spec.distance,
        "read": plan.validation.read,
        "to_import": plan.to_write,
        "skipped": plan.validation.skipped,
        "issues": [asdict(i) for i in plan.validation.issues],
        "model_check": plan.model_check,
    }


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        source: str = typer.Argument(
            ...,
            help="A .jsonl file, a .npy/.npz file, a Chroma "
            "directory, or a postgresql:// URL (with --table, or --format "
            "langchain-pgvector / llamaindex-pgvector).",
        ),
        collection: str | None = typer.Option(
            None, "--collection", "-c", metavar="NAME", help="Target collection (created if new)."
        ),
        model: str | None = typer.Option(
            None,
            "--model",
            metavar="MODEL",
            help="Model the vectors were made with: a built-in "
            "or pinned model, or NAME[@REVISION] with "
            "--dimension. [required]",
        ),
        model_short: str | None = typer.Option(
            None, "-m", hidden=True, help="Deprecated spelling of --model."
        ),
        dimension: int | None = typer.Option(
            None, "--dimension", help="Dimension of a model ragstore does not know."
        ),
        distance: str | None = typer.Option(
            None,
            "--distance",
            help="cosine, l2 or ip (new imported models; default: a Chroma "
            "collection's own, else cosine).",
        ),
        fmt: str | None = typer.Option(
            None,
            "--format",
            help="jsonl, numpy, postgres, chroma, langchain-pgvector or llamaindex-pgvector "
            "(default: guess).",
        ),
        sidecar: Path | None = typer.Option(
            None,
            "--sidecar",
            help="JSONL/CSV with ids and texts for a .npy/.npz (default: same name).",
        ),
        array: str | None = typer.Option(None, "--array", help="Array of an .npz to read."),
        table: str | None = typer.Option(
            None,
            "--table",
            help="Table of a PostgreSQL source (llamaindex-pgvector: its table_name).",
        ),
        id_column: str = typer.Option(
            "id", "--id-column", help="Column of a PostgreSQL source holding the ids."
        ),
        text_column: str | None = typer.Option(
            None,
            "--text-column",
            help="Column holding the texts (default: one named text, content, document...).",
        ),
        vector_column: str | None = typer.Option(
            None,
            "--vector-column",
            help="Column holding the vectors (default: one named embedding, vector..., or the "
            "only vector-typed one).",
        ),
        metadata_column: str | None = typer.Option(
            None,
            "--metadata-column",
            help="json/jsonb column holding the metadata (default: a json(b) column named "
            "metadata, else every other column).",
        ),
        bytea_dtype: str = typer.Option(
            "float32", "--bytea-dtype", help="float32 or float64 for bytea vectors."
        ),
        chroma_collection: str | None = typer.Option(
            None, "--chroma-collection", help="Collection of a Chroma directory to read."
        ),
        source_collection: str | None = typer.Option(
            None,
            "--source-collection",
            help="Collection of a LangChain PGVector store (default: its only one).",
        ),
        on_invalid: str = typer.Option(
            "abort", "--on-invalid", help="abort or skip, for every kind of bad record."
        ),
        policy: list[str] = typer.Option(
            [], "--policy", help="KIND=ACTION for one kind (missing_text also accepts keep)."
        ),
        trust_vectors: bool = typer.Option(
            False,
            "--trust-vectors",
            help="Skip the check that a loadable --model made the vectors (a few records' "
            "texts embedded again); for vectors made from other text than the records hold.",
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Read and validate only."),
        no_backup: bool = typer.Option(False, "--no-backup", help="Skip the backup first."),
        backup_path: Path | None = typer.Option(
            None,
            "--backup-path",
            help="Where the backup taken first goes: a file, or a folder for a timestamped one "
            "(default: RAGSTORE_DATA_DIR/backups/).",
        ),
        verify_queries: int = typer.Option(
            100,
            "--verify-queries",
            min=1,
            max=10_000,
            help="Source vectors searched to measure the index's recall@10.",
        ),
        min_recall: float = typer.Option(
            0.95, "--min-recall", help="Below this recall@10 the import is rolled back."
        ),
        ef_search: int | None = typer.Option(
            None,
            "--ef-search",
            help="HNSW ef_search of the recall check (default: RAGSTORE_HNSW_EF_SEARCH).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Import vectors from a basic store; everything or nothing, verified."""
        from ragstore.cli.remote import refuse_remote
        from ragstore.cli.signals import interrupt_says
        from ragstore.imports import (
            ImportOptions,
            SourceOptions,
            open_source,
            parse_policies,
            plan_import,
            refuse_if_invalid,
            run_import,
        )
        from ragstore.runtime import Runtime

        if model_short is not None:
            deprecated("`ragstore import -m`", "--model (-m means --mode everywhere else)")
            if model is not None and model != model_short:
                raise UsageError(
                    f"-m {model_short!r} and --model {model!r} differ; give --model only"
                )
            model = model_short
        if model is None:
            raise UsageError("Missing option '--model'.")
        refuse_remote("import")  # one transaction on the database; the API has no route
        policies = parse_policies(on_invalid, policy)
        src = open_source(
            source,
            SourceOptions(
                format=fmt,
                sidecar=sidecar,
                array=array,
                table=table,
                id_column=id_column,
                text_column=text_column,
                vector_column=vector_column,
                metadata_column=metadata_column,
                bytea_dtype=bytea_dtype,
                chroma_collection=chroma_collection,
                source_collection=source_collection,
            ),
        )
        rolled_back = (
            "the import was rolled back, nothing was written (it is one transaction); run "
            "the same command again"
        )
        committed: dict[str, Any] = {}  # records and collection, once the import committed

        def interrupted() -> str:
            """What an interrupt finds: before the commit, the import rolled back; after
            it (while the connections close, the report is printed), it is stored, and
            saying "rolled back" sent the user to run again an import that was done."""
            if not committed:
                return rolled_back
            return (
                f"the import had committed: {committed['records']} records are in "
                f"{escape(committed['collection'])!r}, verified; it stopped before its report "
                "was printed in full"
            )

        with interrupt_says(interrupted):
            with Runtime() as rt:
                opts = ImportOptions(
                    collection=collection or rt.settings.collection,
                    model=model,
                    dimension=dimension,
                    distance=distance,
                    policies=policies,
                    backup=not no_backup,
                    backup_path=backup_path,
                    verify_queries=verify_queries,
                    min_recall=min_recall,
                    ef_search=ef_search,
                    trust_vectors=trust_vectors,
                )
                with progress("importing", "records") as update:

                    def report_stage(stage: str, done: int, total: int) -> None:
                        if stage == "committed":
                            committed.update(records=done, collection=opts.collection)
                        update(done, total or None, stage)

                    plan = plan_import(rt, src, opts, report_stage)
                    if not as_json:
                        print_plan(plan)
                    if dry_run:
                        if as_json:
                            echo_json({"dry_run": True, **_plan_dict(plan)})
                        refuse_if_invalid(plan)
                        if not as_json:
                            console().print(
                                f"dry run: would import {plan.to_write} records into "
                                f"{escape(plan.collection)!r}; nothing was written"
                            )
                        return
                    report = run_import(rt, plan, opts, report_stage)
            if as_json:
                out = asdict(report)
                out["verification"]["ok"] = report.verification.ok
                out["validation"].pop("kept", None)  # one index per record: too long to print
                echo_json(out)
            else:
                print_report(report)
