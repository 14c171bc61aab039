# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Cluster-bootstrap intervals: ID volumes (fold groups) and OOD sources are resampled, never single images.

Slices of one volume and images of one source are strongly correlated, so the unit of resampling is the cluster:
each replicate draws the ID clusters and the OOD clusters with replacement and weights every image by how often its
cluster was drawn. Intervals are percentile intervals (default 95 %, 2,000 replicates, seeded); point estimates
are the plain statistics on the data as observed (``tanl_guard.ood_metrics`` for AUROC and FPR95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tanl_guard import ood_metrics

__all__ = ["Interval", "ClusterSample", "auroc_fpr", "rate", "paired_auroc_difference", "N_BOOT"]

N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile interval."""

    value: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [round(self.value, 4), round(self.low, 4), round(self.high, 4)]


@dataclass(frozen=True)
class ClusterSample:
    """Values and the cluster of each (an ID fold group, an OOD source)."""

    values: np.ndarray
    clusters: np.ndarray

    def codes(self) -> tuple[np.ndarray, int]:
        names, codes = np.unique(self.clusters.astype(str), return_inverse=True)
        return codes, names.size


def _draws(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_clusters) counts of each cluster in each replicate."""
    picks = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    return np.stack([np.bincount(p, minlength=n_clusters) for p in picks]).astype(np.float64)


def _interval(value: float, reps: np.ndarray, level: float) -> Interval:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Interval(value, float("nan"), float("nan"))
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Interval(float(value), float(lo), float(hi))


def _pair_matrix(ids: ClusterSample, oods: ClusterSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """M[g, s]: sum over ID images of cluster g and OOD images of cluster s of 1[id > ood] + 0.5 * 1[id == ood]."""
    gi, ng = ids.codes()
    so, ns = oods.codes()
    x, y = ids.values.astype(np.float64), oods.values.astype(np.float64)
    wins = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    a = np.zeros((x.size, ng))
    a[np.arange(x.size), gi] = 1.0
    b = np.zeros((y.size, ns))
    b[np.arange(y.size), so] = 1.0
    return a.T @ wins @ b, a.sum(axis=0), b.sum(axis=0)


def auroc_fpr(ids: ClusterSample, oods: ClusterSample, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0,
              ) -> dict[str, Interval | float]:
    """AUROC and FPR95 (ID-positive: OOD accepted at the threshold that accepts 95 % of ID) with intervals.

    Returns:
        ``{"auroc": Interval, "fpr95_id_positive": Interval, "fpr95_ood_positive": float}``.
    """
    m = ood_metrics(ids.values, oods.values)
    rng = np.random.default_rng(seed)
    pair, n_g, n_s = _pair_matrix(ids, oods)
    a = _draws(n_g.size, n_boot, rng)
    b = _draws(n_s.size, n_boot, rng)
    auc = np.einsum("rg,gs,rs->r", a, pair, b) / ((a @ n_g) * (b @ n_s))
    # FPR95 per replicate: the highest threshold accepting >= 95 % of the weighted ID images
    gi, _ = ids.codes()
    so, _ = oods.codes()
    order = np.argsort(-ids.values, kind="mergesort")
    xs = ids.values[order]
    fpr = np.empty(n_boot)
    ys = oods.values
    for r in range(n_boot):
        w = a[r, gi[order]]
        cum = np.cumsum(w) / w.sum()
        k = int(np.searchsorted(cum, 0.95 - 1e-12, side="left"))
        thr = xs[min(k, xs.size - 1)]
        wo = b[r, so]
        fpr[r] = float(wo[ys >= thr].sum() / wo.sum())
    return {
        "auroc": _interval(m.auroc, auc, level),
        "fpr95_id_positive": _interval(m.fpr95_id_positive, fpr, level),
        "fpr95_ood_positive": float(m.fpr95_ood_positive),
    }


def rate(sample: ClusterSample, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> Interval:
    """The mean of boolean ``values`` (an acceptance or rejection rate), clusters resampled."""
    codes, n = sample.codes()
    v = sample.values.astype(np.float64)
    hits = np.bincount(codes, weights=v, minlength=n)
    sizes = np.bincount(codes, minlength=n).astype(np.float64)
    a = _draws(n, n_boot, np.random.default_rng(seed))
    return _interval(float(v.mean()), (a @ hits) / (a @ sizes), level)


def paired_auroc_difference(ids_a: ClusterSample, oods_a: ClusterSample, ids_b: ClusterSample, oods_b: ClusterSample,
                            n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> Interval:
    """AUROC(a) - AUROC(b) on the same images (same clusters), with the same cluster draws for both."""
    pa, ng, ns = _pair_matrix(ids_a, oods_a)
    pb, ng_b, ns_b = _pair_matrix(ids_b, oods_b)
    if not (np.array_equal(ng, ng_b) and np.array_equal(ns, ns_b)):
        raise ValueError("paired differences need the same clusters and sizes for both methods")
    rng = np.random.default_rng(seed)
    a = _draws(ng.size, n_boot, rng)
    b = _draws(ns.size, n_boot, rng)
    denom = (a @ ng) * (b @ ns)
    diff = (np.einsum("rg,gs,rs->r", a, pa, b) - np.einsum("rg,gs,rs->r", a, pb, b)) / denom
    value = ood_metrics(ids_a.values, oods_a.values).auroc - ood_metrics(ids_b.values, oods_b.values).auroc
    return _interval(value, diff, level)
