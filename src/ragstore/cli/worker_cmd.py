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
    ) -> None:
        """Process ingest jobs until stopped (SIGINT/SIGTERM finish the current job first)."""
        from ragstore.jobs.worker import run_worker
        from ragstore.observability.logging import configure_logging
        from ragstore.profiles import get_settings

        # RAGSTORE_URL is not looked at: a worker serves the queue in the database it is
        # given, beside `ragstore serve`, and both are often started from the environment
        # (a .env, an env file) that also holds the URL for the CLI; refusing would stop
        # such a deployment, and the URL names no database a worker could use instead
        settings = get_settings()
        # the same structured lines as the API (JSON unless stderr is a terminal)
        configure_logging(
            settings.log_level, log_format=settings.log_format, log_queries=settings.log_queries
        )
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        run_worker(settings, concurrency=concurrency, burst=burst, name=name)
