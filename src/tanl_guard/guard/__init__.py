# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard: images in, accept/reject verdicts out, with the online detector state in one owner.

Names are imported on first use, so the torch-free parts (:mod:`.verdicts`, :mod:`.counts`) serve the audit trail
and the CLI without loading the encoders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "DatasetDescription": "describe",
    "RunDescription": "describe",
    "StudyCounts": "counts",
    "count_studies": "counts",
    "describe_guard": "describe",
    "Guard": "guard",
    "GateResult": "guard",
    "GateScores": "fusion",
    "FusionConfig": "fusion",
    "make_detector": "guard",
    "detector_names": "guard",
    "split_detector_name": "guard",
    "DEFAULT_FUSED_DETECTOR": "guard",
    "FEATURE_SOURCES": "guard",
    "GuardPolicy": "policy",
    "ThresholdPolicy": "policy",
    "STUDY_POLICIES": "policy",
    "SeriesVerdict": "verdicts",
    "StudyVerdict": "verdicts",
    "Verdict": "verdicts",
    "combine_series": "verdicts",
    "study_verdict": "verdicts",
    "ACCEPT": "verdicts",
    "REJECT": "verdicts",
    "UNREADABLE": "verdicts",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
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
    from .verdicts import (
        ACCEPT,
        REJECT,
        UNREADABLE,
        SeriesVerdict,
        StudyVerdict,
        Verdict,
        combine_series,
        study_verdict,
    )


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


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
    "Verdict",
    "combine_series",
    "study_verdict",
    "ACCEPT",
    "REJECT",
    "UNREADABLE",
]
