# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""tanl-guard: an out-of-distribution guardrail for medical-imaging classifiers.

The pure engine lives at the top level and in :mod:`tanl_guard.detectors` (torch and numpy only); encoders,
corpora, DICOM ingestion, the guard, the MONAI and MLflow integrations and the CLI build on it.
"""

from __future__ import annotations

from .config import (
    AdaNegConfig,
    CalibrationConfig,
    KNNConfig,
    MahalanobisConfig,
    MCMConfig,
    NegLabelConfig,
    TANLConfig,
)
from .detectors import (
    DETECTORS,
    AdaNegDetector,
    Detector,
    DetectorStep,
    FeatureDetector,
    KNNDetector,
    LabelBank,
    LabelDetector,
    MahalanobisDetector,
    MCMDetector,
    NegLabelDetector,
    TANLDetector,
    TANLStep,
    make_detector,
)
from .metrics import OODMetrics, ood_metrics
from .noise import noise_images
from .scores import activation_aware_score, grouped_neglabel_score, mcm_score
from .threshold import otsu_threshold

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "TANLConfig",
    "NegLabelConfig",
    "MCMConfig",
    "AdaNegConfig",
    "KNNConfig",
    "MahalanobisConfig",
    "CalibrationConfig",
    "Detector",
    "LabelDetector",
    "FeatureDetector",
    "DetectorStep",
    "LabelBank",
    "TANLDetector",
    "TANLStep",
    "NegLabelDetector",
    "MCMDetector",
    "AdaNegDetector",
    "KNNDetector",
    "MahalanobisDetector",
    "DETECTORS",
    "make_detector",
    "OODMetrics",
    "ood_metrics",
    "noise_images",
    "activation_aware_score",
    "grouped_neglabel_score",
    "mcm_score",
    "otsu_threshold",
]
