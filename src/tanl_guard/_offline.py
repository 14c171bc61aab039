# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""No outbound connections: the usage-telemetry switches of the libraries tanl-guard loads, set off.

MLflow's client sends usage telemetry over HTTPS unless told not to, from a background thread, even when it only
writes to a local SQLite store. Every entry point (the CLI, :class:`~tanl_guard.integrations.mlflow.AuditLogger`,
the MLflow UI launcher) calls :func:`disable_telemetry` before loading those libraries; the only connections a
screen opens are to the tracking URI it was given.
"""

from __future__ import annotations

import os

__all__ = ["TELEMETRY_OFF", "disable_telemetry"]

# Read by the libraries when they would send (MLflow checks MLFLOW_DISABLE_TELEMETRY at every event).
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow >= 3.2 client and server telemetry
    "DO_NOT_TRACK": "true",  # the cross-tool convention, honoured by MLflow and others
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub (transformers, open_clip)
}


def disable_telemetry() -> None:
    """Turn the libraries' usage telemetry off in this process and the processes it starts (idempotent)."""
    os.environ.update(TELEMETRY_OFF)
