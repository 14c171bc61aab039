# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""kNN on image features (Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022).

Features are L2-normalised and compared by cosine; the score is the similarity to the k-th nearest reference
(or the mean over the k nearest), mapped to [0, 1] as ``(1 + cos) / 2``. Non-parametric: no assumption on the
shape of the ID distribution, which suits references drawn from several scanners and protocols.
"""

from __future__ import annotations

import torch

from ..config import KNNConfig
from .feature import FeatureDetector

__all__ = ["KNNDetector"]


class KNNDetector(FeatureDetector):
    """Cosine kNN against reference ID features; fit with :meth:`fit`, static afterwards.

    Args:
        config: k, the reduction over the k nearest, and the calibration.

    Example::

        knn = KNNDetector(KNNConfig(k=1))
        knn.fit(reference_features, sources=reference_volumes)   # calibrates the threshold, leave-one-source-out
        step = knn.step(features)                                 # step.scores >= step.threshold: accepted
    """

    name = "knn"
    paper = "Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022"
    config_class = KNNConfig

    def __init__(self, config: KNNConfig | None = None) -> None:
        super().__init__(config)
        self.references: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def _fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.references = torch.nn.functional.normalize(features, dim=1)
        self.labels = labels

    def kneighbors(self, features: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine distances (``1 - cos``) to the k nearest references and their indices, nearest first.

        Args:
            features: (B, F) features.
            k: neighbours (``config.k`` when None; clipped to the number of references).
        """
        if self.references is None:
            raise RuntimeError("KNNDetector must be fit on reference features first")
        return self._neighbours(self._prepare(features, "image_features"), k or self.config.k)

    def _neighbours(self, features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.references is not None
        sims = torch.nn.functional.normalize(features, dim=1) @ self.references.T
        top = torch.topk(sims, min(int(k), sims.shape[1]), dim=1)
        return 1.0 - top.values, top.indices

    def _score(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.labels is not None
        distances, indices = self._neighbours(features, self.config.k)
        distance = distances[:, -1] if self.config.reduction == "kth" else distances.mean(dim=1)
        scores = (1.0 - 0.5 * distance).clamp(0.0, 1.0)  # (1 + cos) / 2
        return scores, self.labels[indices[:, 0]]
