# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""MLflow audit trail: ``AuditLogger`` (journal first, batched, retried, back-filled), the audit summary reader
and the MLflow UI launcher. MLflow itself is imported lazily, only when something is sent or read."""

from __future__ import annotations

from .config import AuditConfig, check_tracking_uri, resolve_tracking_uri
from .delivery import TABLE_ARTIFACT, DeliveryResult
from .journal import DeliveryMarker, Journal
from .logger import AuditLogger
from .params import config_sha256, flatten_params, package_version
from .privacy import check_hashed_key, check_no_phi
from .records import VERDICT_COLUMNS, merge_verdict_tables, normalise_verdict_record, verdict_row
from .snapshot import selection_churn, snapshot_to_json, state_artifact_name, to_json_safe
from .summary import audit_summary, download_state, format_audit_summary
from .ui import run_ui, serve_ui, stop_ui, wait_for_health

__all__ = [
    "AuditConfig",
    "AuditLogger",
    "DeliveryMarker",
    "DeliveryResult",
    "Journal",
    "TABLE_ARTIFACT",
    "VERDICT_COLUMNS",
    "audit_summary",
    "check_hashed_key",
    "check_no_phi",
    "check_tracking_uri",
    "config_sha256",
    "download_state",
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
    "stop_ui",
    "to_json_safe",
    "verdict_row",
    "wait_for_health",
]
