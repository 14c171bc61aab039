# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""AdaNeg (Zhang et al., NeurIPS 2024): negative labels whose embeddings adapt to the test stream.

Each label (C ID + M NegLabel negatives) has a memory of its text embedding plus up to L cached test features.
Confident images are cached into their predicted ID label or their arg-max negative label; the label's proxy is
the normalised mean of its memory, and the score combines NegLabel's score on the proxies with the text score.
Entropy-based replacement: when a memory is full, the slot with the highest entropy is replaced if the new
sample's entropy is lower (entropy of the softmax over the ID logits for ID labels, over the negative logits for
negative labels).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import AdaNegConfig, config_to_dict
from ..scores import group_permutation, grouped_neglabel_score
from .base import DetectorStep, LabelBank, LabelDetector
from .neglabel import neglabel_selection

__all__ = ["AdaNegDetector"]


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


class AdaNegDetector(LabelDetector):
    """Online detector with per-label feature memories (proxies) over NegLabel's static negatives.

    The returned score is ``(S_proxy + lambda * S_text) / (1 + lambda)``: the paper's sum rescaled to [0, 1]
    (a monotone change that leaves every ranking metric as it is).

    Args:
        id_text: (C, D) unit-norm ID label embeddings.
        corpus: (N, D) unit-norm corpus label embeddings.
        logit_scale: kappa, the encoder's logit scale.
        config: memory size, admission threshold and gap, groups, weight, and the NegLabel selection.
        kinds: (N,) integer kind per corpus label for the NegLabel selection.
    """

    name = "adaneg"
    paper = "Zhang et al., Learning Transferable Negative Prompts for OOD Detection (AdaNeg), NeurIPS 2024"
    config_class = AdaNegConfig

    def __init__(
        self,
        id_text: torch.Tensor,
        corpus: torch.Tensor,
        logit_scale: float,
        config: AdaNegConfig | None = None,
        *,
        kinds: torch.Tensor | None = None,
    ) -> None:
        super().__init__(id_text, corpus, logit_scale)
        if self.bank.n_corpus == 0:
            raise ValueError("AdaNeg needs a non-empty corpus of candidate negative labels")
        self.config = config if config is not None else AdaNegConfig()
        bank = self.bank
        self.selected = neglabel_selection(bank.id_text, bank.corpus, self.config.negatives, kinds)
        self._columns = torch.cat([torch.arange(bank.n_id, device=bank.device), bank.n_id + self.selected])
        self._text = bank.weights[self._columns]  # (C + M, D): the memories' text slots
        self.groups = group_permutation(self.selected.numel(), self.config.n_groups, self.config.negatives.seed, bank.device)
        self.reset()

    def reset(self, **kwargs: Any) -> None:
        n_labels, slots = self._text.shape[0], self.config.memory_len
        self.memory = self._text.new_zeros(n_labels, slots, self._text.shape[1])
        self.filled = torch.zeros(n_labels, dtype=torch.long, device=self._text.device)
        self.entropies = self._text.new_full((n_labels, slots), float("inf"), dtype=torch.float64)
        self.n_seen = 0

    def proxies(self) -> torch.Tensor:
        """(C + M, D) normalised means of each label's text embedding and cached features."""
        total = self._text + self.memory.sum(dim=1)  # empty slots are zeros
        return torch.nn.functional.normalize(total / (1 + self.filled)[:, None].to(total.dtype), dim=1)

    def _proxy_logits(self, features: torch.Tensor) -> torch.Tensor:
        # through a LabelBank like every other product, so a sample's logits do not depend on its batch
        return LabelBank.from_weights(self.proxies(), self.bank.n_id, self.bank.logit_scale).logits(features)

    def _cache(self, label: int, feature: torch.Tensor, entropy: float) -> None:
        count = int(self.filled[label])
        if count < self.config.memory_len:
            self.memory[label, count] = feature
            self.entropies[label, count] = entropy
            self.filled[label] = count + 1
            return
        worst = int(torch.argmax(self.entropies[label]))
        if entropy < float(self.entropies[label, worst]):
            self.memory[label, worst] = feature
            self.entropies[label, worst] = entropy

    def step(self, image_features: torch.Tensor) -> DetectorStep:
        features = self.bank.prepare(image_features)
        cfg, n_id = self.config, self.bank.n_id
        text_logits = self.bank.logits(features, self._columns)
        text_scores = grouped_neglabel_score(text_logits[:, :n_id], text_logits[:, n_id:], self.groups)

        low, high = cfg.threshold - cfg.gap * cfg.threshold, cfg.threshold + cfg.gap * (1.0 - cfg.threshold)
        id_entropy, neg_entropy = _entropy(text_logits[:, :n_id]), _entropy(text_logits[:, n_id:])
        id_label, neg_label = text_logits[:, :n_id].argmax(dim=1), n_id + text_logits[:, n_id:].argmax(dim=1)
        for i in range(features.shape[0]):
            if float(text_scores[i]) > high:
                self._cache(int(id_label[i]), features[i], float(id_entropy[i]))
            elif float(text_scores[i]) < low:
                self._cache(int(neg_label[i]), features[i], float(neg_entropy[i]))

        proxy_logits = self._proxy_logits(features)
        proxy_scores = grouped_neglabel_score(proxy_logits[:, :n_id], proxy_logits[:, n_id:], self.groups)
        scores = (proxy_scores + cfg.weight * text_scores) / (1.0 + cfg.weight)
        id_probs = torch.softmax(text_logits[:, :n_id], 1) + cfg.weight * torch.softmax(proxy_logits[:, :n_id], 1)
        top = torch.topk(proxy_logits[:, n_id:], min(5, self.selected.numel()), dim=1).indices
        self.n_seen += int(features.shape[0])
        return DetectorStep(
            scores=scores, predictions=id_probs.argmax(dim=1), threshold=cfg.threshold, top_negatives=self.selected[top]
        )

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            config=config_to_dict(self.config),
            memory=self.memory.cpu().clone(),
            filled=self.filled.cpu().clone(),
            entropies=self.entropies.cpu().clone(),
            n_seen=self.n_seen,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_header(state)
        if tuple(state["memory"].shape) != tuple(self.memory.shape):
            raise ValueError("AdaNeg state has another memory shape")
        self.memory = state["memory"].to(self.memory)
        self.filled = state["filled"].to(self.filled)
        self.entropies = state["entropies"].to(self.entropies)
        self.n_seen = int(state["n_seen"])

    def snapshot(self, n_selected: int = 20) -> dict[str, Any]:
        # from the counts alone: the full state holds every memory (hundreds of MB at ImageNet scale)
        summary = {"detector": self.name, "config": config_to_dict(self.config), "filled": self.filled.cpu(),
                   "n_seen": self.n_seen}
        return self.describe_state(summary, n_selected)

    @classmethod
    def describe_state(cls, state: dict[str, Any], n_selected: int = 20) -> dict[str, Any]:
        """Cached features per memory (ID labels, negative labels) and images seen."""
        out = super().describe_state(state, n_selected)
        filled = state["filled"]
        out.update(cached=int(filled.sum()), labels_with_cache=int((filled > 0).sum()), images=int(state["n_seen"]))
        return out
