# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""NegLabel (Jiang et al., ICLR 2024): a static set of distant negative labels and a grouped score."""

from __future__ import annotations

from typing import Any

import torch

from ..config import NegLabelConfig, config_to_dict
from ..scores import group_permutation, grouped_neglabel_score
from ..selection import distance_to_id, select_farthest
from .base import DetectorStep, LabelDetector

__all__ = ["NegLabelDetector", "neglabel_selection"]


def neglabel_selection(
    id_text: torch.Tensor, corpus: torch.Tensor, config: NegLabelConfig, kinds: torch.Tensor | None = None
) -> torch.Tensor:
    """NegLabel's static selection: the corpus labels farthest from the ID set, per kind (sorted indices)."""
    distances = distance_to_id(corpus, id_text, config.quantile)
    if config.share is not None:
        return select_farthest(distances, share=config.share, kinds=kinds)
    return select_farthest(distances, n_select=config.n_negatives, kinds=kinds)


class NegLabelDetector(LabelDetector):
    """Scores against a fixed set of negative labels chosen once, far from the ID labels; stateless.

    Args:
        id_text: (C, D) unit-norm ID label embeddings.
        corpus: (N, D) unit-norm corpus label embeddings.
        logit_scale: kappa, the encoder's logit scale.
        config: selection size, quantile, grouping.
        kinds: (N,) integer kind per corpus label (e.g. 0 noun, 1 adjective): selection runs per kind.
        selected: explicit corpus indices to use instead of the distance selection.
    """

    name = "neglabel"
    paper = "Jiang et al., Negative Label Guided OOD Detection with Pretrained Vision-Language Models, ICLR 2024"
    config_class = NegLabelConfig

    def __init__(
        self,
        id_text: torch.Tensor,
        corpus: torch.Tensor,
        logit_scale: float,
        config: NegLabelConfig | None = None,
        *,
        kinds: torch.Tensor | None = None,
        selected: torch.Tensor | None = None,
    ) -> None:
        super().__init__(id_text, corpus, logit_scale)
        if self.bank.n_corpus == 0:
            raise ValueError("NegLabel needs a non-empty corpus of candidate negative labels")
        self.config = config if config is not None else NegLabelConfig()
        if selected is None:
            selected = neglabel_selection(self.bank.id_text, self.bank.corpus, self.config, kinds)
        self.selected = torch.as_tensor(selected, dtype=torch.long, device=self.bank.device)
        if self.selected.numel() == 0:
            raise ValueError("the NegLabel selection is empty")
        self.groups = group_permutation(self.selected.numel(), self.config.n_groups, self.config.seed, self.bank.device)
        self._columns = torch.cat([torch.arange(self.bank.n_id, device=self.bank.device), self.bank.n_id + self.selected])

    def step(self, image_features: torch.Tensor) -> DetectorStep:
        features = self.bank.prepare(image_features)
        logits = self.bank.logits(features, self._columns)
        n_id = self.bank.n_id
        scores = grouped_neglabel_score(logits[:, :n_id], logits[:, n_id:], self.groups)
        top = torch.topk(logits[:, n_id:], min(5, self.selected.numel()), dim=1).indices
        return DetectorStep(scores=scores, predictions=logits[:, :n_id].argmax(dim=1), top_negatives=self.selected[top])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(config=config_to_dict(self.config), selected=self.selected.cpu().clone())
        return state

    @classmethod
    def describe_state(cls, state: dict[str, Any], n_selected: int = 20) -> dict[str, Any]:
        """The static selection's size and its first corpus indices."""
        out = super().describe_state(state, n_selected)
        out.update(n_selected=int(state["selected"].numel()),
                   selected=[int(i) for i in state["selected"][:n_selected].tolist()])
        return out
