# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""TANL's automatic threshold: an Otsu-style split of the score history on the grid 0, 0.01, ..., 0.99."""

from __future__ import annotations

import torch

__all__ = ["OTSU_GRID", "otsu_threshold", "otsu_criteria"]

# torch.arange in float32, exactly as the reference builds it (not float32(k / 100) for every k).
OTSU_GRID = torch.arange(0, 1, 0.01)


def otsu_criteria(history: torch.Tensor, grid: torch.Tensor = OTSU_GRID) -> torch.Tensor:
    """Within-class variance ``w0 Var(H < t) + w1 Var(H >= t)`` for every grid value t (float64).

    Population variances, class fractions as weights, +inf where one side is empty. The criterion is computed
    once per distinct partition, so grid values that split the history identically get bit-identical values.
    """
    values = history.detach().double().flatten().cpu()
    n = values.numel()
    if n == 0:
        return torch.full((grid.numel(),), float("inf"), dtype=torch.float64)
    ordered, _ = torch.sort(values)
    # number of scores below each threshold, comparing in the history's dtype like ``H >= t`` would
    below = torch.searchsorted(ordered, grid.to(history.dtype).double(), side="left")
    centred = ordered - ordered.mean()  # centring keeps the prefix-sum variances accurate
    s1 = torch.cat([centred.new_zeros(1), torch.cumsum(centred, 0)])
    s2 = torch.cat([centred.new_zeros(1), torch.cumsum(centred * centred, 0)])
    # All grid values at once: elementwise float64 arithmetic, so grid values with the same partition (the same
    # ``below``) get bit-identical criteria. Empty sides divide by zero here and are replaced by +inf below.
    k = below.double()
    lo_n, hi_n = k, n - k
    lo_mean, hi_mean = s1[below] / lo_n, (s1[n] - s1[below]) / hi_n
    lo_var = (s2[below] / lo_n - lo_mean * lo_mean).clamp_min(0.0)
    hi_var = ((s2[n] - s2[below]) / hi_n - hi_mean * hi_mean).clamp_min(0.0)
    criteria = (lo_n / n) * lo_var + (hi_n / n) * hi_var
    criteria = torch.where((below == 0) | (below == n), float("inf"), criteria)
    return criteria


def otsu_threshold(history: torch.Tensor, grid: torch.Tensor = OTSU_GRID) -> float:
    """The grid value minimising :func:`otsu_criteria`; among exact ties, the one at position ``count // 2``."""
    criteria = otsu_criteria(history, grid)
    tied = torch.nonzero(criteria == criteria.min()).flatten()
    return float(grid[tied[tied.numel() // 2]])
