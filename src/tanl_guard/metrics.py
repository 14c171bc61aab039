# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""OOD-detection metrics on id_scores (higher = more in-distribution), exact with tied scores.

Two FPR95 conventions are in use and differ by several points (tanl_method.md, Sec. 8.3), so both are named:

* ``fpr95_id_positive`` (MCM, NegLabel, CSP papers): the threshold accepts 95 % of the ID samples; the value is the
  fraction of OOD samples accepted too.
* ``fpr95_ood_positive`` (OpenOOD, TANL, AdaNeg): the threshold rejects 95 % of the OOD samples; the value is the
  fraction of ID samples rejected too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["OODMetrics", "roc_points", "auroc", "average_precision", "fpr_at_tpr", "ood_metrics"]


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores must be finite")
    return arr


def roc_points(positive_scores, negative_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positive counts at every distinct threshold, highest first (positives score higher).

    Returns:
        ``(tps, fps, thresholds)``; a sample is called positive when its score is >= the threshold.
    """
    pos, neg = _as_array(positive_scores), _as_array(negative_scores)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("need at least one positive and one negative score")
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, scores[last_of_tie]


def auroc(positive_scores, negative_scores) -> float:
    """Area under the ROC curve (ties count one half)."""
    tps, fps, _ = roc_points(positive_scores, negative_scores)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision(positive_scores, negative_scores) -> float:
    """Average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds (scikit-learn's definition)."""
    tps, fps, _ = roc_points(positive_scores, negative_scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(positive_scores, negative_scores, tpr_target: float = 0.95) -> float:
    """The false positive rate at the highest threshold whose true positive rate reaches ``tpr_target``."""
    tps, fps, _ = roc_points(positive_scores, negative_scores)
    tpr = tps / tps[-1]
    index = int(np.searchsorted(tpr, tpr_target - 1e-12, side="left"))
    return float(fps[min(index, fps.size - 1)] / fps[-1])


@dataclass(frozen=True)
class OODMetrics:
    """Detection quality of id_scores on one ID set against one OOD set."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95_id_positive: float
    fpr95_ood_positive: float
    n_id: int
    n_ood: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def ood_metrics(id_scores, ood_scores) -> OODMetrics:
    """All metrics for id_scores of ID samples against OOD samples (higher = more ID)."""
    ids, oods = _as_array(id_scores), _as_array(ood_scores)
    return OODMetrics(
        auroc=auroc(ids, oods),
        aupr_in=average_precision(ids, oods),
        aupr_out=average_precision(-oods, -ids),
        fpr95_id_positive=fpr_at_tpr(ids, oods, 0.95),
        fpr95_ood_positive=fpr_at_tpr(-oods, -ids, 0.95),
        n_id=int(ids.size),
        n_ood=int(oods.size),
    )
