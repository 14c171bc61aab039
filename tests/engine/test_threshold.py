"""Otsu threshold: grid, population variances, exact ties resolved to the middle."""

from __future__ import annotations

import torch
from reference_tanl import brute_otsu

from tanl_guard.threshold import OTSU_GRID, otsu_criteria, otsu_threshold


def test_grid_is_float32_arange():
    assert OTSU_GRID.dtype == torch.float32
    assert OTSU_GRID.numel() == 100
    assert torch.equal(OTSU_GRID, torch.arange(0, 1, 0.01))


def test_matches_brute_force_on_random_histories():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = int(torch.randint(2, 400, (1,), generator=g))
        kind = trial % 4
        if kind == 0:
            h = torch.rand(n, generator=g)
        elif kind == 1:  # bimodal, like ID near 1 and OOD near 0
            h = torch.cat([torch.rand(n // 2, generator=g) * 0.2, 0.8 + torch.rand(n - n // 2, generator=g) * 0.2])
        elif kind == 2:  # values sitting exactly on grid points
            h = OTSU_GRID[torch.randint(0, 100, (n,), generator=g)]
        else:  # heavy ties
            h = torch.tensor([0.1, 0.1, 0.9, 0.9, 0.5])[torch.randint(0, 5, (n,), generator=g)]
        assert otsu_threshold(h) == brute_otsu(h), (trial, h[:10])


def test_ties_pick_the_middle_minimiser():
    # Two clusters with nothing in (0.2, 0.85): every grid value 0.21 .. 0.85 gives the same partition.
    h = torch.tensor([0.1, 0.15, 0.2, 0.85, 0.9, 0.95])
    crit = otsu_criteria(h)
    tied = torch.nonzero(crit == crit.min()).flatten()
    assert len(tied) == 65
    assert otsu_threshold(h) == float(OTSU_GRID[tied[32]])
    even = torch.tensor([0.1, 0.15, 0.2, 0.845, 0.9, 0.95])  # 64 tied grid values: the upper middle
    crit = otsu_criteria(even)
    tied = torch.nonzero(crit == crit.min()).flatten()
    assert len(tied) == 64 and otsu_threshold(even) == float(OTSU_GRID[tied[32]])


def test_degenerate_histories():
    assert otsu_threshold(torch.tensor([0.5, 0.5, 0.5])) == brute_otsu(torch.tensor([0.5, 0.5, 0.5]))
    assert otsu_threshold(torch.empty(0)) == float(OTSU_GRID[50])
    assert torch.isinf(otsu_criteria(torch.tensor([0.3]))).all()


def test_float64_history_compares_against_float32_grid_values():
    h = torch.tensor([0.29, 0.3, 0.31, 0.7], dtype=torch.float64)
    assert otsu_threshold(h) == brute_otsu(h)


def test_full_history_matches_brute_force():
    # 20,000 scores (the history's cap) in two clusters plus exact grid values: the vectorised criteria must give
    # every grid value of one partition the same bits, or the tie-break would move.
    g = torch.Generator().manual_seed(5)
    h = torch.cat([
        torch.rand(12000, generator=g) * 0.3,
        0.7 + torch.rand(7000, generator=g) * 0.3,
        OTSU_GRID[torch.randint(0, 100, (1000,), generator=g)],
    ])
    assert otsu_threshold(h) == brute_otsu(h)
    crit = otsu_criteria(h)
    below = torch.searchsorted(torch.sort(h.double()).values, OTSU_GRID.double())
    for k in torch.unique(below):
        same = crit[below == k]
        assert bool((same == same[0]).all())
