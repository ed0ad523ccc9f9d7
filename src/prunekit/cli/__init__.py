"""The ``prunekit`` command line (typer). Every command is a thin layer over the library API."""

from prunekit.cli.app import app, main

__all__ = ["app", "main"]
