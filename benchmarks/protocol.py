# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The evaluation protocol: nested leave-one-group-out folds, deployment-like streams, and the run that records
every decision a method makes.

* **Folds.** One fold per ID fold group (a volume, or the template-space group of MNI152, Colin27 and BrainWeb).
  A fold's method is built from the *other* groups' clean slices only; its test streams hold the group's clean
  slices, their covariate-shifted copies, and OOD images.
* **Policies.** ``adaptive`` and ``calibrated`` are the product's own (see :mod:`benchmarks.methods`); ``nested``
  is a fixed threshold set by an inner leave-one-group-out loop over the training groups only: each training group
  is scored as a stream by a gate built from the remaining training groups, and the threshold accepts 95 % of these
  pooled held-out scores (the ``Guard.calibrate`` rule, applied out of sample). Nothing in any policy sees the test
  group; no operating point is read off the test scores.
* **Streams.** ``all_ood``: the test group's clean slices and every OOD image, shuffled (one stream per fold; the
  AUROC / FPR95 stream). ``id95`` / ``id80``: the test group's clean slices and their shifted copies, plus a
  disjoint slice of the shuffled OOD images sized so that OOD is 5 % / 20 % of the stream (at least one image),
  up to ``max_streams`` streams per fold. Every stream starts from a reset gate and goes in batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .methods import Method, References, policy_of

__all__ = ["STREAM_KINDS", "POLICIES", "Pool", "Fold", "folds", "streams", "nested_threshold", "Records", "run_method"]

STREAM_KINDS = ("all_ood", "id95", "id80")
POLICIES = ("adaptive", "calibrated", "nested")


@dataclass
class Pool:
    """Every image of the evaluation in one index space.

    Attributes:
        images: the pixels.
        kind: ``id`` (clean ID slice), ``id_shifted`` (a shifted copy of one) or ``ood``.
        tier: ``id``, ``id_shifted`` or the OOD tier.
        group: fold group of ID images (of the source slice for shifted copies), ``""`` for OOD.
        cluster: bootstrap cluster: the fold group for ID, the source (file / volume) for OOD.
        detail: OOD kind inside the tier (``CT``, ``document``...), the artefact for shifted copies, the volume for
            clean ID.
    """

    images: list[np.ndarray]
    kind: np.ndarray
    tier: np.ndarray
    group: np.ndarray
    cluster: np.ndarray
    detail: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class Fold:
    """One held-out group."""

    name: str
    test_id: np.ndarray
    test_shifted: np.ndarray
    reference: np.ndarray


def folds(pool: Pool) -> list[Fold]:
    """Leave-one-group-out folds over the clean ID slices' fold groups (sorted by name)."""
    ids = np.flatnonzero(pool.kind == "id")
    out = []
    for g in sorted(set(pool.group[ids].tolist())):
        out.append(Fold(
            name=g,
            test_id=ids[pool.group[ids] == g],
            test_shifted=np.flatnonzero((pool.kind == "id_shifted") & (pool.group == g)),
            reference=ids[pool.group[ids] != g],
        ))
    return out


def streams(pool: Pool, fold: Fold, kind: str, seed: int, max_streams: int = 8) -> list[np.ndarray]:
    """The streams of one fold, each an array of pool indices in stream order.

    Args:
        pool: the images.
        fold: the fold.
        kind: one of :data:`STREAM_KINDS`.
        seed: seeds the OOD draw and the shuffles.
        max_streams: cap on the ID-majority streams per fold.
    """
    rng = np.random.default_rng(seed)
    ood = np.flatnonzero(pool.kind == "ood")
    if kind == "all_ood":
        return [rng.permutation(np.r_[fold.test_id, ood])]
    if kind not in ("id95", "id80"):
        raise ValueError(f"unknown stream kind {kind!r}; choose one of {STREAM_KINDS}")
    share = 0.05 if kind == "id95" else 0.20
    id_pool = np.r_[fold.test_id, fold.test_shifted]
    per = max(1, int(round(id_pool.size * share / (1.0 - share))))
    shuffled = ood[rng.permutation(ood.size)]
    n = min(max_streams, math.ceil(ood.size / per))
    return [rng.permutation(np.r_[id_pool, shuffled[j * per : (j + 1) * per]]) for j in range(n)]


@dataclass
class Records:
    """Every decision of one method under one policy on one stream kind (parallel arrays)."""

    index: list[int] = field(default_factory=list)
    fold: list[str] = field(default_factory=list)
    stream: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)

    def add(self, idx: np.ndarray, fold: str, stream: int, scores: np.ndarray, accepted: np.ndarray,
            threshold: float) -> None:
        self.index += idx.tolist()
        self.fold += [fold] * idx.size
        self.stream += [stream] * idx.size
        self.score += np.asarray(scores, dtype=np.float64).tolist()
        self.accepted += np.asarray(accepted, dtype=bool).tolist()
        self.threshold += [float(threshold)] * idx.size

    def arrays(self) -> dict[str, np.ndarray]:
        return {"index": np.asarray(self.index, dtype=np.int64), "fold": np.asarray(self.fold),
                "stream": np.asarray(self.stream, dtype=np.int64), "score": np.asarray(self.score),
                "accepted": np.asarray(self.accepted, dtype=bool), "threshold": np.asarray(self.threshold)}


def _feed(gate: Any, pool: Pool, order: np.ndarray, batch_size: int, sink: Callable[..., None]) -> None:
    gate.reset()
    for lo in range(0, order.size, batch_size):
        idx = order[lo : lo + batch_size]
        out = gate.score([pool.images[i] for i in idx])
        sink(idx, out)


def nested_threshold(method: Method, encoder: Any, labels: Sequence[str], pool: Pool, reference: np.ndarray,
                     context: Mapping[str, Any], batch_size: int, rate: float = 0.95, seed: int = 0) -> float:
    """The threshold accepting ``rate`` of the training groups' slices, each scored by a gate built without it.

    Args:
        method: the method.
        encoder: the encoder.
        labels: the ID labels.
        pool: the images.
        reference: pool indices of the fold's reference (training) slices.
        context: corpus, cache_dir, seed.
        batch_size: stream batch size.
        rate: the target acceptance rate.
        seed: seeds the inner streams' orders.
    """
    groups = pool.group[reference]
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise ValueError("a nested threshold needs at least two training groups")
    held_scores: list[np.ndarray] = []
    for j, g in enumerate(names):
        inner = reference[groups != g]
        refs = References([pool.images[i] for i in inner], pool.group[inner].tolist())
        gate = method.build(encoder, labels, refs, policy_of("adaptive"), context)
        order = np.random.default_rng(seed + 1000 + j).permutation(reference[groups == g])
        got: list[np.ndarray] = []
        _feed(gate, pool, order, batch_size, lambda idx, out, got=got: got.append(out.scores))
        held_scores.append(np.concatenate(got))
    return float(np.quantile(np.concatenate(held_scores), 1.0 - rate, method="lower"))


def run_method(method: Method, encoder: Any, labels: Sequence[str], pool: Pool, context: Mapping[str, Any],
               policies: Sequence[str] = POLICIES, stream_kinds: Sequence[str] = STREAM_KINDS, batch_size: int = 32,
               seed: int = 0, max_streams: int = 8, log: Callable[..., None] = print,
               ) -> tuple[dict[tuple[str, str], Records], dict[str, Any]]:
    """Run one method over every fold, policy and stream kind.

    When ``method.policies_share_scores``, one gate per fold is built with the adaptive policy and streamed once:
    its own decisions are the ``adaptive`` ones; ``calibrated`` decisions compare the same scores with the
    threshold ``gate.calibrate`` returns on the fold's references right after the build (what ``Guard.build`` does
    for a calibrated policy), ``nested`` ones with the nested threshold (the rule of a fixed policy). Otherwise one
    gate is built per policy and each decides for itself.

    Returns:
        ``(records, info)``: records keyed by (policy, stream kind); info holds per-fold thresholds of the
        calibrated and nested policies, the gate's snapshot at the end of each fold's ``all_ood`` stream and
        timings.
    """
    records: dict[tuple[str, str], Records] = {(p, k): Records() for p in policies for k in stream_kinds}
    info: dict[str, Any] = {"nested_thresholds": {}, "calibrated_thresholds": {}, "seconds": {}, "snapshots": {},
                            "policies_share_scores": bool(getattr(method, "policies_share_scores", False))}
    for f_i, fold in enumerate(folds(pool)):
        t0 = time.perf_counter()
        refs = References([pool.images[i] for i in fold.reference], pool.group[fold.reference].tolist())
        fixed: dict[str, float] = {}
        if "nested" in policies:
            fixed["nested"] = nested_threshold(method, encoder, labels, pool, fold.reference, context, batch_size,
                                               seed=seed + 97 * f_i)
            info["nested_thresholds"][fold.name] = fixed["nested"]
        if info["policies_share_scores"]:
            gate = method.build(encoder, labels, refs, policy_of("adaptive"), context)
            if "calibrated" in policies:
                fixed["calibrated"] = gate.calibrate(refs.images, 0.95)
                info["calibrated_thresholds"][fold.name] = fixed["calibrated"]
            # policy -> the threshold its decisions use (None: the gate's own decisions)
            runs = [(gate, {p: None if p == "adaptive" else fixed[p] for p in policies})]
        else:
            runs = [(method.build(encoder, labels, refs,
                                  policy_of("fixed", fixed[p]) if p == "nested" else policy_of(p), context), {p: None})
                    for p in policies]
        for gate, decided in runs:
            for kind in stream_kinds:
                for s_i, order in enumerate(streams(pool, fold, kind, seed + 31 * f_i, max_streams)):
                    def sink(idx, out, kind=kind, s_i=s_i, decided=decided, name=fold.name):
                        for p, thr in decided.items():
                            if thr is None:
                                records[(p, kind)].add(idx, name, s_i, out.scores, out.accepted, out.threshold)
                            else:
                                records[(p, kind)].add(idx, name, s_i, out.scores, out.scores >= thr, thr)

                    _feed(gate, pool, order, batch_size, sink)
                    if kind == "all_ood" and s_i == 0 and policies[0] in decided and hasattr(gate, "snapshot"):
                        info["snapshots"][fold.name] = gate.snapshot()  # the state at the end of the stream
        info["seconds"][fold.name] = round(time.perf_counter() - t0, 2)
        log(f"[real]   {method.name}: fold {fold.name} ({fold.test_id.size} ID slices) "
            f"in {info['seconds'][fold.name]:.1f}s", flush=True)
    return records, info
