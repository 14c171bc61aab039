# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The audit contract on a real SQLite store: failed runs end FAILED, one saved-state artifact, state metrics once
per step, datasets by digest, and a back-fill that one undeliverable journal cannot block."""

from __future__ import annotations

import pytest

from tanl_guard.integrations.mlflow import (
    FINAL_STATE_ARTIFACT,
    AuditConfig,
    AuditLogger,
    Journal,
    audit_summary,
    download_state,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::pandas.errors.Pandas4Warning",
    "ignore::sqlalchemy.exc.SADeprecationWarning",
)

mlflow = pytest.importorskip("mlflow")


def test_work_that_raised_ends_the_run_failed_and_releases_the_journal(sqlite_uri, make_records, caplog) -> None:
    with pytest.raises(KeyError), AuditLogger(AuditConfig(tracking_uri=sqlite_uri)) as audit:
        run_id = audit.start({"a": 1})
        audit.log_verdicts(make_records(2))
        raise KeyError("/data/Doe^John/IM0001")  # an exception text may hold a path: never logged
    run = mlflow.MlflowClient(sqlite_uri).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["audit.end_reason"] == "exception: KeyError"
    assert "Doe^John" not in str(run.data.tags) and "ended FAILED (KeyError)" in caplog.text
    journal = Journal(audit.journal_path)
    assert journal.try_lock()  # no stale lock: the next back-fill or run can take it
    journal.unlock()


def test_saved_state_metrics_and_datasets(tmp_path, sqlite_uri) -> None:
    audit = AuditLogger(AuditConfig(tracking_uri=sqlite_uri))
    run_id = audit.start({"a": 1}, run_name="screen tanl surrogate test")
    snapshot = {"threshold": 0.4, "pos_queue": 3, "neg_queue": 5, "selected_negatives": ["a", "b"]}
    audit.log_state(snapshot, step=1, save_snapshot=False)  # after a gate batch: metrics only
    audit.log_state(dict(snapshot, selected_negatives=["a", "c"], threshold=0.5), step=2, save_snapshot=False)
    audit.log_state(dict(snapshot, selected_negatives=["a", "c"], threshold=0.5), step=2)  # checkpoint, same step
    state = tmp_path / "whatever_name.pt"
    state.write_bytes(b"signed state")
    audit.log_final_state(state)
    audit.log_dataset("screened folder", "ab" * 32, "screening", {"studies": 18, "files": 25})
    with pytest.raises(ValueError, match="hex"):
        audit.log_dataset("screened folder", "/data/Doe^John", "screening")
    with pytest.raises(ValueError, match="numbers"):
        audit.log_dataset("screened folder", "ab" * 32, "screening", {"patient": "Doe"})
    assert audit.finish()
    client = mlflow.MlflowClient(sqlite_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "screen tanl surrogate test"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "state/threshold")] == [(1, 0.4), (2, 0.5)]
    assert [m.value for m in client.get_metric_history(run_id, "state/negatives_churn")] == [pytest.approx(2 / 3)]
    summary = audit_summary(sqlite_uri, run_id=run_id)
    assert summary["final_state"] == FINAL_STATE_ARTIFACT and summary["state_snapshots"] == ["state/step_000002.json"]
    assert download_state(run_id, sqlite_uri, tmp_path / "dl").read_bytes() == b"signed state"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == ("ab" * 32)[:36] and dataset.tags[0].value == "screening"


def test_backfill_skips_an_undeliverable_journal_and_delivers_the_rest(tmp_path, sqlite_uri, make_records) -> None:
    journal_dir = tmp_path / "tanl_guard_journal"
    header = {"experiment": "tanl-guard", "run_name": None, "artifact_location": (tmp_path / "art").as_uri(),
              "run_id": None, "resume_run_id": None}
    bad = Journal.create(journal_dir, "20260101T000000Z-00000001", dict(header, tracking_uri="foo://bar"))
    bad.append([{"kind": "verdicts", "step": 1, "records": make_records(1)}, {"kind": "end", "status": "FINISHED"}])
    bad.unlock()  # its writer is gone: only a back-fill can deliver it, and it never can
    good = Journal.create(journal_dir, "20260101T000001Z-00000002", dict(header, tracking_uri=sqlite_uri))
    good.append([{"kind": "verdicts", "step": 2, "records": make_records(2)}, {"kind": "end", "status": "FINISHED"}])
    good.unlock()
    config = AuditConfig(tracking_uri=sqlite_uri, journal_dir=journal_dir, max_retries=0)
    results = {r.run_key: r for r in AuditLogger(config).backfill(timeout_s=60)}
    assert results[bad.key].error and "foo" in results[bad.key].error and results[bad.key].pending_records == 1
    assert results[good.key].complete and results[good.key].delivered_records == 2
    again = {r.run_key: r for r in AuditLogger(config).backfill(timeout_s=60)}
    assert set(again) == {bad.key}  # reported at every back-fill, never blocking the others
