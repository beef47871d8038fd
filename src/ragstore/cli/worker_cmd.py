"""``ragstore worker``: run background ingest jobs from the queue in PostgreSQL."""

from __future__ import annotations

import logging

import typer

from ragstore.config import get_settings


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        concurrency: int = typer.Option(1, "--concurrency", min=1, max=32,
                                        help="Jobs run at once by this process."),
        burst: bool = typer.Option(False, "--burst",
                                   help="Exit once the queue is empty instead of waiting."),
        name: str | None = typer.Option(None, "--name", help="Worker name in the logs."),
    ) -> None:
        """Process ingest jobs until stopped (SIGINT/SIGTERM finish the current job first)."""
        from ragstore.jobs.worker import run_worker

        settings = get_settings()
        logging.getLogger("ragstore").setLevel(settings.log_level.upper())
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        run_worker(settings, concurrency=concurrency, burst=burst, name=name)
