# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""OOD detectors, one per file, behind the small API of :mod:`.base`, and their registry.

Label detectors (TANL, NegLabel, MCM, AdaNeg) score joint image-text embeddings against ID and corpus labels;
feature detectors (kNN, Mahalanobis) score image features against reference ID images they are fit on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..config import config_with_seed
from .adaneg import AdaNegDetector
from .base import Detector, DetectorStep, LabelBank, LabelDetector
from .feature import FeatureDetector, held_out_splits
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .mcm import MCMDetector
from .neglabel import NegLabelDetector, neglabel_selection
from .tanl import TANLDetector, TANLStep

__all__ = [
    "Detector",
    "DetectorStep",
    "LabelBank",
    "LabelDetector",
    "FeatureDetector",
    "TANLDetector",
    "TANLStep",
    "NegLabelDetector",
    "neglabel_selection",
    "MCMDetector",
    "AdaNegDetector",
    "KNNDetector",
    "MahalanobisDetector",
    "held_out_splits",
    "DetectorEntry",
    "DETECTORS",
    "make_detector",
]


class DetectorEntry(NamedTuple):
    """A registry entry: the detector class and its config class."""

    detector: type[Detector]
    config: type


#: registry: short name -> (detector class, config class)
DETECTORS: dict[str, DetectorEntry] = {
    cls.name: DetectorEntry(cls, cls.config_class)
    for cls in (TANLDetector, NegLabelDetector, MCMDetector, AdaNegDetector, KNNDetector, MahalanobisDetector)
}


def make_detector(
    name: str,
    id_embeddings: torch.Tensor | None = None,
    corpus_embeddings: torch.Tensor | None = None,
    logit_scale: float | None = None,
    config: Any = None,
    corpus_kinds: torch.Tensor | None = None,
    *,
    seed: int | None = None,
) -> Detector:
    """Build a detector by registry name, the same way for every detector.

    Args:
        name: a key of :data:`DETECTORS`.
        id_embeddings: (C, D) ID label embeddings (label detectors).
        corpus_embeddings: (N, D) corpus label embeddings (label detectors).
        logit_scale: the encoder's logit scale (label detectors).
        config: an instance of the detector's config class (its defaults when None).
        corpus_kinds: (N,) integer kind per corpus label.
        seed: sets every ``seed`` field of the config (cold-start orders, grouping, calibration folds).
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    entry = DETECTORS[name]
    config = config if config is not None else entry.config()
    if not isinstance(config, entry.config):
        raise TypeError(f"detector {name!r} takes a {entry.config.__name__}, got {type(config).__name__}")
    return entry.detector.from_config(
        config_with_seed(config, seed),
        id_embeddings=id_embeddings,
        corpus_embeddings=corpus_embeddings,
        logit_scale=logit_scale,
        corpus_kinds=corpus_kinds,
    )
