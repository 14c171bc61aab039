# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Typed, frozen configuration of the detectors, one class per detector.

TANL's defaults are the paper's (Zhang et al., "Activation Matters", CVPR 2026, Sec. 4.1): M = 1000 negatives,
L = 300, confidence gap g = 0.2, alpha = 0.95, the activation-aware score (step 1) and a 20,000-score history.
The feature detectors (kNN, Mahalanobis) score image features against reference ID images; their threshold is
calibrated on held-out references (:class:`CalibrationConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

__all__ = [
    "TANLConfig",
    "NegLabelConfig",
    "MCMConfig",
    "AdaNegConfig",
    "CalibrationConfig",
    "KNNConfig",
    "MahalanobisConfig",
    "config_from_dict",
    "config_to_dict",
    "config_with_seed",
]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TANLConfig:
    """Settings of :class:`~tanl_guard.detectors.tanl.TANLDetector`.

    Args:
        n_negatives: M, the number of activated negative labels selected per batch (clipped to the corpus size).
        queue_len: L, the capacity of each FIFO queue of confident samples.
        gap: g in [0, 1]; admit as confident ID if ``s > t + g(1 - t)``, as confident OOD if ``s < t - g t``.
        alpha: weight of the queue means against the current batch's confident samples (1 = queues only).
        score_step: 0 = one softmax over ID + all M negatives (NegLabel's form without groups); 1 = the
            activation-aware score of Eq. 15; k > 1 = its average over the prefixes k, 2k, ... (last clipped to M).
        history_len: capacity of the first-pass score history that the Otsu threshold is computed from.
        seed: seed of the generator used by :meth:`reset` when no explicit orders or generator are given.
        explain_top_k: how many of the selected negatives with the highest logit are reported per image.
    """

    n_negatives: int = 1000
    queue_len: int = 300
    gap: float = 0.2
    alpha: float = 0.95
    score_step: int = 1
    history_len: int = 20000
    seed: int = 0
    explain_top_k: int = 5

    def __post_init__(self) -> None:
        _check(self.n_negatives >= 1, f"n_negatives must be >= 1, got {self.n_negatives}")
        _check(self.queue_len >= 1, f"queue_len must be >= 1, got {self.queue_len}")
        _check(0.0 <= self.gap <= 1.0, f"gap must be in [0, 1], got {self.gap}")
        _check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        _check(self.score_step >= 0, f"score_step must be >= 0, got {self.score_step}")
        _check(self.history_len >= 1, f"history_len must be >= 1, got {self.history_len}")
        _check(self.explain_top_k >= 0, f"explain_top_k must be >= 0, got {self.explain_top_k}")


@dataclass(frozen=True)
class NegLabelConfig:
    """Settings of :class:`~tanl_guard.detectors.neglabel.NegLabelDetector` (Jiang et al., ICLR 2024).

    Args:
        n_negatives: how many of the farthest corpus labels to keep (split over the corpus kinds in proportion to
            their sizes, as OpenOOD-VLM does); ignored when ``share`` is set.
        share: keep this fraction of every kind instead (NegLabel's official 0.15).
        quantile: eta, the quantile of a label's cosine similarities to the ID labels that measures its distance.
        n_groups: the score is averaged over this many random groups of negatives (official 100).
        seed: seed of the grouping permutation.
    """

    n_negatives: int = 10000
    share: float | None = None
    quantile: float = 0.95
    n_groups: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.n_negatives >= 1, f"n_negatives must be >= 1, got {self.n_negatives}")
        _check(self.share is None or 0.0 < self.share <= 1.0, f"share must be in (0, 1], got {self.share}")
        _check(0.0 <= self.quantile <= 1.0, f"quantile must be in [0, 1], got {self.quantile}")
        _check(self.n_groups >= 1, f"n_groups must be >= 1, got {self.n_groups}")


@dataclass(frozen=True)
class MCMConfig:
    """Settings of :class:`~tanl_guard.detectors.mcm.MCMDetector` (Ming et al., NeurIPS 2022).

    Args:
        temperature: softmax temperature applied to the scaled logits (1 = the encoder's logit scale as is).
    """

    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check(self.temperature > 0.0, f"temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class AdaNegConfig:
    """Settings of :class:`~tanl_guard.detectors.adaneg.AdaNegDetector` (Zhang et al., NeurIPS 2024).

    Args:
        negatives: the static NegLabel selection the memories are attached to.
        memory_len: L, feature slots per label besides its text embedding.
        threshold: gamma, the fixed admission threshold.
        gap: g; cache into the predicted ID label if ``s > t + g(1 - t)``, into the arg-max negative if ``s < t - g t``.
        n_groups: groups of the NegLabel scores used inside AdaNeg.
        weight: lambda, the weight of the text-embedding score beside the proxy score.
    """

    negatives: NegLabelConfig = NegLabelConfig()
    memory_len: int = 10
    threshold: float = 0.5
    gap: float = 0.5
    n_groups: int = 5
    weight: float = 0.1

    def __post_init__(self) -> None:
        _check(self.memory_len >= 1, f"memory_len must be >= 1, got {self.memory_len}")
        _check(0.0 <= self.threshold <= 1.0, f"threshold must be in [0, 1], got {self.threshold}")
        _check(0.0 <= self.gap <= 1.0, f"gap must be in [0, 1], got {self.gap}")
        _check(self.n_groups >= 1, f"n_groups must be >= 1, got {self.n_groups}")
        _check(self.weight >= 0.0, f"weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class CalibrationConfig:
    """How a feature detector's threshold is calibrated on held-out reference images.

    Args:
        rate: the target ID acceptance rate: the threshold is the ``1 - rate`` quantile of held-out reference scores.
        n_folds: folds of the k-fold split used when the references come from a single source.
        seed: seed of the k-fold assignment.
    """

    rate: float = 0.95
    n_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        _check(0.0 < self.rate < 1.0, f"rate must be in (0, 1), got {self.rate}")
        _check(self.n_folds >= 2, f"n_folds must be >= 2, got {self.n_folds}")


@dataclass(frozen=True)
class KNNConfig:
    """Settings of :class:`~tanl_guard.detectors.knn.KNNDetector` (Sun et al., ICML 2022, cosine form).

    Args:
        k: the score uses the k-th nearest reference feature (``reduction="kth"``) or the mean of the k nearest.
        reduction: ``"kth"`` (Sun et al.) or ``"mean"``.
        calibration: how the threshold is calibrated on held-out references.
    """

    k: int = 1
    reduction: str = "kth"
    calibration: CalibrationConfig = CalibrationConfig()

    def __post_init__(self) -> None:
        _check(self.k >= 1, f"k must be >= 1, got {self.k}")
        _check(self.reduction in ("kth", "mean"), f"reduction must be 'kth' or 'mean', got {self.reduction!r}")


@dataclass(frozen=True)
class MahalanobisConfig:
    """Settings of :class:`~tanl_guard.detectors.mahalanobis.MahalanobisDetector` (Lee et al., NeurIPS 2018).

    Args:
        shrinkage: the covariance estimator: ``"ledoit-wolf"`` or ``"oas"`` (both shrink towards a scaled identity,
            which a few hundred references in 1280 dimensions need).
        normalize: L2-normalise the features before fitting and scoring.
        calibration: how the threshold is calibrated on held-out references.
    """

    shrinkage: str = "ledoit-wolf"
    normalize: bool = True
    calibration: CalibrationConfig = CalibrationConfig()

    def __post_init__(self) -> None:
        _check(self.shrinkage in ("ledoit-wolf", "oas"), f"shrinkage must be 'ledoit-wolf' or 'oas', got {self.shrinkage!r}")


def config_with_seed(config: Any, seed: int | None) -> Any:
    """A copy of a config whose ``seed`` fields (nested ones included) are set to ``seed``; unchanged for None."""
    if seed is None or not is_dataclass(config):
        return config
    changes: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "seed":
            changes[f.name] = int(seed)
        elif is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = config_with_seed(value, seed)
    return replace(config, **changes) if changes else config


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from :func:`dataclasses.asdict` output, rejecting unknown keys."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(value, dict) and hasattr(default, "__dataclass_fields__"):
            value = config_from_dict(type(default), value)
        kwargs[name] = value
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (JSON-serialisable)."""
    return asdict(config)
