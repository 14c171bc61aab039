# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard state show``: what a screening checkpoint holds (hashed keys and counts only)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import click

__all__ = ["state", "describe_checkpoint"]

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _listener(payload: dict[str, Any]) -> dict[str, Any]:
    """A listener's checkpoint keeps no per-study verdicts (its memory must not grow): its counts instead."""
    state = payload.get("listener")
    if not isinstance(state, dict):
        return {}
    return {"studies_done": int(payload.get("step", 0)), "verdicts": dict(state.get("counts", {})),
            "listener_batches": int(state.get("batch", 0))}


def _describe_detector(state: dict) -> dict:
    from ..detectors import DETECTORS

    name = state.get("detector")
    if name not in DETECTORS:
        return {"detector": name}
    return DETECTORS[name].detector.describe_state(state)


def describe_checkpoint(payload: dict) -> dict:
    """A JSON-safe description of a screening checkpoint (each detector describes its own saved state)."""
    guard = payload["guard"]
    detector = _describe_detector(guard["detector"])
    if "verdicts" in payload:  # an earlier version's checkpoint held every verdict
        verdicts = payload["verdicts"]
        done, counts = len(verdicts), dict(Counter(v["verdict"] for v in verdicts.values()))
    else:  # the verdicts are in the work directory's segments; the checkpoint counts them
        done, counts = int(payload.get("step", 0)), dict(payload.get("verdict_counts", {}))
    out = {
        "format": payload.get("format"),
        "studies_done": done,
        "verdicts": counts,
        **_listener(payload),
        "order": payload.get("order"),
        "detector": guard.get("name", detector.get("detector")),
        "images_screened": guard.get("n_images"),
        "threshold_policy": guard.get("policy_threshold"),
        "metadata": payload.get("metadata", {}),
    }
    if "last_batch" in payload:
        out.update(last_batch=payload["last_batch"], manifest=payload.get("manifest"),
                   encoder_sha256=payload.get("encoder") or None)
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
    """Show a checkpoint or saved state: a file, or the saved state (state/final.pt) of an MLflow run.

    SOURCE is a file path, or the 32-character id of a run made by `screen` or the MONAI handler. The file's
    signature is verified with this installation's secret first; an altered or foreign file is refused (exit 1).
    Nothing is created: a store or journal that does not exist is reported, not made.
    """
    import shutil

    from ..guard.state_file import STATE_FORMATS, CheckpointError, load_signed

    path = Path(source)
    downloaded = None
    try:
        if not path.exists():
            if not _RUN_ID.fullmatch(source):
                raise click.ClickException(f"no state file {source} (and it is not an MLflow run id)")
            from ..integrations.mlflow import download_state

            path = downloaded = download_state(source, tracking_uri)
        payload = load_signed(path)
        if not isinstance(payload, dict) or payload.get("format") not in STATE_FORMATS:
            raise CheckpointError(f"{path.name} is not a tanl-guard state file")
        try:
            description = describe_checkpoint(payload)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise CheckpointError(f"{path.name} is not a complete state file ({type(exc).__name__}: {exc})") from None
        click.echo(json.dumps(description, indent=2, default=str))
    except click.ClickException:
        raise
    except Exception as exc:  # one line for every failure: bad file, unknown run, store down
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise click.ClickException(message) from None
    finally:
        if downloaded is not None:
            shutil.rmtree(downloaded.parent, ignore_errors=True)
