"""``ragstore serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import logging

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str | None = typer.Option(None, "--host", help="Bind address [RAGSTORE_API_HOST]."),
        port: int | None = typer.Option(None, "--port", help="Port [RAGSTORE_API_PORT].",
                                        min=0, max=65535),
        workers: int | None = typer.Option(None, "--workers", min=1, max=64,
                                           help="Worker processes [RAGSTORE_API_WORKERS]."),
    ) -> None:
        """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
        import os

        import uvicorn

        from ragstore.profiles import get_settings

        overrides = {k: v for k, v in
                     (("api_host", host), ("api_port", port), ("api_workers", workers))
                     if v is not None}
        settings = get_settings(**overrides)
        # uvicorn's worker processes build the app from the environment: pass the overrides on
        for name, value in overrides.items():
            os.environ[f"RAGSTORE_{name.upper()}"] = str(value)
        from ragstore.api.app import auth_enabled

        auth_enabled(settings)  # refuse an unsafe auth setting before binding
        logging.getLogger("ragstore").setLevel(settings.log_level.upper())
        uvicorn.run("ragstore.api.app:create_app", factory=True, host=settings.api_host,
                    port=settings.api_port, workers=settings.api_workers,
                    log_level=settings.log_level, access_log=False)
