# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Delivery of journal entries to MLflow through ``MlflowClient`` with explicit run ids, retried with back-off."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanl_guard._offline import disable_telemetry
from tanl_guard._optional import optional_import

from .journal import DeliveryMarker, Journal
from .params import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, batched
from .records import merge_verdict_tables, verdict_row
from .snapshot import snapshot_to_json, state_artifact_name

__all__ = [
    "DeliveryResult",
    "TABLE_ARTIFACT",
    "RUN_KEY_TAG",
    "deliver",
    "get_or_create_experiment",
    "make_client",
]

logger = logging.getLogger(__name__)

TABLE_ARTIFACT = "audit/verdicts.json"
RUN_KEY_TAG = "tanl_guard.run_key"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what log_table sets; load_table finds runs by it
# MLflow 3's UI opens an experiment in its GenAI view unless it knows it is a model-development one.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MAX_LINES_PER_PASS = 500
TABLE_CACHE = "verdicts_table_cache.json"


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of delivering one journal.

    Args:
        journal: path of the journal file.
        run_key: its local run key.
        run_id: the MLflow run id (``None`` while the run could not be created).
        delivered_entries: entries delivered by this call.
        delivered_records: verdict records among them.
        pending_entries: entries still pending afterwards.
        pending_records: verdict records still pending afterwards.
        complete: the run has been closed in MLflow and nothing is pending.
        error: the last error when delivery stopped early, else ``None``.
    """

    journal: str
    run_key: str
    run_id: str | None
    delivered_entries: int
    delivered_records: int
    pending_entries: int
    pending_records: int
    complete: bool
    error: str | None = None


def make_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``.

    Args:
        tracking_uri: a resolved tracking URI.
    """
    disable_telemetry()
    # MLflow's download bars would land in the middle of our own output (and its JSON).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow = optional_import("mlflow", "mlflow", "the MLflow audit trail")
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _is_permanent(exc: BaseException) -> bool:
    # MLflow refuses the request itself (bad value, changed param): retrying cannot help.
    return getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"


def get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Id of experiment ``name``, creating it (with ``artifact_location`` when given) if missing.

    An experiment without an ``mlflow.experimentKind`` tag gets ``custom_model_development``, so that the MLflow 3
    UI opens it in its "Model training" view (runs, metrics, artifacts) rather than the GenAI one.

    Args:
        client: an ``MlflowClient``.
        name: experiment name.
        artifact_location: artifact root for a new experiment, or ``None`` for the store's default.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=artifact_location,
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            return exp_id
        except Exception:  # lost a creation race with another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _n_records(entry: dict[str, Any]) -> int:
    return len(entry.get("records") or []) if entry.get("kind") == "verdicts" else 0


def _ensure_run(client: Any, journal: Journal, header: dict[str, Any], marker: DeliveryMarker) -> str:
    if marker.run_id:
        return marker.run_id
    exp_id = get_or_create_experiment(client, header["experiment"], header.get("artifact_location"))
    # A crash between create_run and the marker update must not create a second run: look for the key first.
    found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{journal.key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(
            exp_id, start_time=header.get("t"), tags={RUN_KEY_TAG: journal.key}, run_name=header.get("run_name")
        )
        run_id = run.info.run_id
    marker.run_id = run_id
    journal.save_marker(marker)
    return run_id


def _log_batch(client: Any, run_id: str, kind: str, items: list[Any]) -> int:
    """Log params/tags/metrics in MLflow-sized batches; returns how many items MLflow refused."""
    mlflow = optional_import("mlflow", "mlflow")
    size = MAX_METRICS_PER_BATCH if kind == "metrics" else MAX_PARAMS_PER_BATCH
    refused = 0
    for chunk in batched(items, size):
        try:
            client.log_batch(run_id, **{kind: chunk})
        except mlflow.exceptions.MlflowException as exc:
            if not _is_permanent(exc):
                raise
            # Salvage what MLflow accepts; drop (and report) only the refused items.
            for item in chunk:
                try:
                    client.log_batch(run_id, **{kind: [item]})
                except mlflow.exceptions.MlflowException as exc_item:
                    if not _is_permanent(exc_item):
                        raise
                    refused += 1
                    logger.warning("MLflow refused %s %r of run %s: %s", kind[:-1], item.key, run_id, exc_item)
    return refused


def _upload_table(
    client: Any, run_id: str, journal: Journal, lines: list[dict[str, Any]], marker: DeliveryMarker, tmp: Path
) -> None:
    rows = [
        verdict_row(record, f"{journal.key}:{idx}:{i}", entry.get("t"))
        for idx, entry in enumerate(lines)
        if entry.get("kind") == "verdicts"
        for i, record in enumerate(entry.get("records") or [])
    ]
    folder = posixpath.dirname(TABLE_ARTIFACT)
    remote = [f for f in client.list_artifacts(run_id, folder) if f.path == TABLE_ARTIFACT]
    cache = journal.files_dir / TABLE_CACHE
    existing = None
    if remote:
        if cache.exists() and remote[0].file_size == marker.table_size:
            # The run still holds the table this journal uploaded last: merge with the local copy, skip a download.
            existing = json.loads(cache.read_text(encoding="utf-8"))
        else:  # first upload into a resumed run, or another journal of the same run wrote it since
            local = client.download_artifacts(run_id, TABLE_ARTIFACT, str(tmp / "old"))
            existing = json.loads(Path(local).read_text(encoding="utf-8"))
    table = merge_verdict_tables(existing, rows)
    out = tmp / "new" / posixpath.basename(TABLE_ARTIFACT)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(table, allow_nan=False)
    out.write_text(text, encoding="utf-8")
    client.log_artifact(run_id, str(out), folder)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(text, encoding="utf-8")
    marker.table_size = len(text.encode("utf-8"))
    # Register the table like log_table does, once: the UI's table view and mlflow.load_table rely on this tag.
    tags = client.get_run(run_id).data.tags
    logged = json.loads(tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
    entry = {"path": TABLE_ARTIFACT, "type": "table"}
    if entry not in logged:
        client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps(logged + [entry]))


def _dataset_input(entities: Any, entry: dict[str, Any]) -> Any:
    """An MLflow ``DatasetInput`` from a journalled ``dataset`` entry (name, digest, counts; never a path)."""
    dataset = entities.Dataset(
        name=entry["name"],
        digest=entry["digest"],
        source_type="tanl-guard",
        source=json.dumps({"kind": entry.get("source_kind", entry["name"])}),
        profile=json.dumps(entry.get("profile") or {}, sort_keys=True),
    )
    tags = [entities.InputTag("mlflow.data.context", entry.get("context") or "screening")]
    return entities.DatasetInput(dataset, tags)


def _terminate(client: Any, run_id: str, status: str, end_time: int | None) -> None:
    """Close a run with its journalled end time.

    ``MlflowClient.set_terminated`` also writes "View run ..." links to stdout for tracking servers, which
    would corrupt a CLI whose stdout is JSON Lines, so the store is called directly when it is reachable.
    """
    mlflow = optional_import("mlflow", "mlflow")
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "update_run_info"):
        store.update_run_info(run_id, mlflow.entities.RunStatus.from_string(status), end_time, None)
    else:  # pragma: no cover - a future MLflow without these internals
        client.set_terminated(run_id, status=status, end_time=end_time)


def _deliver_pass(
    client: Any, journal: Journal, lines: list[dict[str, Any]], marker: DeliveryMarker, backfill: bool
) -> tuple[int, int]:
    """Deliver lines ``[marker.offset, marker.offset + MAX_LINES_PER_PASS)``; returns (entries, records)."""
    mlflow = optional_import("mlflow", "mlflow")
    entities = mlflow.entities
    header = lines[0]
    run_id = _ensure_run(client, journal, header, marker)
    if header.get("resume_run_id") and not marker.resumed:
        client.update_run(run_id, status="RUNNING")
        marker.resumed = True
        journal.save_marker(marker)

    start, stop = marker.offset, min(len(lines), marker.offset + MAX_LINES_PER_PASS)
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    metrics: list[Any] = []
    has_verdicts = False
    uploads: list[dict[str, Any]] = []
    datasets: list[Any] = []
    end_entry: dict[str, Any] | None = None
    for entry in lines[start:stop]:
        kind = entry.get("kind")
        if kind == "params":
            for k, v in entry["params"].items():
                params.setdefault(k, v)
        elif kind == "tags":
            tags.update(entry["tags"])
        elif kind == "metrics":
            metrics.extend(
                entities.Metric(k, float(v), int(entry["t"]), int(entry.get("step") or 0))
                for k, v in entry["metrics"].items()
            )
        elif kind == "verdicts":
            has_verdicts = True
        elif kind in ("state", "artifact"):
            uploads.append(entry)
        elif kind == "dataset":
            datasets.append(_dataset_input(entities, entry))
        elif kind == "end":
            end_entry = entry
        elif kind != "start":
            logger.warning("skipping unreadable entry in journal %s", journal.path)

    refused = 0
    refused += _log_batch(client, run_id, "params", [entities.Param(k, v) for k, v in params.items()])
    refused += _log_batch(client, run_id, "tags", [entities.RunTag(k, v) for k, v in tags.items()])
    refused += _log_batch(client, run_id, "metrics", metrics)
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    with tempfile.TemporaryDirectory(prefix="tanl_guard_audit_") as tmpdir:
        tmp = Path(tmpdir)
        if has_verdicts:
            _upload_table(client, run_id, journal, lines[:stop], marker, tmp)
        for i, entry in enumerate(uploads):
            if entry["kind"] == "state":
                path = tmp / "state" / str(i) / state_artifact_name(entry.get("step") or 0)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(snapshot_to_json(entry["snapshot"], entry.get("step")), encoding="utf-8")
                client.log_artifact(run_id, str(path), "state")
            else:
                source = journal.files_dir / entry["file"]
                if not source.exists():
                    refused += 1
                    logger.warning("journalled file %s is missing; it cannot be uploaded", source)
                    continue
                client.log_artifact(run_id, str(source), entry.get("artifact_path"))

    delivered = lines[start:stop]
    late = delivered if backfill else lines[start : min(stop, max(start, marker.failed_offset))]
    records = sum(_n_records(e) for e in delivered)
    if late:
        marker.delayed_entries += len(late)
        marker.delayed_records += sum(_n_records(e) for e in late)
        late_tags = {
            "audit.delayed_records": str(marker.delayed_records),
            "audit.delayed_entries": str(marker.delayed_entries),
        }
        if backfill:
            late_tags["audit.backfilled"] = "true"
        client.log_batch(run_id, tags=[entities.RunTag(k, v) for k, v in late_tags.items()])
    if refused:
        marker.failed_entries += refused
        client.set_tag(run_id, "audit.refused_entries", str(marker.failed_entries))
    if end_entry is not None:
        _terminate(client, run_id, end_entry.get("status", "FINISHED"), end_entry.get("t"))
        marker.complete = True
    marker.offset = stop
    journal.save_marker(marker)
    if marker.complete:
        shutil.rmtree(journal.files_dir, ignore_errors=True)  # uploaded; the .jsonl stays as the local record
    return len(delivered), records


def deliver(
    journal: Journal,
    client: Any,
    *,
    max_retries: int = 2,
    backoff_s: float = 0.5,
    backfill: bool = False,
    close_abandoned: bool = False,
    on_progress: Callable[[DeliveryMarker], None] | None = None,
) -> DeliveryResult:
    """Deliver every pending entry of ``journal``, retrying failed attempts with exponential back-off.

    Whatever cannot be delivered stays pending (the marker only advances over delivered lines) and the
    lines pending at a failure are remembered, so that they are counted as delayed when they do arrive.

    Args:
        journal: the journal to deliver.
        client: an ``MlflowClient`` for the journal's store.
        max_retries: retries after a failed attempt.
        backoff_s: sleep before the first retry, doubled at each further retry.
        backfill: the entries are delivered by a later run (all count as delayed).
        close_abandoned: when the journal has no ``end`` entry (its writer died), close the run as KILLED once
            everything else is delivered. Only for journals whose lock could be taken.
        on_progress: called with the marker after each delivered pass.
    """
    delivered = records = 0
    error: str | None = None
    lines: list[dict[str, Any]] = []
    marker = journal.load_marker()
    for attempt in range(max_retries + 1):
        try:
            while True:
                lines = journal.read()
                marker = journal.load_marker()
                if not lines or lines[0].get("kind") != "start":
                    raise ValueError(f"journal {journal.path} has no start header")
                if marker.offset >= len(lines):
                    break
                n, r = _deliver_pass(client, journal, lines, marker, backfill)
                delivered, records = delivered + n, records + r
                if on_progress is not None:
                    on_progress(marker)
            if close_abandoned and not marker.complete:
                run_id = _ensure_run(client, journal, lines[0], marker)
                _terminate(client, run_id, "KILLED", lines[-1].get("t"))
                marker.complete = True
                journal.save_marker(marker)
                shutil.rmtree(journal.files_dir, ignore_errors=True)
                if on_progress is not None:
                    on_progress(marker)
            error = None
            break
        except Exception as exc:  # any failure: keep the entries pending and try again later
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ValueError) and "start header" in str(exc):
                break
            marker = journal.load_marker()
            if len(lines) > marker.failed_offset:
                marker.failed_offset = len(lines)
                journal.save_marker(marker)
            if attempt < max_retries:
                time.sleep(backoff_s * (2**attempt))
    if error:
        logger.warning("MLflow delivery of %s stopped, entries stay pending: %s", journal.path.name, error)
    pending = lines[marker.offset :]
    return DeliveryResult(
        journal=str(journal.path),
        run_key=journal.key,
        run_id=marker.run_id,
        delivered_entries=delivered,
        delivered_records=records,
        pending_entries=len(pending),
        pending_records=sum(_n_records(e) for e in pending),
        complete=marker.complete and not pending,
        error=error,
    )
