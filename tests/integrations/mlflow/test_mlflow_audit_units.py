# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Unit tests of the MLflow audit helpers that need no MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tanl_guard.integrations.mlflow import (
    AuditConfig,
    Journal,
    check_no_phi,
    config_sha256,
    flatten_params,
    merge_verdict_tables,
    normalise_verdict_record,
    resolve_tracking_uri,
    selection_churn,
    snapshot_to_json,
    state_artifact_name,
    verdict_row,
)
from tanl_guard.integrations.mlflow.config import default_artifact_location, default_journal_dir, sqlite_path
from tanl_guard.integrations.mlflow.params import batched


def test_selection_churn() -> None:
    assert selection_churn(["a", "b"], ["a", "b"]) == 0.0
    assert selection_churn(["a", "b"], ["c"]) == 1.0
    assert selection_churn(["a", "b", "c"], ["b", "c", "d"]) == pytest.approx(0.5)
    assert selection_churn(None, []) == 0.0
    assert selection_churn([], ["x"]) == 1.0


def test_flatten_params_limits_and_batches() -> None:
    flat = flatten_params({"tanl": {"alpha": 0.5, "queue": {"size": 64}}, "labels": ["a", "b"], "long": "x" * 7000})
    assert flat["tanl.alpha"] == "0.5"
    assert flat["tanl.queue.size"] == "64"
    assert json.loads(flat["labels"]) == ["a", "b"]
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")
    assert [len(b) for b in batched(list(range(250)), 100)] == [100, 100, 50]
    with pytest.raises(ValueError, match="250"):
        flatten_params({"k" * 251: 1})
    assert config_sha256({"a": 1, "b": 2}) == config_sha256({"b": 2, "a": 1})


def test_snapshot_json_is_strict_json() -> None:
    snap = {
        "selected_negatives": {"b", "a"},
        "threshold": np.float32(0.25),
        "queue": np.arange(3),
        "bad": float("nan"),
        "path": Path("/x"),
    }
    data = json.loads(snapshot_to_json(snap, step=7))
    assert data == {
        "selected_negatives": ["a", "b"],
        "threshold": 0.25,
        "queue": [0, 1, 2],
        "bad": None,
        "path": "/x",
        "step": 7,
    }
    assert state_artifact_name(100) == "step_000100.json"


@pytest.mark.parametrize(
    "record",
    [
        {"study": "s1", "verdict": "accept", "PatientID": "123"},
        {"study": "s1", "verdict": "accept", "patient_name": "Doe^John"},
        {"study": "s1", "verdict": "accept", "series": [{"series": "a", "SeriesInstanceUID": "1.2.3.4"}]},
        {"study": "s1", "verdict": "accept", "extra": {"StudyInstanceUID": "1.2.3.4"}},
        {"study": "s1", "verdict": "accept", "(0010,0030)": "19700101"},
        {"study": "1.2.840.113619.2.55.3", "verdict": "accept"},  # a raw UID as the key
        {"study": "s1", "verdict": "maybe"},
        {"study": "s1", "verdict": "accept", "id_score": "high"},
    ],
)
def test_bad_records_are_refused(record: dict) -> None:
    with pytest.raises(ValueError):
        normalise_verdict_record(record)


def test_phi_guard_on_plain_dicts() -> None:
    check_no_phi({"study": "abc", "nested": [{"views": 3}]})
    for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                "SOPInstanceUID", "sop_instance_uid"):  # fmt: skip
        with pytest.raises(ValueError, match=key):
            check_no_phi({"ok": {key: "x"}})


def test_record_row_and_table_merge_is_idempotent() -> None:
    rec = normalise_verdict_record(
        {
            "study": "s1",
            "verdict": "reject",
            "id_score": math.inf,
            "series": [{"series": "se1", "verdict": "reject", "id_score": 0.1, "views": 3, "modality": "CT"}],
            "top_negatives": ["dog"],
            "site_note": "x",
        },
        step=5,
    )
    assert rec["step"] == 5 and rec["id_score"] is None
    row = verdict_row(rec, "k:1:0", time_ms=1_700_000_000_000)
    assert row["n_series"] == 1 and json.loads(row["series"])[0]["views"] == 3
    assert row["top_negatives"] == "dog" and row["site_note"] == "x"  # readable text, not JSON
    assert row["time"] == "2023-11-14T22:13:20Z"
    table = merge_verdict_tables(None, [row])
    again = merge_verdict_tables(table, [row, dict(row, record_id="k:2:0")])
    assert len(table["data"]) == 1 and len(again["data"]) == 2
    # the auditor's reading order first; the bulky series JSON and the bookkeeping last
    assert again["columns"][:8] == ["time", "study", "verdict", "id_score", "threshold", "why", "top_negatives",
                                    "reason"]
    assert row["why"] == "1/1 series OOD"
    columns = again["columns"]
    assert columns[-2:] == ["step", "record_id"] and columns.index("series") < columns.index("site_note")
    # no DICOM columns for records without series (MONAI runs); the classifier's output gets a column
    monai = verdict_row(normalise_verdict_record({"study": "p1", "verdict": "accept", "id_score": 0.9,
                                                  "classifier_output": "class 1"}), "k:3:0")
    assert "series" not in monai and "n_series" not in monai and monai["classifier_output"] == "class 1"
    assert merge_verdict_tables(None, [monai])["columns"][8] == "classifier_output"


def test_store_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"
    assert sqlite_path(uri) == tmp_path.resolve() / "mlflow.db"
    assert default_artifact_location(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert default_journal_dir(uri) == tmp_path.resolve() / "tanl_guard_journal"
    assert default_artifact_location("http://127.0.0.1:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    for bad in ("file:./mlruns", "file:///tmp/mlruns", "./mlruns", "/abs/mlruns"):
        with pytest.raises(ValueError, match="file store"):
            resolve_tracking_uri(bad)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    with pytest.raises(ValueError, match="file store"):
        AuditConfig().resolved_tracking_uri()
    with pytest.raises(ValueError, match="file store"):
        AuditConfig(tracking_uri="file:./mlruns")


def test_journal_ignores_torn_last_line(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "k1", {"experiment": "e"})
    journal.append([{"kind": "metrics", "step": 1, "metrics": {"m": 1.0}}])
    with open(journal.path, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "verdicts", "rec')  # a crash in the middle of a write
    lines = journal.read()
    assert [e["kind"] for e in lines] == ["start", "metrics"]
    assert journal.load_marker().offset == 0
    other = Journal(journal.path)
    assert not other.try_lock()  # held by the creator
    journal.unlock()
    assert other.try_lock()
    other.unlock()


def test_serve_ui_refuses_non_database_stores() -> None:
    import inspect

    from tanl_guard.integrations.mlflow import serve_ui

    assert inspect.signature(serve_ui).parameters["host"].default == "127.0.0.1"
    with pytest.raises(ValueError, match="database"):
        serve_ui("http://127.0.0.1:5000", wait=False)
    with pytest.raises(ValueError, match="file store"):
        serve_ui("file:./mlruns", wait=False)
