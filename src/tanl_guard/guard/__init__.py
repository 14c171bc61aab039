# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard: images in, accept/reject verdicts out, with the online detector state in one owner."""

from __future__ import annotations

from .counts import StudyCounts, count_studies
from .describe import DatasetDescription, RunDescription, describe_guard
from .fusion import FusionConfig, GateScores
from .guard import (
    DEFAULT_FUSED_DETECTOR,
    FEATURE_SOURCES,
    GateResult,
    Guard,
    detector_names,
    make_detector,
    split_detector_name,
)
from .policy import STUDY_POLICIES, GuardPolicy, ThresholdPolicy
from .verdicts import ACCEPT, REJECT, UNREADABLE, SeriesVerdict, StudyVerdict, combine_series, study_verdict

__all__ = [
    "DatasetDescription",
    "RunDescription",
    "StudyCounts",
    "count_studies",
    "describe_guard",
    "Guard",
    "GateResult",
    "GateScores",
    "FusionConfig",
    "make_detector",
    "detector_names",
    "split_detector_name",
    "DEFAULT_FUSED_DETECTOR",
    "FEATURE_SOURCES",
    "GuardPolicy",
    "ThresholdPolicy",
    "STUDY_POLICIES",
    "SeriesVerdict",
    "StudyVerdict",
    "combine_series",
    "study_verdict",
    "ACCEPT",
    "REJECT",
    "UNREADABLE",
]
