# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard: images in, accept/reject verdicts out, with the online detector state in one owner."""

from __future__ import annotations

from .counts import StudyCounts, count_studies
from .describe import DatasetDescription, RunDescription, describe_guard
from .guard import GateResult, Guard, make_detector
from .policy import GuardPolicy, ThresholdPolicy
from .verdicts import ACCEPT, REJECT, UNREADABLE, SeriesVerdict, StudyVerdict, combine_series, study_verdict

__all__ = [
    "DatasetDescription",
    "RunDescription",
    "StudyCounts",
    "count_studies",
    "describe_guard",
    "Guard",
    "GateResult",
    "make_detector",
    "GuardPolicy",
    "ThresholdPolicy",
    "SeriesVerdict",
    "StudyVerdict",
    "combine_series",
    "study_verdict",
    "ACCEPT",
    "REJECT",
    "UNREADABLE",
]
