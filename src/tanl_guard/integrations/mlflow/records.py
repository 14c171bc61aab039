# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Per-study verdict records: validation and their flattening into the ``audit/verdicts.json`` table."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .privacy import check_hashed_key, check_no_phi
from .snapshot import to_json_safe

__all__ = ["VERDICTS", "VERDICT_COLUMNS", "normalise_verdict_record", "verdict_row", "merge_verdict_tables"]

VERDICTS = ("accept", "reject", "unreadable")
_GATE_SCORES = ("label_score", "label_threshold", "feature_score", "feature_threshold")

# One row per study. ``series`` and ``top_negatives`` are JSON text so that the table stays flat (the MLflow UI
# and ``mlflow.load_table`` show scalars); ``n_series`` gives the count without parsing. ``record_id`` is
# ``<run_key>:<journal line>:<index>``, unique per record, so re-uploads and back-fills never duplicate rows.
VERDICT_COLUMNS = (
    "record_id",
    "step",
    "study",
    "verdict",
    "id_score",
    "threshold",
    "reason",
    "n_series",
    "series",
    "top_negatives",
)


def _score(value: Any, field: str) -> float | None:
    if value is None:
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number or null, got {value!r}") from None
    return score if math.isfinite(score) else None


def _verdict(value: Any, field: str) -> str:
    if value not in VERDICTS:
        raise ValueError(f"{field} must be one of {VERDICTS}, got {value!r}")
    return value


def normalise_verdict_record(record: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """Check one study record and return a JSON-safe copy.

    The record follows the ``screen --json`` format: ``{"study", "verdict", "id_score", "threshold",
    "series": [{"series", "modality", "verdict", "id_score", "views", "reason"}], "top_negatives", "reason"}``,
    plus, from a fused guard, ``label_score``, ``label_threshold``, ``feature_score``, ``feature_threshold`` and
    ``refused_by`` (study and series; they become columns of the table, ``refused_by`` as JSON text);
    ``"step"`` (studies screened so far) is filled from ``step`` when missing. Extra scalar keys are kept.

    Args:
        record: the study record.
        step: studies screened when the record was produced.

    Raises:
        ValueError: for patient-identifying keys, raw UIDs, unknown verdicts or non-numeric scores.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a verdict record must be a mapping, got {type(record).__name__}")
    check_no_phi(record, "verdict record")
    out = to_json_safe(dict(record))
    check_hashed_key(out.get("study"), "study")
    out["verdict"] = _verdict(out.get("verdict"), "verdict")
    out["id_score"] = _score(out.get("id_score"), "id_score")
    out["threshold"] = _score(out.get("threshold"), "threshold")
    for key in _GATE_SCORES:  # a fused guard's two gates (label and feature): scores and thresholds
        if key in out:
            out[key] = _score(out[key], key)
    series = out.get("series") or []
    if not isinstance(series, list):
        raise ValueError("series must be a list of series records")
    for i, item in enumerate(series):
        if not isinstance(item, dict):
            raise ValueError(f"series[{i}] must be a mapping")
        check_hashed_key(item.get("series"), f"series[{i}].series")
        if "verdict" in item:
            item["verdict"] = _verdict(item["verdict"], f"series[{i}].verdict")
        for key in ("id_score", *_GATE_SCORES):
            if key in item:
                item[key] = _score(item[key], f"series[{i}].{key}")
    out["series"] = series
    negatives = out.get("top_negatives") or []
    out["top_negatives"] = [str(n) for n in (negatives if isinstance(negatives, list) else [negatives])]
    if out.get("step") is None and step is not None:
        out["step"] = int(step)
    return out


def verdict_row(record: Mapping[str, Any], record_id: str) -> dict[str, Any]:
    """Flatten a normalised record into one table row (column -> value).

    Args:
        record: output of :func:`normalise_verdict_record`.
        record_id: unique id of the record.
    """
    row: dict[str, Any] = {
        "record_id": record_id,
        "step": record.get("step"),
        "study": record.get("study"),
        "verdict": record.get("verdict"),
        "id_score": record.get("id_score"),
        "threshold": record.get("threshold"),
        "reason": record.get("reason"),
        "n_series": len(record.get("series") or []),
        "series": json.dumps(record.get("series") or [], sort_keys=True),
        "top_negatives": json.dumps(record.get("top_negatives") or []),
    }
    for key, value in record.items():
        if key not in row:
            row[key] = value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return row


def merge_verdict_tables(existing: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Union of an existing ``{"columns", "data"}`` table and new rows, keyed by ``record_id``.

    Rows already present (same ``record_id``) are not added again, so uploading the merged table is idempotent.
    The result is the format pandas writes with ``to_json(orient="split", index=False)``, which is what
    ``mlflow.log_table`` writes and ``mlflow.load_table`` reads.

    Args:
        existing: the table currently in the run, or ``None``.
        rows: new rows from :func:`verdict_row`.
    """
    columns: list[str] = list(VERDICT_COLUMNS)
    table_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if existing:
        old_cols: Sequence[str] = existing.get("columns") or []
        for col in old_cols:
            if col not in columns:
                columns.append(col)
        for values in existing.get("data") or []:
            row = dict(zip(old_cols, values, strict=False))
            rid = row.get("record_id")
            if rid is not None:
                if rid in seen:
                    continue
                seen.add(rid)
            table_rows.append(row)
    for row in rows:
        if row["record_id"] in seen:
            continue
        seen.add(row["record_id"])
        for col in row:
            if col not in columns:
                columns.append(col)
        table_rows.append(dict(row))
    return {"columns": columns, "data": [[row.get(col) for col in columns] for row in table_rows]}
