# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""MCM: Maximum Concept Matching (Ming et al., NeurIPS 2022), the zero-shot baseline without negative labels."""

from __future__ import annotations

from typing import Any

import torch

from ..config import MCMConfig, config_to_dict
from ..scores import mcm_score
from .base import DetectorStep, LabelDetector

__all__ = ["MCMDetector"]


class MCMDetector(LabelDetector):
    """Maximum softmax probability over the ID labels only; stateless.

    Args:
        id_text: (C, D) unit-norm ID label embeddings.
        corpus: ignored by the score (may be empty); accepted so every detector is built the same way.
        logit_scale: kappa, the encoder's logit scale.
        config: the softmax temperature.
        kinds: accepted for the shared constructor shape; unused.
    """

    name = "mcm"
    paper = "Ming et al., Delving into Out-of-Distribution Detection with Vision-Language Representations, NeurIPS 2022"
    config_class = MCMConfig

    def __init__(
        self,
        id_text: torch.Tensor,
        corpus: torch.Tensor | None,
        logit_scale: float,
        config: MCMConfig | None = None,
        *,
        kinds: torch.Tensor | None = None,
    ) -> None:
        corpus = id_text.new_empty(0, id_text.shape[1]) if corpus is None else corpus
        super().__init__(id_text, corpus, logit_scale)
        self.config = config if config is not None else MCMConfig()
        self._id_columns = torch.arange(self.bank.n_id, device=self.bank.device)

    def step(self, image_features: torch.Tensor) -> DetectorStep:
        features = self.bank.prepare(image_features)
        logits = self.bank.logits(features, self._id_columns)
        return DetectorStep(scores=mcm_score(logits, self.config.temperature), predictions=logits.argmax(dim=1))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["config"] = config_to_dict(self.config)
        return state
