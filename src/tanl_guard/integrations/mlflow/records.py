# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Per-study verdict records: validation and their flattening into the ``audit/verdicts.json`` table."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...guard.verdicts import ACCEPT, REJECT, UNREADABLE, Verdict
from ...privacy import check_hashed_key, check_no_phi
from .snapshot import to_json_safe

__all__ = [
    "VERDICTS",
    "VERDICT_COLUMNS",
    "OPTIONAL_COLUMNS",
    "normalise_verdict_record",
    "verdict_row",
    "merge_verdict_tables",
    "format_time",
    "short_reason",
]

VERDICTS = tuple(verdict.value for verdict in Verdict)
_GATE_SCORES = ("label_score", "label_threshold", "feature_score", "feature_threshold")

# One row per study, in the order an auditor reads it: when, which study, what was decided and why. The MLflow UI
# shows a table artifact as a grid of fixed-width cells (about 20 characters, whatever the window's width), so the
# cells that explain a verdict are short: scores to 3 decimals as in the CLI, ``why`` (see :func:`short_reason`),
# ``top_negatives`` comma-separated (not JSON), then the full ``reason``; the bulky ``series`` JSON and the
# bookkeeping columns come last. ``record_id`` is ``<run_key>:<journal line>:<index>``, unique per record, so re-uploads and
# back-fills never duplicate rows.
VERDICT_COLUMNS = ("time", "study", "verdict", "id_score", "threshold", "why", "top_negatives", "reason")
# Present only when some record has them: the classifier's output (MONAI runs), the guard's zero-shot prediction,
# and the DICOM series (screening runs).
OPTIONAL_COLUMNS = ("classifier_output", "prediction", "n_series", "series")
_TAIL_COLUMNS = ("step", "record_id")


def format_time(t_ms: int | float | None) -> str | None:
    """``2026-05-01T22:40:12Z`` (UTC, seconds) from milliseconds since the epoch; ``None`` stays ``None``.

    Args:
        t_ms: a journal entry's write time.
    """
    if t_ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t_ms) / 1000.0))


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
    ``refused_by`` (study and series; checked like the other scores, kept as columns, ``refused_by`` as JSON text);
    ``"step"`` (studies screened so far) is filled from ``step`` when missing. ``"classifier_output"`` (the
    classifier's result for the item, when one ran: a label, a score or a short list) and ``"prediction"`` get
    columns of their own; other extra keys are kept as they are (non-scalars as JSON text).

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


def short_reason(record: Mapping[str, Any]) -> str | None:
    """The gist of a verdict's reason in a table cell's width: ``2/3 series OOD``, ``truncated_pixel_data``.

    Rejected studies: how many of their readable series were out of distribution (scores are in their own
    columns); unreadable ones: the reason categories of their series (or of the file, for a file of no study).
    Records without series (MONAI runs) keep the first clause of their reason.

    Args:
        record: a normalised record.
    """
    reason, verdict = record.get("reason"), record.get("verdict")
    series = [s for s in record.get("series") or [] if isinstance(s, Mapping)]
    unreadable = [s for s in series if s.get("verdict") == UNREADABLE]
    if series and verdict == REJECT:
        readable = len(series) - len(unreadable)
        rejected = sum(1 for s in series if s.get("verdict") == REJECT)
        return f"{rejected}/{readable} series OOD" + (f", {len(unreadable)} unreadable" if unreadable else "")
    if series and verdict == UNREADABLE:
        kinds = dict.fromkeys(str(s.get("reason") or "unreadable").split(":", 1)[0].strip() for s in unreadable)
        return ", ".join(kinds) or reason
    if series and verdict == ACCEPT:
        return f"{len(unreadable)} series unreadable" if unreadable else None
    if not isinstance(reason, str):
        return reason
    if record.get("study") is None and reason.startswith("file "):  # "file <key>: <category>: <detail>"
        parts = reason.split(": ")
        return parts[1] if len(parts) > 1 else reason
    return reason.split(";", 1)[0]


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value)


def verdict_row(record: Mapping[str, Any], record_id: str, time_ms: int | float | None = None) -> dict[str, Any]:
    """Flatten a normalised record into one table row (column -> value).

    Args:
        record: output of :func:`normalise_verdict_record`.
        record_id: unique id of the record.
        time_ms: when the record was journalled (ms since the epoch); the ``time`` column (UTC).
    """
    row: dict[str, Any] = {
        "time": format_time(time_ms) if time_ms is not None else record.get("time"),
        "study": record.get("study"),
        "verdict": record.get("verdict"),
        "id_score": _rounded(record.get("id_score")),
        "threshold": _rounded(record.get("threshold")),
        "why": short_reason(record),
        "top_negatives": ", ".join(record.get("top_negatives") or []),
        "reason": record.get("reason"),
    }
    if record.get("classifier_output") is not None:
        row["classifier_output"] = _cell(record["classifier_output"])
    if record.get("prediction") is not None:
        row["prediction"] = _cell(record["prediction"])
    if record.get("series"):
        row["n_series"] = len(record["series"])
        row["series"] = json.dumps(record["series"], sort_keys=True)
    row["step"] = record.get("step")
    row["record_id"] = record_id
    for key, value in record.items():
        if key not in row and key != "series":
            row[key] = _cell(value)
    return row


def _column_order(columns: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(columns))
    known = set(VERDICT_COLUMNS) | set(OPTIONAL_COLUMNS) | set(_TAIL_COLUMNS)
    optional = [c for c in OPTIONAL_COLUMNS if c in present]
    extras = [c for c in present if c not in known]
    return list(VERDICT_COLUMNS) + optional + extras + [c for c in _TAIL_COLUMNS]


def merge_verdict_tables(existing: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Union of an existing ``{"columns", "data"}`` table and new rows, keyed by ``record_id``.

    Rows already present (same ``record_id``) are not added again, so uploading the merged table is idempotent.
    Columns come in the reading order of :data:`VERDICT_COLUMNS`, then the :data:`OPTIONAL_COLUMNS` that some row
    has, then any other keys, then ``step`` and ``record_id``. The result is the format pandas writes with
    ``to_json(orient="split", index=False)``, which is what ``mlflow.log_table`` writes and ``mlflow.load_table``
    reads.

    Args:
        existing: the table currently in the run, or ``None``.
        rows: new rows from :func:`verdict_row`.
    """
    seen_columns: list[str] = []
    table_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if existing:
        old_cols: Sequence[str] = existing.get("columns") or []
        seen_columns.extend(old_cols)
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
        seen_columns.extend(row)
        table_rows.append(dict(row))
    columns = _column_order(seen_columns)
    return {"columns": columns, "data": [[row.get(col) for col in columns] for row in table_rows]}
