# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard: images in, accept/reject verdicts out, with the online detector state in one owner."""

from __future__ import annotations

from .guard import GateResult, Guard, make_detector
from .policy import GuardPolicy, ThresholdPolicy
from .verdicts import ACCEPT, REJECT, UNREADABLE, SeriesVerdict, StudyVerdict, combine_series, study_verdict

__all__ = [
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
