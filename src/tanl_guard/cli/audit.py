# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard audit summary``: read screening runs back from MLflow."""

from __future__ import annotations

import json

import click

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The MLflow audit trail."""


@audit.command("summary")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Default: sqlite:///./mlflow.db.")
@click.option("--experiment", default="tanl-guard", show_default=True)
@click.option("--run-id", default=None, help="A run (default: the latest of the experiment).")
@click.option("--json", "as_json", is_flag=True)
def summary(tracking_uri: str | None, experiment: str, run_id: str | None, as_json: bool) -> None:
    """Verdict counts, reject rate, thresholds and delayed records of a screening run."""
    from ..integrations.mlflow import audit_summary, format_audit_summary

    try:
        result = audit_summary(tracking_uri=tracking_uri, experiment=experiment, run_id=run_id)
    except (LookupError, ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2, default=str) if as_json else format_audit_summary(result))
