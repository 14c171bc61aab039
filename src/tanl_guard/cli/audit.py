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
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
              help="The store to read (default: sqlite:///./mlflow.db; env MLFLOW_TRACKING_URI). A SQLite file that "
                   "does not exist is reported, never created.")
@click.option("--experiment", default="tanl-guard", show_default=True, help="Experiment to take the latest run from.")
@click.option("--run-id", default=None, help="A run (default: the latest of the experiment).")
@click.option("--json", "as_json", is_flag=True,
              help="The whole summary as one JSON object: run, status, tags, studies, counts per verdict, "
                   "orphan_files, reject_rate, threshold (last/min/max), delayed records, state artifacts, metrics.")
def summary(tracking_uri: str | None, experiment: str, run_id: str | None, as_json: bool) -> None:
    """Verdict counts, reject rate, thresholds and delayed records of a screening run."""
    from ..integrations.mlflow import audit_summary, format_audit_summary

    try:
        result = audit_summary(tracking_uri=tracking_uri, experiment=experiment, run_id=run_id)
    except Exception as exc:  # one line for every failure: no store, no run, store down
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    click.echo(json.dumps(result, indent=2, default=str) if as_json else format_audit_summary(result))
