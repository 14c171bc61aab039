# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""MLflow audit trail: ``AuditLogger`` (journal first, batched, retried, back-filled), the audit summary reader
and the MLflow UI launcher. MLflow itself is imported lazily, only when something is sent or read."""

from __future__ import annotations

from ...privacy import check_hashed_key, check_no_phi
from .backfill import backfill_journals
from .config import TRACKING_SCHEMES, AuditConfig, check_tracking_uri, existing_store, resolve_tracking_uri
from .delivery import TABLE_ARTIFACT, DeliveryResult
from .journal import DeliveryMarker, Journal
from .logger import AuditLogger
from .params import config_sha256, flatten_params, package_version
from .records import VERDICT_COLUMNS, merge_verdict_tables, normalise_verdict_record, verdict_row
from .snapshot import (
    FINAL_STATE_ARTIFACT,
    selection_churn,
    snapshot_to_json,
    state_artifact_name,
    state_metrics,
    to_json_safe,
)
from .summary import audit_summary, download_state, format_audit_summary
from .thumbnails import to_uint8_image
from .ui import run_ui, serve_ui, stop_ui, wait_for_health

__all__ = [
    "FINAL_STATE_ARTIFACT",
    "TRACKING_SCHEMES",
    "AuditConfig",
    "AuditLogger",
    "DeliveryMarker",
    "DeliveryResult",
    "Journal",
    "TABLE_ARTIFACT",
    "VERDICT_COLUMNS",
    "audit_summary",
    "backfill_journals",
    "check_hashed_key",
    "check_no_phi",
    "check_tracking_uri",
    "config_sha256",
    "download_state",
    "existing_store",
    "flatten_params",
    "format_audit_summary",
    "merge_verdict_tables",
    "normalise_verdict_record",
    "package_version",
    "resolve_tracking_uri",
    "run_ui",
    "selection_churn",
    "serve_ui",
    "snapshot_to_json",
    "state_artifact_name",
    "state_metrics",
    "stop_ui",
    "to_json_safe",
    "to_uint8_image",
    "verdict_row",
    "wait_for_health",
]
