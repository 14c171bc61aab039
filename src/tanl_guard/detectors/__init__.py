# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Streaming OOD detectors over image embeddings, one per file, behind the small API of :mod:`.base`."""

from __future__ import annotations

from .adaneg import AdaNegDetector
from .base import Detector, DetectorStep, LabelBank
from .mcm import MCMDetector
from .neglabel import NegLabelDetector, neglabel_selection
from .tanl import TANLDetector, TANLStep

__all__ = [
    "Detector",
    "DetectorStep",
    "LabelBank",
    "TANLDetector",
    "TANLStep",
    "NegLabelDetector",
    "neglabel_selection",
    "MCMDetector",
    "AdaNegDetector",
    "DETECTORS",
]

#: registry of detector classes by their short name
DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (TANLDetector, NegLabelDetector, MCMDetector, AdaNegDetector)
}
