"""``ragstore worker``: run background ingest jobs from the queue in PostgreSQL."""

from __future__ import annotations

import logging

import typer


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        concurrency: int = typer.Option(
            1, "--concurrency", min=1, max=32, help="Jobs run at once by this process."
        ),
        burst: bool = typer.Option(
            False, "--burst", help="Exit once the queue is empty instead of waiting."
        ),
        name: str | None = typer.Option(None, "--name", help="Worker name in the logs."),
        metrics_port: int | None = typer.Option(
            None,
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on this port [RAGSTORE_WORKER_METRICS_PORT; "
            "default: none].",
        ),
        metrics_host: str | None = typer.Option(
            None,
            "--metrics-host",
            help="Address the metrics port binds [RAGSTORE_WORKER_METRICS_HOST; "
            "default: 127.0.0.1]; it has no authentication.",
        ),
    ) -> None:
        """Process ingest jobs until stopped (SIGINT/SIGTERM finish the current job first).

        Exits 69 (schema_mismatch) once `ragstore db upgrade` or `downgrade` changes the
        schema under it: start the worker of the matching version; no job is lost.
        """
        from ragstore.jobs.worker import run_worker
        from ragstore.observability.logging import configure_logging
        from ragstore.profiles import get_settings

        # RAGSTORE_URL is not looked at: a worker serves the queue in the database it is
        # given, beside `ragstore serve`, and both are often started from the environment
        # (a .env, an env file) that also holds the URL for the CLI; refusing would stop
        # such a deployment, and the URL names no database a worker could use instead
        overrides = {
            k: v
            for k, v in (
                ("worker_metrics_port", metrics_port),
                ("worker_metrics_host", metrics_host),
            )
            if v is not None
        }
        settings = get_settings(**overrides)
        # the same structured lines as the API (JSON unless stderr is a terminal)
        configure_logging(
            settings.log_level, log_format=settings.log_format, log_queries=settings.log_queries
        )
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        run_worker(settings, concurrency=concurrency, burst=burst, name=name)
