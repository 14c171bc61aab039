# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Reading an audit run back: a summary of verdicts, thresholds and delays, and the final state for ``--resume``."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ...guard.counts import StudyCounts, is_orphan_file, reject_rate
from ...guard.verdicts import ACCEPT, REJECT
from .config import default_journal_dir, existing_store, resolve_tracking_uri, sqlite_path
from .delivery import TABLE_ARTIFACT, make_client
from .journal import Journal
from .records import VERDICTS
from .snapshot import FINAL_STATE_ARTIFACT

__all__ = ["audit_summary", "format_audit_summary", "download_state"]

_RUN_TAGS = (
    "tanl_guard.version",
    "encoder.id",
    "encoder.weights_sha256",
    "classifier.id",
    "corpus.sha256",
    "config.sha256",
    "site",
    "tanl_guard.run_key",
    "audit.end_reason",
)


def _find_run(client: Any, experiment: str, run_id: str | None) -> Any:
    if run_id is not None:
        return client.get_run(run_id)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"experiment {experiment!r} has no runs")
    return runs[0]


def _read_table(client: Any, run_id: str) -> dict[str, Any] | None:
    folder = TABLE_ARTIFACT.rsplit("/", 1)[0]
    if not any(f.path == TABLE_ARTIFACT for f in client.list_artifacts(run_id, folder)):
        return None
    with tempfile.TemporaryDirectory(prefix="tanl_guard_audit_") as tmp:
        local = client.download_artifacts(run_id, TABLE_ARTIFACT, tmp)
        return json.loads(Path(local).read_text(encoding="utf-8"))


def audit_summary(
    tracking_uri: str | None = None, experiment: str = "tanl-guard", run_id: str | None = None
) -> dict[str, Any]:
    """Summarise one audit run from MLflow (the latest run of ``experiment`` unless ``run_id`` is given).

    Counts come from the verdict table (rows de-duplicated by ``record_id``), or from the ``screen/*`` metrics
    when the run has no table. A study count is the one of ``tanl-guard screen`` and the demo
    (:func:`tanl_guard.guard.count_studies`): unreadable files that belong to no study are counted apart, as
    ``orphan_files``.

    Args:
        tracking_uri: the store (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``).
        experiment: experiment to take the latest run from.
        run_id: a specific run.

    Raises:
        LookupError: no such store (a SQLite file that does not exist is not created), experiment or run.

    Returns:
        A JSON-safe dict: ``run_id``, ``run_name``, ``experiment_id``, ``status``, ``start_time``,
        ``end_time`` (ms), ``tags`` (version, encoder, corpus and config hashes), ``studies``, ``counts``
        (per verdict, studies only), ``orphan_files``, ``reject_rate`` (rejected / (accepted + rejected)), ``threshold`` (``last``, ``min``,
        ``max`` over the run), ``id_score_mean``, ``delayed_records``, ``delayed_entries``, ``table_rows``,
        ``state_snapshots`` (artifact paths), ``final_state`` (artifact path or ``None``) and ``metrics``
        (latest values).
    """
    client = make_client(existing_store(tracking_uri))
    run = _find_run(client, experiment, run_id)
    rid = run.info.run_id
    metrics = dict(run.data.metrics)
    tags = run.data.tags
    table = _read_table(client, rid)
    counts: Counter[str] = Counter()
    scores: list[float] = []
    table_rows = orphans = 0
    if table is not None:
        cols = table.get("columns") or []
        seen: set[Any] = set()
        for values in table.get("data") or []:
            row = dict(zip(cols, values, strict=False))
            if row.get("record_id") is not None:
                if row["record_id"] in seen:
                    continue
                seen.add(row["record_id"])
            table_rows += 1
            if is_orphan_file(row):  # a file of no study: not a study
                orphans += 1
                continue
            counts[str(row.get("verdict"))] += 1
            if isinstance(row.get("id_score"), (int, float)):
                scores.append(float(row["id_score"]))
    else:
        from_metrics = StudyCounts.from_metrics(metrics)
        counts.update({v: getattr(from_metrics, v) for v in VERDICTS})
        orphans = from_metrics.orphan_files
    thresholds = [m.value for m in client.get_metric_history(rid, "gate/threshold")]
    state_files = [f.path for f in client.list_artifacts(rid, "state") if not f.is_dir]
    return {
        "run_id": rid,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "tags": {k: tags[k] for k in _RUN_TAGS if k in tags},
        "studies": sum(counts.values()),
        "counts": {v: counts.get(v, 0) for v in VERDICTS},
        "orphan_files": orphans,
        "reject_rate": reject_rate(counts[ACCEPT], counts[REJECT]),
        "threshold": {
            "last": thresholds[-1] if thresholds else None,
            "min": min(thresholds) if thresholds else None,
            "max": max(thresholds) if thresholds else None,
        },
        "id_score_mean": sum(scores) / len(scores) if scores else metrics.get("gate/id_score_mean"),
        "delayed_records": int(tags.get("audit.delayed_records", 0)),
        "delayed_entries": int(tags.get("audit.delayed_entries", 0)),
        "table_rows": table_rows,
        "state_snapshots": sorted(p for p in state_files if p != FINAL_STATE_ARTIFACT),
        "final_state": FINAL_STATE_ARTIFACT if FINAL_STATE_ARTIFACT in state_files else None,
        "metrics": metrics,
    }


def format_audit_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of an :func:`audit_summary` result.

    Args:
        summary: the dict returned by :func:`audit_summary`.
    """
    counts = summary.get("counts", {})
    thr = summary.get("threshold", {})

    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [
        f"run {summary.get('run_id')} ({summary.get('run_name') or 'unnamed'}): {summary.get('status')}",
        f"studies screened: {summary.get('studies', 0)}  accepted {counts.get('accept', 0)}  "
        f"rejected {counts.get('reject', 0)}  unreadable {counts.get('unreadable', 0)}  "
        f"(unreadable files outside any study: {summary.get('orphan_files', 0)})",
        f"reject rate: {summary.get('reject_rate', 0.0):.2%}  mean id_score: {num(summary.get('id_score_mean'))}",
        f"threshold: last {num(thr.get('last'))}  min {num(thr.get('min'))}  max {num(thr.get('max'))}",
        f"delayed records: {summary.get('delayed_records', 0)}  state snapshots: "
        f"{len(summary.get('state_snapshots', []))}  final state: {summary.get('final_state') or '-'}",
    ]
    for key, value in sorted(summary.get("tags", {}).items()):
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def download_state(
    run_id: str,
    tracking_uri: str | None = None,
    dst_dir: str | Path | None = None,
    journal_dir: str | Path | None = None,
) -> Path:
    """Fetch a run's saved state (:data:`FINAL_STATE_ARTIFACT`, ``state/final.pt``) for ``screen --resume``.

    When MLflow does not have it (down, or the upload is still pending), the copy kept in the local journal
    is used instead. Nothing is created when the store does not exist.

    Args:
        run_id: the run.
        tracking_uri: the store (default as in :func:`audit_summary`).
        dst_dir: where to put the file (default: a new temporary folder).
        journal_dir: the journal folder to fall back on (default: next to the store).

    Returns:
        Path of the local file.

    Raises:
        FileNotFoundError: when neither MLflow nor the journal has the saved state of the run.
        LookupError: when the store does not exist.
    """
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    folder = Path(journal_dir) if journal_dir is not None else default_journal_dir(uri)
    if db is not None and not db.is_file() and not folder.is_dir():
        existing_store(uri)  # raises: nothing to read, and nothing is created
    error: Exception | None = None
    dst = Path(dst_dir) if dst_dir is not None else None
    if db is None or db.is_file():
        try:
            client = make_client(uri)
            folder_name = FINAL_STATE_ARTIFACT.rsplit("/", 1)[0]
            if any(f.path == FINAL_STATE_ARTIFACT for f in client.list_artifacts(run_id, folder_name)):
                dst = dst or Path(tempfile.mkdtemp(prefix="tanl_guard_state_"))
                dst.mkdir(parents=True, exist_ok=True)
                return Path(client.download_artifacts(run_id, FINAL_STATE_ARTIFACT, str(dst)))
        except Exception as exc:  # store unreachable or run unknown there: try the journal
            error = exc
    folder_name, _, name = FINAL_STATE_ARTIFACT.rpartition("/")
    for journal in reversed(Journal.scan(folder)):
        if journal.load_marker().run_id != run_id:
            continue
        for entry in reversed(journal.read()):
            if entry.get("kind") == "artifact" and entry.get("artifact_path") == folder_name:
                source = journal.files_dir / entry["file"]
                if source.name == name and source.exists():
                    dst = dst or Path(tempfile.mkdtemp(prefix="tanl_guard_state_"))
                    dst.mkdir(parents=True, exist_ok=True)
                    target = dst / name
                    shutil.copyfile(source, target)
                    return target
    detail = f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})" if error else ""
    raise FileNotFoundError(f"run {run_id} has no saved state ({FINAL_STATE_ARTIFACT}){detail}")
