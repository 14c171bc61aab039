# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Mahalanobis distance on image features with a shrinkage covariance (Lee et al., NeurIPS 2018).

One mean per ID label that has references and one shared ("tied") covariance of the features centred on their
label's mean, shrunk towards a scaled identity by Ledoit-Wolf or OAS (:mod:`tanl_guard.covariance`): a few hundred
references in 1280 dimensions leave the empirical covariance singular. The distance is to the nearest label mean;
the score maps it to [0, 1] as ``1 / (1 + d^2 / F)``.
"""

from __future__ import annotations

import torch

from ..config import MahalanobisConfig
from ..covariance import ledoit_wolf, oas
from .feature import FeatureDetector

__all__ = ["MahalanobisDetector"]


class MahalanobisDetector(FeatureDetector):
    """Class-conditional Mahalanobis distance with a tied shrinkage covariance; fit with :meth:`fit`.

    Args:
        config: the shrinkage estimator, feature normalisation and the calibration.

    Attributes:
        means: (K, F) per-label means (labels without references are skipped).
        covariance: (F, F) the shrunk covariance.
        shrinkage: its shrinkage coefficient.
    """

    name = "mahalanobis"
    paper = "Lee et al., A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks, NeurIPS 2018"
    config_class = MahalanobisConfig

    def __init__(self, config: MahalanobisConfig | None = None) -> None:
        super().__init__(config)
        self.means: torch.Tensor | None = None
        self.mean_labels: torch.Tensor | None = None
        self.covariance: torch.Tensor | None = None
        self.shrinkage: float | None = None
        self._whiten: torch.Tensor | None = None

    def _inputs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(features, dim=1) if self.config.normalize else features

    def _fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        x = self._inputs(features)
        present = torch.unique(labels)
        means = torch.stack([x[labels == c].mean(dim=0) for c in present])
        centred = x - means[torch.searchsorted(present, labels)]
        estimate = ledoit_wolf if self.config.shrinkage == "ledoit-wolf" else oas
        covariance, shrinkage = estimate(centred, assume_centered=True)
        # d^2 = |L^-1 (x - mu)|^2 with covariance = L L^T; a tiny ridge only if shrinkage left it singular
        try:
            chol = torch.linalg.cholesky(covariance)
        except RuntimeError:
            ridge = 1e-9 * float(torch.trace(covariance)) / covariance.shape[0] + 1e-12
            chol = torch.linalg.cholesky(covariance + ridge * torch.eye(covariance.shape[0], dtype=covariance.dtype))
        eye = torch.eye(chol.shape[0], dtype=chol.dtype, device=chol.device)
        self._whiten = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1
        self.means, self.mean_labels = means, present
        self.covariance, self.shrinkage = covariance, float(shrinkage)

    def squared_distances(self, features: torch.Tensor) -> torch.Tensor:
        """(B, K) squared Mahalanobis distances to each label mean.

        Args:
            features: (B, F) features.
        """
        if self.means is None:
            raise RuntimeError("MahalanobisDetector must be fit on reference features first")
        return self._distances(self._prepare(features, "image_features"))

    def _distances(self, features: torch.Tensor) -> torch.Tensor:
        assert self.means is not None and self._whiten is not None
        x = self._inputs(features)
        diffs = x[:, None, :] - self.means[None, :, :]  # (B, K, F)
        return ((diffs @ self._whiten.T) ** 2).sum(dim=-1)

    def _score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.mean_labels is not None
        d2, nearest = self._distances(features).min(dim=1)
        return 1.0 / (1.0 + d2 / features.shape[1]), self.mean_labels[nearest]
