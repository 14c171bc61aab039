"""Shared fixtures of the engine tests: a controlled mixture of ID and OOD embeddings."""

from __future__ import annotations

import pytest
import torch


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


class Mixture:
    """ID images near the ID label embeddings, OOD images near a few groups of corpus labels."""

    def __init__(self, n_id=12, n_corpus=1500, dim=48, dtype=torch.float64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.g = g
        self.dtype = dtype
        self.id_text = unit(torch.randn(n_id, dim, generator=g, dtype=torch.float64)).to(dtype)
        self.corpus = unit(torch.randn(n_corpus, dim, generator=g, dtype=torch.float64)).to(dtype)
        self.ood_centres = self.corpus[torch.randperm(n_corpus, generator=g)[:6]]
        self.noise = unit(torch.randn(15, dim, generator=g, dtype=torch.float64)).to(dtype)

    def batch(self, n: int, ood_fraction: float = 0.3, spread: float = 0.35):
        is_ood = torch.rand(n, generator=self.g) < ood_fraction
        centres = torch.where(
            is_ood[:, None],
            self.ood_centres[torch.randint(0, len(self.ood_centres), (n,), generator=self.g)],
            self.id_text[torch.randint(0, len(self.id_text), (n,), generator=self.g)],
        )
        noise = spread * torch.randn(centres.shape, generator=self.g, dtype=torch.float64).to(self.dtype)
        return unit(centres + noise), is_ood


@pytest.fixture
def mixture() -> Mixture:
    return Mixture()
