# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard ui``: the MLflow UI over the audit store, bound to 127.0.0.1."""

from __future__ import annotations

import sys

import click

__all__ = ["ui"]


@click.command()
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Backend store (default: sqlite:///./mlflow.db).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
def ui(tracking_uri: str | None, host: str, port: int) -> None:
    """Start the MLflow UI on the audit store (Ctrl-C stops it)."""
    from ..integrations.mlflow import run_ui

    click.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop)", err=True)
    try:
        sys.exit(run_ui(store_uri=tracking_uri, host=host, port=port))
    except (ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
