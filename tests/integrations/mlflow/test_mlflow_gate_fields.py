# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A fused guard's verdict line (both gates' scores and thresholds, the refusing gates) in the audit table."""

from __future__ import annotations

import json

import pytest

from tanl_guard.integrations.mlflow import normalise_verdict_record, verdict_row


def test_both_gates_become_columns_of_the_verdict_table():
    record = {
        "study": "0123456789abcdef", "verdict": "reject", "id_score": 0.2, "threshold": 0.5,
        "label_score": 0.71, "label_threshold": 0.55, "feature_score": 0.62, "feature_threshold": float("nan"),
        "refused_by": ["knn"], "top_negatives": [], "reason": "1 of 1 series out of distribution",
        "series": [{"series": "fedcba9876543210", "modality": "MR", "verdict": "reject", "id_score": 0.2,
                    "views": 3, "reason": "refused by knn", "label_score": 0.71, "feature_score": "0.62",
                    "refused_by": ["knn"]}],
    }
    normalised = normalise_verdict_record(record, step=4)
    assert normalised["feature_threshold"] is None  # not finite: no number in the table
    assert normalised["series"][0]["feature_score"] == pytest.approx(0.62)
    row = verdict_row(normalised, "run:1:0")
    assert row["label_score"] == 0.71 and row["label_threshold"] == 0.55 and row["feature_score"] == 0.62
    assert json.loads(row["refused_by"]) == ["knn"]
    with pytest.raises(ValueError, match="feature_score"):
        normalise_verdict_record({**record, "feature_score": "high"})
