# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""AuditLogger through a real ``mlflow server`` on 127.0.0.1 (the REST path), including server outages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tanl_guard.integrations.mlflow import (
    AuditConfig,
    AuditLogger,
    audit_summary,
    download_state,
    format_audit_summary,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning",
    "ignore::sqlalchemy.exc.SADeprecationWarning",
)

mlflow = pytest.importorskip("mlflow")


def test_session_server_is_up_on_loopback(mlflow_server) -> None:
    import urllib.request

    assert mlflow_server["uri"].startswith("http://127.0.0.1:")
    with urllib.request.urlopen(mlflow_server["uri"] + "/health", timeout=5) as resp:
        assert resp.status == 200
    print(f"mlflow server start-up: {mlflow_server['startup_s']:.1f} s")
    assert mlflow_server["startup_s"] < 60


def test_run_through_server(tmp_path, capfd, mlflow_server, make_records, load_table) -> None:
    uri = mlflow_server["uri"]
    cfg = AuditConfig(tracking_uri=uri, journal_dir=tmp_path / "journal", run_name="rest", log_thumbnails=True)
    with AuditLogger(cfg) as audit:
        run_id = audit.start({"tanl": {"alpha": 0.5}}, {"encoder.id": "fake-clip"})
        assert run_id is not None
        audit.log_verdicts(make_records(5), step=5)
        audit.log_state({"selected_negatives": ["a", "b"], "threshold": 0.4}, step=5)
        assert audit.log_thumbnail(np.linspace(0, 1, 64).reshape(8, 8), "st0001")
        (tmp_path / "final.pt").write_bytes(b"state over REST")
        audit.log_artifact_file(tmp_path / "final.pt", "state")
    assert audit.pending["entries"] == 0
    assert capfd.readouterr().out == ""  # stdout stays free for the CLI's JSON Lines

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["tanl.alpha"] == "0.5"
    assert run.data.tags["encoder.id"] == "fake-clip"
    assert [m.step for m in client.get_metric_history(run_id, "screen/accepted")] == [5]
    df = load_table(uri, run_id)
    assert len(df) == 5 and set(df["verdict"]) == {"accept", "reject", "unreadable"}
    assert [f.path for f in client.list_artifacts(run_id, "audit/rejected")] == ["audit/rejected/st0001.png"]
    summary = audit_summary(uri, run_id=run_id)
    assert summary["counts"] == {"accept": 2, "reject": 2, "unreadable": 1}
    assert "state/step_000005.json" in summary["state_snapshots"]
    assert "run " + run_id in format_audit_summary(summary)
    assert download_state(run_id, uri, dst_dir=tmp_path / "dl").read_bytes() == b"state over REST"
    snap = Path(client.download_artifacts(run_id, "state/step_000005.json", str(tmp_path / "dl2")))
    assert json.loads(snap.read_text())["selected_negatives"] == ["a", "b"]


def test_server_down_then_backfill_exactly_once(tmp_path, mlflow_server, outage_proxy, make_records) -> None:
    uri = f"http://127.0.0.1:{outage_proxy.port}"  # nothing listens here until the proxy starts
    cfg = AuditConfig(
        tracking_uri=uri,
        journal_dir=tmp_path / "journal",
        batch_size=2,
        flush_timeout_s=2,
        start_timeout_s=2,
        max_retries=1,
        retry_backoff_s=0.05,
    )
    # 1. MLflow is down from the start: everything goes to the journal, nothing raises, nothing hangs.
    t0 = time.monotonic()
    down = AuditLogger(cfg)
    assert down.start({"a": 1}, {"encoder.id": "fake"}) is None
    down.log_verdicts(make_records(3), step=3)
    down.log_verdicts(make_records(3, start=3), step=6)
    down.log_state({"selected_negatives": ["x", "y"]}, step=6)
    assert down.pending["records"] == 6 and down.pending["start"] == 1
    assert down.finish() is False
    assert time.monotonic() - t0 < 30
    assert down.last_error is not None

    # 2. MLflow is back; the next run back-fills: the run is created once, with every record exactly once.
    outage_proxy.start()
    results = AuditLogger(cfg).backfill(timeout_s=60)
    assert len(results) == 1 and results[0].complete and results[0].delivered_records == 6
    run_id = results[0].run_id
    assert AuditLogger(cfg).backfill(timeout_s=60) == []
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["audit.delayed_records"] == "6"
    assert run.data.tags["tanl_guard.run_key"] == down.run_key
    summary = audit_summary(uri, run_id=run_id)
    assert summary["table_rows"] == 6 and summary["counts"]["accept"] == 2
    assert [m.step for m in client.get_metric_history(run_id, "screen/accepted")] == [3, 6]

    # 3. MLflow goes down in the middle of a run: later entries reach the original run id.
    mid = AuditLogger(cfg)
    mid_run = mid.start({"a": 2})
    assert mid_run is not None
    mid.log_verdicts(make_records(2), step=2)
    assert mid.flush() is True
    outage_proxy.stop()
    mid.log_verdicts(make_records(3, start=2), step=5)
    assert mid.pending["records"] == 3
    assert mid.finish() is False
    real = mlflow.MlflowClient(mlflow_server["uri"])  # behind the proxy, the server itself is up
    assert real.get_run(mid_run).info.status == "RUNNING"

    outage_proxy.start()
    results = AuditLogger(cfg).backfill(timeout_s=60)
    assert [(r.run_id, r.delivered_records, r.complete) for r in results] == [(mid_run, 3, True)]
    summary = audit_summary(uri, run_id=mid_run)
    assert summary["status"] == "FINISHED" and summary["table_rows"] == 5 and summary["delayed_records"] == 3


def test_real_server_restart_keeps_the_run(tmp_path, mlflow_server, make_records) -> None:
    """The same outage with the real ``mlflow server`` stopped (SIGTERM) and started again on the same store."""
    uri = mlflow_server["uri"]
    cfg = AuditConfig(tracking_uri=uri, journal_dir=tmp_path / "journal", flush_timeout_s=2, max_retries=0)
    audit = AuditLogger(cfg)
    run_id = audit.start({"a": 1})
    audit.log_verdicts(make_records(2), step=2)
    assert audit.flush() is True
    mlflow_server.stop()
    try:
        audit.log_verdicts(make_records(2, start=2), step=4)
        assert audit.finish() is False and audit.pending["records"] == 2
    finally:
        mlflow_server.start()
    results = AuditLogger(cfg).backfill(timeout_s=60)
    assert [(r.run_id, r.delivered_records) for r in results] == [(run_id, 2)]
    assert audit_summary(uri, run_id=run_id)["table_rows"] == 4
