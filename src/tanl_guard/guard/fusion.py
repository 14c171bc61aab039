# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""How a label gate (TANL) and a feature gate (kNN, Mahalanobis) combine into one verdict.

Each gate's score is turned into a **margin**: ``(score - threshold) / spread``, 0 at the gate's threshold and 1 at
a typical accepted score (the spread: median held-out reference score minus threshold for the feature gate; median
accepted score minus threshold for the label gate). The guard's decision is on the combined margin ``m``:

* ``decision="and"`` (rule a): ``m = min(label margin, feature margin)``: both gates must accept;
* ``decision="score"`` (rule b): ``m = (1 - w) * label margin + w * feature margin``: a calibrated combination;

and the reported ``id_score`` is ``sigmoid(m)`` (0.5 at the operating point; in [0, 1], higher = more ID).
Independently, ``admission="feature"`` (rule c) lets the feature gate decide which images TANL admits into its
confident ID / OOD queues, so that TANL mines its negative labels from reliably labelled images; and
``label_threshold="feature"`` sets the label gate's threshold from the stream so that it accepts a target share of
the images the feature gate accepts (the feature gate is calibrated on held-out references; TANL's own Otsu split
of its score history is not calibrated at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "FUSION_DECISIONS",
    "FUSION_ADMISSIONS",
    "FUSION_LABEL_THRESHOLDS",
    "FusionConfig",
    "GateScores",
    "margins",
    "combined_margin",
    "fused_score",
    "refused_by",
]

FUSION_DECISIONS = ("and", "score")
FUSION_ADMISSIONS = ("label", "feature")
FUSION_LABEL_THRESHOLDS = ("own", "feature")
_MIN_SPREAD = 1e-6


@dataclass(frozen=True)
class FusionConfig:
    """How the two gates of a fused guard (``--detector tanl+knn``) combine; see the module docs.

    The defaults were chosen by measurement (docs/method.md, "Fusion").

    Attributes:
        decision: ``"and"`` (both gates must accept) or ``"score"`` (weighted sum of the gates' margins).
        admission: ``"feature"`` (the feature gate decides TANL's queue admission) or ``"label"`` (TANL's own
            Otsu-gap rule).
        weight: weight of the feature gate's margin in the ``"score"`` decision, in [0, 1].
        admission_margin: with ``admission="feature"``: confident ID if the feature margin is at least this,
            confident OOD if it is below minus this (0: the feature gate's own accept/reject).
        label_threshold: the label gate's threshold under an adaptive policy: ``"own"`` (TANL's Otsu split of its
            score history) or ``"feature"`` (the score that accepts ``label_rate`` of the recent images the
            feature gate accepted: the feature gate, calibrated on held-out references, calibrates the label gate
            on the stream).
        label_rate: the target acceptance for ``label_threshold="feature"`` (None: the feature gate's rate).
        window: how many recent feature-accepted images that threshold is computed from.
    """

    decision: str = "and"
    admission: str = "feature"
    weight: float = 0.5
    admission_margin: float = 0.0
    label_threshold: str = "feature"
    label_rate: float | None = None
    window: int = 1000

    def __post_init__(self) -> None:
        if self.decision not in FUSION_DECISIONS:
            raise ValueError(f"decision must be one of {FUSION_DECISIONS}, got {self.decision!r}")
        if self.admission not in FUSION_ADMISSIONS:
            raise ValueError(f"admission must be one of {FUSION_ADMISSIONS}, got {self.admission!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if self.admission_margin < 0.0:
            raise ValueError(f"admission_margin must be >= 0, got {self.admission_margin}")
        if self.label_threshold not in FUSION_LABEL_THRESHOLDS:
            raise ValueError(f"label_threshold must be one of {FUSION_LABEL_THRESHOLDS}, got {self.label_threshold!r}")
        if self.label_rate is not None and not 0.0 < self.label_rate < 1.0:
            raise ValueError(f"label_rate must be in (0, 1), got {self.label_rate}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")


@dataclass(frozen=True)
class GateScores:
    """One gate's scores on a batch, with the threshold and spread in force for it.

    Attributes:
        name: the gate's detector (``"tanl"``, ``"knn"``, ...).
        role: ``"label"`` or ``"feature"``.
        scores: (B,) float64 id_scores on the CPU.
        threshold: the gate's threshold.
        spread: the gate's score scale for margins (> 0).
    """

    name: str
    role: str
    scores: torch.Tensor
    threshold: float
    spread: float

    def margin(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """``(score - threshold) / spread`` of this gate's scores (or of reduced ones given here).

        Args:
            scores: scores on this gate's scale (default: :attr:`scores`).
        """
        scores = self.scores if scores is None else scores
        return (scores.double() - self.threshold) / max(self.spread, _MIN_SPREAD)


def margins(gates: Sequence[GateScores]) -> dict[str, torch.Tensor]:
    """Each gate's margins, by role."""
    return {gate.role: gate.margin() for gate in gates}


def combined_margin(label: torch.Tensor, feature: torch.Tensor, config: FusionConfig) -> torch.Tensor:
    """The fused margin: >= 0 accepts.

    Args:
        label: the label gate's margins.
        feature: the feature gate's margins.
        config: the decision rule and weight.
    """
    if config.decision == "and":
        return torch.minimum(label, feature)
    return (1.0 - config.weight) * label + config.weight * feature


def fused_score(margin: torch.Tensor) -> torch.Tensor:
    """``sigmoid(margin)``: the fused id_score in [0, 1], 0.5 at the operating point."""
    return torch.sigmoid(margin.double())


def refused_by(gates: Sequence[GateScores], scores: Sequence[float]) -> list[str]:
    """The names of the gates whose (reduced) score is below their threshold.

    Args:
        gates: the gates.
        scores: one score per gate, in the same order.
    """
    return [gate.name for gate, score in zip(gates, scores, strict=True) if score < gate.threshold]
