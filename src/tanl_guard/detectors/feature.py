# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Feature detectors: fit on reference ID images' features, threshold calibrated on held-out references.

A feature detector is static once fit: it scores every image against the references alone, so it does not drift
with the stream and needs no state beyond its fit. Its threshold is calibrated at fit time on references the fit
did not see: **leave-one-source-out** when the references come from several sources (volumes, series, studies,
scanners), **k-fold** otherwise. Why held out by source: slices cut from one volume are near-duplicates of each
other (cosine 0.80-0.85 between template slices, 0.50-0.60 from clinical brain MR to them), so a threshold
calibrated on in-source neighbours accepts only scans that look like that one volume.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any

import torch

from ..config import CalibrationConfig, config_from_dict, config_to_dict
from .base import Detector, DetectorStep

__all__ = ["FeatureDetector", "held_out_splits"]

_STATE_FORMAT = 1
# Encoders give features that differ in the last bits with the batch composition and the thread count (about 6e-8
# for the surrogate), so a fit in another process is recognised as the same fit by its summary within this bound.
FIT_TOLERANCE = 1e-4


def held_out_splits(
    n: int, sources: Any = None, n_folds: int = 5, seed: int = 0
) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The (fit rows, held-out rows) pairs of the calibration.

    Args:
        n: number of references.
        sources: per reference, a hashable source id; with two or more distinct sources each source is held out
            in turn (leave-one-source-out). None or a single source: k-fold over a seeded permutation.
        n_folds: k of the k-fold split (clipped to ``n``).
        seed: seed of the k-fold permutation.

    Returns:
        (``"leave-one-source-out"`` or ``"k-fold"``, list of (fit indices, held-out indices)).
    """
    if n < 2:
        raise ValueError(f"calibration needs at least 2 reference images, got {n}")
    if sources is not None:
        sources = list(sources)
        if len(sources) != n:
            raise ValueError(f"sources has {len(sources)} entries for {n} references")
        distinct = list(dict.fromkeys(sources))
        if len(distinct) >= 2:
            splits = []
            for source in distinct:
                held = torch.tensor([i for i, s in enumerate(sources) if s == source], dtype=torch.long)
                fit = torch.tensor([i for i, s in enumerate(sources) if s != source], dtype=torch.long)
                splits.append((fit, held))
            return "leave-one-source-out", splits
    k = min(int(n_folds), n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    folds = [order[i::k] for i in range(k)]
    splits = [(torch.sort(torch.cat([f for j, f in enumerate(folds) if j != i])).values, torch.sort(folds[i]).values)
              for i in range(k)]
    return "k-fold", splits


def _fingerprint(features: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{tuple(features.shape)}:{features.dtype}".encode())
    digest.update(features.detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fit_summary(features: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """What identifies a fit up to the encoder's last-bit noise: the labels (exactly), and per label the mean and
    the root-mean-square of the reference features (aggregates: no reference's own features)."""
    digest = hashlib.blake2b(labels.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    x, labels = features.detach().double().cpu(), labels.detach().cpu()
    groups = [x[labels == c] for c in range(int(labels.max()) + 1)]
    return {"shape": list(features.shape), "labels": digest,
            "means": torch.stack([g.mean(dim=0) for g in groups]),
            "rms": torch.stack([g.pow(2).mean(dim=0).sqrt() for g in groups])}


def _same_fit(saved: Any, current: dict[str, Any] | None) -> bool:
    if not isinstance(saved, dict) or current is None:
        return False
    if saved.get("shape") != current["shape"] or saved.get("labels") != current["labels"]:
        return False
    return all(
        isinstance(saved.get(key), torch.Tensor) and saved[key].shape == current[key].shape
        and float((saved[key].double() - current[key]).abs().max()) <= FIT_TOLERANCE
        for key in ("means", "rms")
    )


class FeatureDetector(Detector):
    """Base of the detectors that score image features against reference ID features (kNN, Mahalanobis).

    Subclasses implement :meth:`_fit` and :meth:`_score` (float64 in and out); this class validates input, calibrates
    the threshold on held-out references and keeps the operating point in :attr:`calibration`.

    Args:
        config: the detector's config (it carries a :class:`~tanl_guard.config.CalibrationConfig` as
            ``calibration``).

    Attributes:
        threshold: the calibrated threshold on the score (None before :meth:`fit` with calibration).
        calibration: the operating point: target rate, method, folds, references, held-out score quantiles.
        spread: median held-out reference score minus the threshold: the score's scale for fusion (None before).
        n_labels: ID labels the references carry.
    """

    input = "features"
    needs_fit = True

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.threshold: float | None = None
        self.spread: float | None = None
        self.calibration: dict[str, Any] | None = None
        self.n_labels = 0
        self.n_reference = 0
        self.dim: int | None = None
        self._fit_key: str | None = None
        self._fit_summary: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: Any = None, **inputs: Any) -> FeatureDetector:
        """Build from a config; label-space inputs (``id_embeddings`` ...) are accepted and ignored."""
        return cls(config)

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit on (n, F) float64 features with (n,) label indices in [0, n_labels)."""

    @abc.abstractmethod
    def _score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F) float64 features -> ((B,) float64 id_scores in [0, 1], (B,) nearest label index)."""

    # ------------------------------------------------------------------ fit and calibration
    @property
    def fitted(self) -> bool:
        return self._fit_key is not None

    def _prepare(self, features: Any, name: str = "features") -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
            raise ValueError(f"{name} must be a floating-point (n, F) tensor, got {getattr(features, 'shape', None)}")
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(f"{name} has dimension {features.shape[1]}, the references had {self.dim}")
        if features.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return features.detach().to(torch.float64)

    def fit(
        self, features: torch.Tensor, labels: Any = None, sources: Any = None, calibrate: bool = True
    ) -> dict[str, Any] | None:
        """Fit on reference features and (by default) calibrate the threshold on held-out references.

        Args:
            features: (n, F) features of reference ID images.
            labels: (n,) ID label index per reference (0 .. n_labels - 1); None: all one label.
            sources: per reference, its source (volume, series, study, folder): with several sources the
                calibration holds out one source at a time; None or one source: k-fold.
            calibrate: set :attr:`threshold` from held-out scores (False: fit only, threshold unchanged).

        Returns:
            the operating point (also kept in :attr:`calibration`), or None without calibration.
        """
        self.dim = None
        x = self._prepare(features, "reference features")
        labels = torch.zeros(x.shape[0], dtype=torch.long) if labels is None else torch.as_tensor(labels).long().cpu()
        if labels.shape != (x.shape[0],) or int(labels.min()) < 0:
            raise ValueError(f"labels must hold one non-negative index per reference ({x.shape[0]})")
        self.n_labels = int(labels.max()) + 1
        labels = labels.to(x.device)
        result = None
        if calibrate:
            result = self._calibrate(x, labels, sources)
        self._fit(x, labels)
        self.dim = int(x.shape[1])
        self.n_reference = int(x.shape[0])
        self._fit_key = _fingerprint(x, labels)
        self._fit_summary = _fit_summary(x, labels)
        return result

    def _calibrate(self, x: torch.Tensor, labels: torch.Tensor, sources: Any) -> dict[str, Any]:
        cal: CalibrationConfig = self.config.calibration
        method, splits = held_out_splits(x.shape[0], sources, cal.n_folds, cal.seed)
        held_scores = []
        for fit_rows, held_rows in splits:
            fold = type(self)(self.config)
            fold.n_labels = self.n_labels
            fit_rows, held_rows = fit_rows.to(x.device), held_rows.to(x.device)
            fold._fit(x[fit_rows], labels[fit_rows])
            held_scores.append(fold._score(x[held_rows])[0])
        scores = torch.cat(held_scores).cpu()
        threshold = float(torch.quantile(scores, 1.0 - cal.rate, interpolation="lower"))
        median = float(torch.quantile(scores, 0.5))
        self.threshold = threshold
        self.spread = max(median - threshold, 1e-6)
        self.calibration = {
            "rate": cal.rate,
            "method": method,
            "folds": len(splits),
            "n_reference": int(x.shape[0]),
            "threshold": threshold,
            "held_out_median": median,
            "held_out_min": float(scores.min()),
            "held_out_accepted": float((scores >= threshold).double().mean()),
        }
        return dict(self.calibration)

    # ------------------------------------------------------------------ scoring
    def score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F) features -> ((B,) float64 id_scores in [0, 1], higher = more in-distribution; (B,) label index)."""
        if not self.fitted:
            raise RuntimeError(f"detector {self.name!r} must be fit on reference features first")
        return self._score(self._prepare(features, "image_features"))

    def step(self, image_features: torch.Tensor) -> DetectorStep:
        """Score a batch; a feature detector does not learn from the stream."""
        scores, predictions = self.score(image_features)
        return DetectorStep(scores=scores, predictions=predictions, threshold=self.threshold)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The fit's fingerprint and summary (per-label feature means and root-mean-squares) and the operating
        point; the references' own features are not saved (small checkpoints): a detector is fit again from the same
        references, then loaded.
        """
        state = super().state_dict()
        state.update(format=_STATE_FORMAT, config=config_to_dict(self.config), fit=self._fit_key,
                     fit_summary=self._fit_summary,
                     threshold=self.threshold, spread=self.spread,
                     calibration=dict(self.calibration) if self.calibration else None, n_reference=self.n_reference)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the operating point of a detector fit on the same references: the same features bit for bit, or
        (a fit in another process, whose encoder rounds differently) the same labels and per-label feature means and
        root-mean-squares within :data:`FIT_TOLERANCE`."""
        self._check_state_header(state)
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported {self.name} state format {state.get('format')!r}")
        if config_from_dict(self.config_class, state["config"]) != self.config:
            raise ValueError(f"state was saved with another {self.config_class.__name__}")
        if state.get("fit") != self._fit_key and not _same_fit(state.get("fit_summary"), self._fit_summary):
            raise ValueError(f"state was saved by a {self.name} detector fit on other reference features")
        self.threshold = state["threshold"]
        self.spread = state["spread"]
        self.calibration = dict(state["calibration"]) if state.get("calibration") else None

    @classmethod
    def describe_state(cls, state: dict[str, Any], n_selected: int = 20) -> dict[str, Any]:
        """Threshold, references and the calibration's operating point."""
        out = super().describe_state(state, n_selected)
        out.update(threshold=state.get("threshold"), n_reference=state.get("n_reference"),
                   calibration=state.get("calibration"))
        return out
