"""``ragstore serve``: the HTTP API under uvicorn, on sockets this command binds itself.

Binding here, before uvicorn starts, lets the auth decision rest on the addresses that are
actually listening (``--host ""`` binds every interface, so keys go on), and lets every
worker share the same sockets. SIGTERM and SIGINT stop the server and its workers
gracefully, and the command then exits 0, with one worker or several; a worker whose parent
died (even by ``kill -9``) is told to stop by the kernel.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str | None = typer.Option(None, "--host", help="Bind address [RAGSTORE_API_HOST]."),
        port: int | None = typer.Option(
            None, "--port", help="Port [RAGSTORE_API_PORT].", min=0, max=65535
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=1, max=64, help="Worker processes [RAGSTORE_API_WORKERS]."
        ),
    ) -> None:
        """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
        from ragstore.http.listen import PARENT_ENV, bind_sockets, bound_addresses
        from ragstore.profiles import get_settings

        overrides = {
            k: v
            for k, v in (("api_host", host), ("api_port", port), ("api_workers", workers))
            if v is not None
        }
        # RAGSTORE_URL is not looked at: it names the server for the CLI, and a server's
        # environment (a .env beside it) may well hold its own URL; serve always serves
        # the database that RAGSTORE_DATABASE_URL / RAGSTORE_DATA_DIR name
        settings = get_settings(**overrides)
        sockets = bind_sockets(settings.api_host, settings.api_port)
        bound = bound_addresses(sockets)
        # uvicorn's worker processes build the app from the environment: pass the overrides
        # on. Not the bound addresses, which are no setting (config.SERVE_ONLY): the app's
        # factory takes them (_serve)
        passed = {f"RAGSTORE_{name.upper()}": str(value) for name, value in overrides.items()}
        passed[PARENT_ENV] = str(os.getpid())
        with _environment(passed):
            _serve(overrides, sockets, bound)


def _serve(overrides: dict[str, Any], sockets: list[socket.socket], bound: list[str]) -> None:
    """Serve on ``sockets`` (``bound``: their addresses; closed at the end, a Unix one's file
    removed), the overrides already in the environment."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ragstore.api.server import server_config
    from ragstore.cli.signals import stop_signals_end_cleanly
    from ragstore.http.listen import open_unix_sockets, release_sockets
    from ragstore.profiles import get_settings

    private_metrics = None
    try:  # the sockets released however this ends (a Unix one's file left, else)
        settings = get_settings(**overrides, api_bound=",".join(bound))
        from ragstore.api.app import auth_enabled, create_app

        host_from = "--host" if "api_host" in overrides else "RAGSTORE_API_HOST"
        if auth_enabled(settings, host_from=host_from):  # refuse an unsafe auth setting
            open_unix_sockets(sockets)  # keys on: the key is the credential
        logging.getLogger("ragstore").setLevel(settings.log_level.upper())
        config = server_config(
            # the bound addresses reach the app as its factory's argument, which uvicorn
            # pickles to each worker process: not through the environment or .env, where
            # anyone running uvicorn could set them (config.SERVE_ONLY)
            functools.partial(create_app, bound=settings.api_bound),
            settings,
            factory=True,
            workers=settings.api_workers,
            log_level=settings.log_level,
            access_log=False,
        )
        server = uvicorn.Server(config)
        private_metrics = _share_metrics(settings.api_workers)
        if settings.api_workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            with stop_signals_end_cleanly(server):
                server.run(sockets=sockets)
    finally:
        release_sockets(sockets, bound)
        if private_metrics is not None:
            import shutil

            from ragstore.observability.metrics import MULTIPROC_ENV

            # the variable goes with its folder: left set, whatever ran next in this
            # process (a test's CliRunner, a program embedding the CLI) read metrics
            # from a folder that no longer exists
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(private_metrics, ignore_errors=True)


@contextmanager
def _environment(passed: dict[str, str]) -> Iterator[None]:
    """``passed`` set in this process's environment while serving, and the environment as
    it was once the server stops (or fails to start).

    The variables are for uvicorn's worker processes, which build the app from the
    environment. Left set, a long-lived process that ran ``serve`` (a test's CliRunner, a
    program embedding the CLI) built every later app (``create_app()``) from a server long
    gone: its bound address judged keys and the loopback guard, its parent's pid tied the
    app to a process that had exited."""
    before = {name: os.environ.get(name) for name in passed}
    os.environ.update(passed)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _share_metrics(workers: int) -> str | None:
    """With several workers and no ``PROMETHEUS_MULTIPROC_DIR``, make a private empty one
    for them (returned, to be removed with the variable when the server stops); None where
    none is needed.

    Without a shared folder each worker counted on its own and a scrape saw whichever
    worker answered it: every counter jumped back and forth between the workers' totals,
    which Prometheus reads as resets, so rates and alerts were wrong. The workers are
    spawned after this, so they import prometheus-client with the variable set."""
    from ragstore.observability.metrics import MULTIPROC_ENV, multiprocess_dir

    if workers <= 1 or multiprocess_dir():
        return None
    import tempfile

    folder = tempfile.mkdtemp(prefix="ragstore-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    logging.getLogger("ragstore").info(
        "%d workers share their metrics through %s (%s was unset); removed at exit",
        workers,
        folder,
        MULTIPROC_ENV,
    )
    return folder
