# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""From recorded decisions to the numbers of the result file: separation (AUROC / FPR95 per OOD tier) and
decisions (ID acceptance, shifted-ID acceptance, OOD rejection per tier), each with a cluster-bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import ClusterSample, auroc_fpr, paired_auroc_difference, rate
from .protocol import Pool, Records

__all__ = ["separation", "decisions", "paired_differences", "OOD_TIERS"]

OOD_TIERS = ("mr_other_anatomy", "other_modality", "other_medical", "far", "synthetic")


def _tiers(pool: Pool) -> list[str]:
    present = [t for t in dict.fromkeys(pool.tier[pool.kind == "ood"].tolist())]
    return [t for t in OOD_TIERS if t in present] + [t for t in present if t not in OOD_TIERS]


def _samples(pool: Pool, arr: dict[str, np.ndarray], tier: str | None) -> tuple[ClusterSample, ClusterSample]:
    idx, score = arr["index"], arr["score"]
    is_id = pool.kind[idx] == "id"
    is_ood = pool.kind[idx] == "ood"
    if tier is not None:
        is_ood &= pool.tier[idx] == tier
    return (ClusterSample(score[is_id], pool.cluster[idx[is_id]]),
            ClusterSample(score[is_ood], pool.cluster[idx[is_ood]]))


def separation(pool: Pool, records: Records, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """AUROC and FPR95 of clean ID against all OOD and against each tier (pooled over folds), with intervals."""
    arr = records.arrays()
    out: dict[str, Any] = {}
    for tier in [None, *_tiers(pool)]:
        ids, oods = _samples(pool, arr, tier)
        if not ids.values.size or not oods.values.size:
            continue
        m = auroc_fpr(ids, oods, n_boot=n_boot, seed=seed)
        out["all" if tier is None else tier] = {
            "auroc": m["auroc"].as_list(),
            "fpr95_id_positive": m["fpr95_id_positive"].as_list(),
            "fpr95_ood_positive": round(float(m["fpr95_ood_positive"]), 4),
            "n_id": int(ids.values.size),
            "n_ood": int(oods.values.size),
            "id_clusters": int(np.unique(ids.clusters).size),
            "ood_clusters": int(np.unique(oods.clusters).size),
        }
    return out


def _count(values: np.ndarray) -> str:
    return f"{int(values.sum())}/{int(values.size)}"


def decisions(pool: Pool, records: Records, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """ID acceptance, shifted-ID acceptance (overall and per artefact) and OOD rejection (overall and per tier),
    with intervals; counts per ID group and per OOD kind; the thresholds in force."""
    arr = records.arrays()
    idx, acc = arr["index"], arr["accepted"]
    kind = pool.kind[idx]
    out: dict[str, Any] = {"n_decisions": int(idx.size), "n_streams": int(len(set(zip(arr["fold"], arr["stream"]))))}

    def interval(mask: np.ndarray, values: np.ndarray) -> list[float] | None:
        if not mask.any():
            return None
        return rate(ClusterSample(values[mask], pool.cluster[idx[mask]]), n_boot=n_boot, seed=seed).as_list()

    is_id, is_shift, is_ood = kind == "id", kind == "id_shifted", kind == "ood"
    out["id_acceptance"] = interval(is_id, acc)
    out["id_shifted_acceptance"] = interval(is_shift, acc)
    out["ood_rejection"] = interval(is_ood, ~acc)
    if out["id_acceptance"] and out["ood_rejection"]:
        out["worse_of_id_acceptance_and_ood_rejection"] = round(min(out["id_acceptance"][0], out["ood_rejection"][0]), 4)
    out["ood_rejection_by_tier"] = {t: interval(is_ood & (pool.tier[idx] == t), ~acc) for t in _tiers(pool)}
    out["id_shifted_acceptance_by_artefact"] = {
        a: interval(is_shift & (pool.detail[idx] == a), acc)
        for a in sorted(set(pool.detail[idx[is_shift]].tolist()))
    }
    out["id_accepted_by_group"] = {g: _count(acc[is_id & (pool.group[idx] == g)])
                                   for g in sorted(set(pool.group[idx[is_id]].tolist()))}
    out["ood_rejected_by_kind"] = {
        f"{pool.tier[i]} / {pool.detail[i]}": _count(~acc[is_ood & (pool.detail[idx] == pool.detail[i])
                                                          & (pool.tier[idx] == pool.tier[i])])
        for i in dict.fromkeys(idx[is_ood].tolist()).keys()
    }
    out["ood_rejected_by_kind"] = dict(sorted(out["ood_rejected_by_kind"].items()))
    thr = arr["threshold"]
    out["threshold"] = {"median": round(float(np.median(thr)), 4), "min": round(float(thr.min()), 4),
                        "max": round(float(thr.max()), 4)} if thr.size else None
    return out


def paired_differences(pool: Pool, records: dict[str, Records], pairs: Sequence[tuple[str, str]], n_boot: int,
                       seed: int = 0) -> dict[str, Any]:
    """AUROC(a) - AUROC(b) against all OOD on the ``all_ood`` streams, same cluster draws for both methods."""
    out: dict[str, Any] = {}
    for a, b in pairs:
        if a not in records or b not in records:
            continue
        ra, rb = records[a].arrays(), records[b].arrays()
        if not np.array_equal(ra["index"], rb["index"]):
            # same streams in the same order for every method (seeded), so this is a programming error
            raise ValueError(f"{a} and {b} were not scored on the same images")
        ia, oa = _samples(pool, ra, None)
        ib, ob = _samples(pool, rb, None)
        out[f"{a} - {b}"] = paired_auroc_difference(ia, oa, ib, ob, n_boot=n_boot, seed=seed).as_list()
    return out
