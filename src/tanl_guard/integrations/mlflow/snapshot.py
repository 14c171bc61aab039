# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Framework-independent helpers for detector-state snapshots: JSON-safe conversion and selection churn."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["FINAL_STATE_ARTIFACT", "to_json_safe", "snapshot_to_json", "state_artifact_name", "selection_churn", "state_metrics"]

# The saved state of a run (a signed screening checkpoint, or a signed guard state from the MONAI handler), at one
# artifact path that every writer (``AuditLogger.log_final_state``) and reader (``download_state``,
# ``audit_summary``, ``tanl-guard state show RUN_ID``) uses.
FINAL_STATE_ARTIFACT = "state/final.pt"


def to_json_safe(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types.

    Mappings become dicts with string keys; tuples, lists and sets become lists (sets sorted when possible);
    numpy/torch scalars and arrays go through ``tolist()``; dataclasses through ``asdict``; paths become
    strings; non-finite floats become ``None`` (strict JSON has no NaN); anything else becomes ``str(obj)``.

    Args:
        obj: any object, typically a detector/guard snapshot.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        items = [to_json_safe(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_json_safe(dataclasses.asdict(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "detach"):  # torch tensors: leave the graph and the device first
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist"):  # numpy/torch arrays and scalars
        return to_json_safe(obj.tolist())
    if hasattr(obj, "item"):
        return to_json_safe(obj.item())
    return str(obj)


def snapshot_to_json(snapshot: Mapping[str, Any], step: int | None = None) -> str:
    """Serialise a detector/guard snapshot to the JSON text written at ``state/step_<n>.json``.

    The snapshot is generic: any mapping, e.g. ``{"selected_negatives": [...], "threshold": 0.42,
    "queue_sizes": {"pos": 12, "neg": 40}}``. ``step`` is added under ``"step"`` when given.

    Args:
        snapshot: the state to record.
        step: studies screened when the snapshot was taken.
    """
    data = to_json_safe(dict(snapshot))
    if step is not None:
        data["step"] = int(step)
    return json.dumps(data, sort_keys=True, indent=1, allow_nan=False)


def state_artifact_name(step: int) -> str:
    """File name of a snapshot in the run's ``state/`` folder: ``step_<n>.json``, zero-padded to 6 digits.

    Args:
        step: studies screened when the snapshot was taken.
    """
    return f"step_{int(step):06d}.json"


def selection_churn(prev: Iterable[str] | None, cur: Iterable[str] | None) -> float:
    """Jaccard distance ``1 - |A & B| / |A | B|`` between two selected-negative sets.

    0 means the selection did not change, 1 that it was replaced entirely. Two empty sets give 0.

    Args:
        prev: previously selected negative labels (``None`` is the empty set).
        cur: currently selected negative labels.
    """
    a, b = set(prev or ()), set(cur or ())
    union = a | b
    if not union:
        return 0.0
    return 1.0 - len(a & b) / len(union)


def state_metrics(snapshot: Mapping[str, Any], prev_negatives: list[str] | None) -> tuple[dict[str, float], list[str] | None]:
    """The ``state/*`` metrics of a detector snapshot, and its selection for the next call's churn.

    ``state/threshold``, ``state/images_screened``, ``state/pos_queue`` and ``state/neg_queue`` (from
    ``pos_queue``/``neg_queue`` or ``queue_sizes: {"pos", "neg"}``), and ``state/negatives_churn`` (the
    :func:`selection_churn` of ``selected_negatives`` against ``prev_negatives``, when both are known).

    Args:
        snapshot: a JSON-safe snapshot, e.g. ``guard.snapshot()`` through :func:`to_json_safe`.
        prev_negatives: the previous snapshot's ``selected_negatives`` (``None``: no churn yet).

    Returns:
        ``(metrics, negatives)``: the metrics, and the selection to pass as ``prev_negatives`` next time.
    """
    metrics: dict[str, float] = {}

    def number(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None

    negatives = snapshot.get("selected_negatives")
    if isinstance(negatives, list):
        negatives = [str(n) for n in negatives]
        if prev_negatives is not None:
            metrics["state/negatives_churn"] = selection_churn(prev_negatives, negatives)
    else:
        negatives = prev_negatives
    queues = snapshot.get("queue_sizes") if isinstance(snapshot.get("queue_sizes"), Mapping) else {}
    for name in ("pos", "neg"):
        value = number(snapshot.get(f"{name}_queue", queues.get(name)))
        if value is not None:
            metrics[f"state/{name}_queue"] = value
    for key, metric in (("threshold", "state/threshold"), ("images_screened", "state/images_screened")):
        value = number(snapshot.get(key))
        if value is not None:
            metrics[metric] = value
    return metrics, negatives
