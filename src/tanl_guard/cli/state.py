# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard state show``: what a screening checkpoint holds (hashed keys and counts only)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

__all__ = ["state", "describe_checkpoint"]


def _describe_detector(state: dict) -> dict:
    from ..detectors import DETECTORS

    name = state.get("detector")
    if name not in DETECTORS:
        return {"detector": name}
    return DETECTORS[name].detector.describe_state(state)


def describe_checkpoint(payload: dict) -> dict:
    """A JSON-safe description of a screening checkpoint (each detector describes its own saved state)."""
    guard = payload["guard"]
    verdicts = payload.get("verdicts", {})
    detector = _describe_detector(guard["detector"])
    out = {
        "format": payload.get("format"),
        "studies_done": len(verdicts),
        "verdicts": dict(Counter(v["verdict"] for v in verdicts.values())),
        "order": payload.get("order"),
        "detector": guard.get("name", detector.get("detector")),
        "images_screened": guard.get("n_images"),
        "threshold_policy": guard.get("policy_threshold"),
        "metadata": payload.get("metadata", {}),
    }
    detector.pop("detector", None)
    if "selected" in detector:  # the checkpoint holds no corpus: indices into the guard's corpus
        detector["selected_negative_indices"] = detector.pop("selected")
    out.update(detector)
    if guard.get("feature_detector"):
        out["feature_gate"] = _describe_detector(guard["feature_detector"])
    if guard.get("calibration"):
        out["calibration"] = guard["calibration"]
    return out


@click.group()
def state() -> None:
    """Saved detector state (screening checkpoints)."""


@state.command("show")
@click.argument("source", default="tanl_guard_state.pt")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Where to find SOURCE when it is an MLflow run id.")
def show(source: str, tracking_uri: str | None) -> None:
    """Show a checkpoint file, or the final state of an MLflow run (SOURCE = file path or run id)."""
    from ..pipeline import load_checkpoint

    path = Path(source)
    try:
        if not path.exists():
            from ..integrations.mlflow import download_state

            path = download_state(source, tracking_uri)
        click.echo(json.dumps(describe_checkpoint(load_checkpoint(path)), indent=2, default=str))
    except (ValueError, LookupError, OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
