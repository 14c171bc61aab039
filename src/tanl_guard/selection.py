# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""NegLabel's static negative-label selection (Jiang et al., ICLR 2024): keep the corpus labels farthest from the ID set."""

from __future__ import annotations

import math

import torch

__all__ = ["distance_to_id", "split_by_kind", "select_farthest"]


def distance_to_id(corpus: torch.Tensor, id_text: torch.Tensor, quantile: float = 0.95, chunk: int = 8192) -> torch.Tensor:
    """The eta-quantile of each corpus label's cosine similarities to the ID labels (smaller = farther from ID).

    The quantile is the element at sorted position ``floor(eta * C)`` (clipped to C - 1), as OpenOOD-VLM does.
    Computed in chunks so a 70,000-label corpus against 1,000 ID labels never holds the full similarity matrix.

    Args:
        corpus: (N, D) unit-norm label embeddings.
        id_text: (C, D) unit-norm ID embeddings.
        quantile: eta in [0, 1].
    """
    if corpus.ndim != 2 or id_text.ndim != 2 or corpus.shape[1] != id_text.shape[1]:
        raise ValueError(f"expected (N, D) and (C, D) embeddings, got {tuple(corpus.shape)} and {tuple(id_text.shape)}")
    n_id = id_text.shape[0]
    rank = min(int(math.floor(quantile * n_id)), n_id - 1) + 1  # kthvalue is 1-based
    out = torch.empty(corpus.shape[0], dtype=corpus.dtype, device=corpus.device)
    for start in range(0, corpus.shape[0], chunk):
        sims = corpus[start : start + chunk] @ id_text.T
        out[start : start + chunk] = torch.kthvalue(sims, rank, dim=1).values
    return out


def split_by_kind(total: int, kind_sizes: list[int]) -> list[int]:
    """Split ``total`` over kinds in proportion to their sizes: floors, the remainder to the largest kind."""
    pool = sum(kind_sizes)
    if pool == 0:
        return [0 for _ in kind_sizes]
    total = min(total, pool)
    counts = [math.floor(total * size / pool) for size in kind_sizes]
    largest = max(range(len(kind_sizes)), key=lambda i: kind_sizes[i])
    counts[largest] += total - sum(counts)
    return counts


def select_farthest(
    distances: torch.Tensor,
    n_select: int | None = None,
    share: float | None = None,
    kinds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the labels with the smallest distance to ID, chosen separately within each kind.

    Args:
        distances: (N,) from :func:`distance_to_id`.
        n_select: total to keep, split over kinds in proportion to their sizes (OpenOOD-VLM's rule).
        share: keep this fraction of every kind instead (NegLabel's official rule, 0.15).
        kinds: (N,) integer kind of each label (e.g. 0 = noun, 1 = adjective); None = one kind.

    Returns:
        Sorted (ascending) corpus indices of the kept labels.
    """
    if (n_select is None) == (share is None):
        raise ValueError("give exactly one of n_select and share")
    if kinds is None:
        kinds = torch.zeros(distances.shape[0], dtype=torch.long, device=distances.device)
    kind_ids = torch.unique(kinds).tolist()
    members = [torch.nonzero(kinds == k).flatten() for k in kind_ids]
    if share is not None:
        counts = [math.floor(share * m.numel()) for m in members]
    else:
        counts = split_by_kind(n_select, [m.numel() for m in members])
    kept = []
    for idx, count in zip(members, counts):
        if count > 0:
            order = torch.argsort(distances[idx], stable=True)
            kept.append(idx[order[:count]])
    if not kept:
        return torch.empty(0, dtype=torch.long, device=distances.device)
    return torch.sort(torch.cat(kept)).values
