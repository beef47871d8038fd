"""The ``ragstore`` command line: one typer sub-app per command group."""

from ragstore.cli.app import app, main

__all__ = ["app", "main"]
