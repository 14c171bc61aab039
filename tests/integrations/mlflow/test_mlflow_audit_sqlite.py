# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""AuditLogger against a real SQLite store in tmp_path: layout, outage, crash, resume, PHI guard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tanl_guard.integrations.mlflow import (
    AuditConfig,
    AuditLogger,
    Journal,
    audit_summary,
    config_sha256,
    download_state,
    format_audit_summary,
    package_version,
    selection_churn,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning",
    "ignore::sqlalchemy.exc.SADeprecationWarning",
)

mlflow = pytest.importorskip("mlflow")


def _artifact_text(client, run_id: str, path: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp))).read_text(encoding="utf-8")


def test_default_sqlite_store_layout(tmp_path, monkeypatch, sqlite_uri, make_records, load_table) -> None:
    monkeypatch.chdir(tmp_path)  # the default store is sqlite:///<cwd>/mlflow.db with artifacts in <cwd>/mlartifacts
    params = {"tanl": {"alpha": 0.5, "labels": ["a", "b"]}, "long": "x" * 7000, **{f"p{i:03d}": i for i in range(150)}}
    tags = {"encoder.id": "fake-clip", "encoder.weights_sha256": "ab" * 32, "corpus.sha256": "cd" * 32}
    records = make_records(10)
    with AuditLogger(AuditConfig(run_name="layout", batch_size=4)) as audit:
        run_id = audit.start(params, tags)
        assert run_id is not None
        audit.log_verdicts(records[:4], step=4)
        audit.log_state({"selected_negatives": ["a", "b", "c"], "threshold": 0.4, "queue_sizes": {"pos": 4}}, step=4)
        audit.log_verdicts(records[4:], step=10)
        audit.log_state({"selected_negatives": ["b", "c", "d"], "threshold": 0.4, "neg_queue": 6}, step=10)
        audit.log_metrics({"screen/seconds": 1.5}, step=10)
        final = tmp_path / "final.pt"
        final.write_bytes(b"detector state")
        audit.log_artifact_file(final, "state")
        assert not audit.log_thumbnail(np.zeros((8, 8)), "st0001")  # opt-in only
    assert audit.pending["entries"] == 0
    journal = Journal(audit.journal_path)
    assert journal.load_marker().complete and journal.path.exists()
    assert not journal.files_dir.exists() and not journal.lock_path.exists()  # tidied once delivered
    assert not (tmp_path / "mlruns").exists()
    assert (tmp_path / "mlartifacts").is_dir() and (tmp_path / "tanl_guard_journal").is_dir()

    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "layout"
    assert run.info.artifact_uri.startswith((tmp_path.resolve() / "mlartifacts").as_uri())
    p = run.data.params
    assert p["tanl.alpha"] == "0.5" and json.loads(p["tanl.labels"]) == ["a", "b"]
    assert len(p["long"]) == 6000 and p["p149"] == "149" and len(p) == 153
    t = run.data.tags
    assert t["tanl_guard.version"] == package_version()
    assert t["config.sha256"] == config_sha256(params)
    assert t["encoder.id"] == "fake-clip" and t["corpus.sha256"] == "cd" * 32
    hist = {m.step: m.value for m in client.get_metric_history(run_id, "screen/rejected")}
    assert hist == {4: 1.0, 10: 3.0}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "screen/unreadable")] == [(4, 1.0), (10, 3.0)]
    rate = client.get_metric_history(run_id, "screen/reject_rate")[-1]
    assert rate.step == 10 and rate.value == pytest.approx(3 / 7)
    churn = client.get_metric_history(run_id, "state/negatives_churn")
    assert [(m.step, m.value) for m in churn] == [(10, selection_churn("abc", "bcd"))]
    assert client.get_metric_history(run_id, "gate/threshold")[-1].value == pytest.approx(0.4)
    assert client.get_metric_history(run_id, "state/pos_queue")[0].step == 4
    assert client.get_metric_history(run_id, "state/neg_queue")[0].step == 10

    df = load_table(uri, run_id)
    assert len(df) == 10 and df["record_id"].is_unique
    assert list(df["study"]) == [r["study"] for r in records]
    assert list(df["step"]) == [4] * 4 + [10] * 6
    assert json.loads(df["series"][0])[0]["series"] == "se0000a" and set(df["n_series"]) == {1}

    tmp = tmp_path / "dl"
    snap = json.loads(_artifact_text(client, run_id, "state/step_000004.json", tmp))
    assert snap["selected_negatives"] == ["a", "b", "c"] and snap["step"] == 4
    assert _artifact_text(client, run_id, "corpus/selected_negatives.txt", tmp).split() == ["b", "c", "d"]
    assert json.loads(_artifact_text(client, run_id, "config/run_params.json", tmp))["tanl"]["alpha"] == 0.5
    assert download_state(run_id, dst_dir=tmp_path / "state").read_bytes() == b"detector state"

    summary = audit_summary(run_id=run_id)
    assert summary["counts"] == {"accept": 4, "reject": 3, "unreadable": 3}
    assert summary["reject_rate"] == pytest.approx(3 / 7) and summary["delayed_records"] == 0
    assert summary["final_state"] == "state/final.pt"
    assert summary["state_snapshots"] == ["state/step_000004.json", "state/step_000010.json"]
    assert audit_summary()["run_id"] == run_id  # latest run of the default experiment
    text = format_audit_summary(summary)
    assert "rejected 3" in text and "encoder.id: fake-clip" in text


def test_phi_is_refused_before_anything_is_journalled(sqlite_uri, make_records) -> None:
    cfg = AuditConfig(tracking_uri=sqlite_uri, backfill_on_start=False)
    with pytest.raises(ValueError, match="PatientName"):
        AuditLogger(cfg).start(params={"dicom": {"PatientName": "Doe^John"}})
    audit = AuditLogger(cfg)
    audit.start({"a": 1})
    before = audit.journal_path.read_text()
    bad = make_records(2)
    bad[1]["PatientID"] = "12345"
    with pytest.raises(ValueError, match="PatientID"):
        audit.log_verdicts(bad)
    bad = make_records(1)
    bad[0]["series"][0]["SOPInstanceUID"] = "1.2.3.4.5"
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        audit.log_verdicts(bad)
    with pytest.raises(ValueError, match="UID"):
        audit.log_verdicts([{"study": "1.2.840.10008.5.1.4", "verdict": "accept"}])
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        audit.log_state({"queue": [{"StudyInstanceUID": "1.2.3.4"}]})
    assert audit.journal_path.read_text() == before
    audit.finish()


def test_outage_keeps_entries_and_backfill_delivers_to_original_run(
    tmp_path, sqlite_uri, monkeypatch, make_records
) -> None:
    uri = sqlite_uri
    cfg = AuditConfig(tracking_uri=uri, batch_size=2, flush_timeout_s=2, max_retries=1, retry_backoff_s=0.01)
    audit = AuditLogger(cfg)
    run_id = audit.start({"a": 1}, {"encoder.id": "fake"})
    assert run_id is not None
    audit.log_verdicts(make_records(2), step=2)
    assert audit.pending["entries"] == 0

    def down(*args, **kwargs):
        raise ConnectionError("simulated outage")

    with monkeypatch.context() as m:
        m.setattr(mlflow.MlflowClient, "log_batch", down)
        m.setattr(mlflow.MlflowClient, "log_artifact", down)
        t0 = time.monotonic()
        audit.log_verdicts(make_records(3, start=2), step=5)  # over batch_size: flushes, fails, returns
        audit.log_state({"selected_negatives": ["x"]}, step=5)
        assert audit.pending["records"] == 3 and audit.pending["state"] == 1
        assert audit.finish() is False
        assert time.monotonic() - t0 < 10
        assert "simulated outage" in audit.last_error
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"

    results = AuditLogger(cfg).backfill()
    assert [(r.run_id, r.delivered_records, r.pending_entries, r.complete) for r in results] == [(run_id, 3, 0, True)]
    assert AuditLogger(cfg).backfill() == []  # complete journals are skipped
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["audit.delayed_records"] == "3" and run.data.tags["audit.backfilled"] == "true"
    summary = audit_summary(uri, run_id=run_id)
    assert summary["studies"] == summary["table_rows"] == 5 and summary["delayed_records"] == 3
    assert [m.step for m in client.get_metric_history(run_id, "screen/accepted")] == [2, 5]
    assert "state/step_000005.json" in summary["state_snapshots"]


def test_crashed_writer_is_backfilled_and_closed_as_killed(tmp_path, sqlite_uri, make_records) -> None:
    uri = sqlite_uri
    script = textwrap.dedent(
        f"""
        import os, json, sys
        from tanl_guard.integrations.mlflow import AuditConfig, AuditLogger
        audit = AuditLogger(AuditConfig(tracking_uri={uri!r}, batch_size=1000))
        print(audit.start({{"a": 1}}), flush=True)
        audit.log_verdicts(json.loads(sys.stdin.read()), step=4)
        os._exit(3)  # dies without finish(): nothing after start was sent
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(make_records(4)), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    results = AuditLogger(AuditConfig(tracking_uri=uri)).backfill(timeout_s=60)
    assert [(r.run_id, r.delivered_records, r.complete) for r in results] == [(run_id, 4, True)]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["audit.delayed_records"] == "4"
    assert audit_summary(uri, run_id=run_id)["counts"] == {"accept": 2, "reject": 1, "unreadable": 1}


def test_resume_appends_to_the_same_run(tmp_path, sqlite_uri, make_records) -> None:
    uri = sqlite_uri
    cfg = AuditConfig(tracking_uri=uri)
    with AuditLogger(cfg) as first:
        run_id = first.start({"a": 1})
        first.log_verdicts(make_records(3), step=3)
        state = tmp_path / "final.pt"
        state.write_bytes(b"v1")
        first.log_artifact_file(state, "state")
    path = download_state(run_id, uri, dst_dir=tmp_path / "resume")
    assert path.read_bytes() == b"v1"
    with AuditLogger(cfg) as second:
        assert second.start({"a": 1}, resume_run_id=run_id) == run_id
        second.log_verdicts(make_records(3, start=3), step=6)
    client = mlflow.MlflowClient(uri)
    summary = audit_summary(uri, run_id=run_id)
    assert summary["status"] == "FINISHED" and summary["table_rows"] == 6
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "screen/accepted")] == [(3, 1.0), (6, 2.0)]


def test_a_long_run_keeps_only_what_is_not_delivered(sqlite_uri, make_records) -> None:
    """A listener's run lasts weeks: the logger's bookkeeping must not grow with the lines MLflow already has."""
    with AuditLogger(AuditConfig(tracking_uri=sqlite_uri)) as audit:
        audit.start({"a": 1})
        for batch in range(20):
            audit.log_verdicts(make_records(2, start=2 * batch), step=2 * batch + 2)
            assert audit.flush(timeout_s=60)
            assert audit.pending["entries"] == 0
        assert len(audit._lines) <= 2, "delivered journal lines are forgotten"


def test_auto_metrics_off_leaves_metrics_to_the_caller(sqlite_uri, make_records) -> None:
    with AuditLogger(AuditConfig(tracking_uri=sqlite_uri, auto_metrics=False)) as audit:
        run_id = audit.start({"a": 1})
        audit.log_verdicts(make_records(3), step=3)
        audit.log_state({"selected_negatives": ["a"], "pos_queue": 2}, step=3)
        audit.log_metrics({"screen/accepted": 1}, step=3)
    metrics = mlflow.MlflowClient(sqlite_uri).get_run(run_id).data.metrics
    assert metrics == {"screen/accepted": 1.0}
    assert audit_summary(sqlite_uri, run_id=run_id)["table_rows"] == 3
