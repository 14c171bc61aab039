# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Score functions shared by the detectors. Every score is an ``id_score``: higher = more in-distribution.

All of them take *logits* (the encoder's logit scale times cosine similarities) and accumulate in float64: at
M = 1000 negatives a float32 ``cumsum(exp(.))`` is off by up to 1.6e-5, far more than the 1e-6 we promise; in
float64 it agrees with the definition to about 1e-14.
"""

from __future__ import annotations

import torch

__all__ = ["activation_aware_score", "prefix_lengths", "grouped_neglabel_score", "mcm_score", "group_permutation"]


def prefix_lengths(n_negatives: int, step: int) -> torch.Tensor:
    """Prefix lengths ``min(j * step, M)`` for ``j = 1 .. ceil(M / step)`` (the last prefix is clipped to M)."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return torch.arange(step, n_negatives + step, step).clamp_(max=n_negatives)


def activation_aware_score(id_logits: torch.Tensor, negative_logits: torch.Tensor, step: int = 1) -> torch.Tensor:
    """TANL's activation-aware score (paper Eq. 15) in closed form.

    ``S = mean_m  sum_i e^{s_i} / (sum_i e^{s_i} + sum_{j<=m} e^{s~_j})`` over the prefixes m of the ranked
    negatives equals ``mean_m sigmoid(lse(s) - lse(s~_{1..m}))``: one cumulative sum instead of M softmaxes.

    Args:
        id_logits: (B, C) logits of the ID labels.
        negative_logits: (B, M) logits of the selected negatives, strongest activation first.
        step: 0 = a single softmax over ID + all M negatives; 1 = Eq. 15; k > 1 = average over prefixes k, 2k, ...

    Returns:
        (B,) scores in [0, 1], in the dtype of ``id_logits``.
    """
    return _score_from_id_lse(_id_lse(id_logits), negative_logits, step, id_logits.dtype)


def _id_lse(id_logits: torch.Tensor) -> torch.Tensor:
    """(B,) float64 log-sum-exp of the ID logits: the part of Eq. 15 that no selection changes."""
    return torch.logsumexp(id_logits.double(), dim=1)


def _score_from_id_lse(
    id_lse: torch.Tensor, negative_logits: torch.Tensor, step: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """:func:`activation_aware_score` given the ID log-sum-exp, so two passes over one batch compute it once."""
    neg = negative_logits.double()
    if neg.shape[1] == 0:
        return torch.ones_like(id_lse).to(out_dtype)
    if step == 0:
        return torch.sigmoid(id_lse - torch.logsumexp(neg, dim=1)).to(out_dtype)
    terms = _prefix_id_probabilities(id_lse, neg)
    if step > 1:
        terms = terms[:, prefix_lengths(neg.shape[1], step).to(neg.device) - 1]
    return terms.mean(dim=1).to(out_dtype)


# Largest |exponent| the linear-domain score lets exp() see: far inside float64's normal range (about +-708).
_LINEAR_RANGE = 600.0


def _prefix_id_probabilities(id_lse: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """(B, M) float64 ``sigmoid(lse(s) - lse(s~_1..m))`` for every prefix m of the ranked negatives.

    Computed in the linear domain, shifted by each row's largest negative logit t:
    ``E / (E + cumsum(exp(s~ - t)))`` with ``E = exp(lse(s) - t)``. That is one exp per value and a cumulative sum
    of positive float64 terms, several times faster than a running log-add-exp and at least as accurate (both
    agree with the M-softmax definition to about 1e-14). Logits so far apart that a shifted exponential could
    leave float64's normal range (beyond about 300 for unit-norm embeddings) take the log-domain path instead.
    """
    top = neg.amax(dim=1, keepdim=True)
    shift = id_lse[:, None] - top
    in_range = bool((shift.abs() <= _LINEAR_RANGE).all()) and bool((neg[:, :1] - top >= -_LINEAR_RANGE).all())
    if not in_range:
        return torch.sigmoid(id_lse[:, None] - torch.logcumsumexp(neg, dim=1))
    id_mass = torch.exp(shift)
    prefix = neg.sub(top).exp_().cumsum_(dim=1)  # every prefix sum >= its first term: never underflows
    return prefix.add_(id_mass).reciprocal_().mul_(id_mass)


def group_permutation(n_negatives: int, n_groups: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """NegLabel's grouping: a seeded permutation of the negatives, truncated to a multiple of ``n_groups``.

    Returns:
        (n_groups, M // n_groups) positions into the negative list (the last ``M mod n_groups`` are dropped).
    """
    n_groups = min(n_groups, n_negatives)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_negatives, generator=generator)
    per_group = n_negatives // n_groups
    return order[: per_group * n_groups].view(n_groups, per_group).to(device)


def grouped_neglabel_score(
    id_logits: torch.Tensor, negative_logits: torch.Tensor, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """NegLabel's score ``sum e^{s_i} / (sum e^{s_i} + sum_{j in group} e^{s~_j})``, averaged over groups.

    Args:
        id_logits: (B, C) ID logits.
        negative_logits: (B, M) negative logits.
        groups: (G, K) positions into the M negatives (see :func:`group_permutation`); None = one group of all.
    """
    out_dtype = id_logits.dtype
    a = torch.logsumexp(id_logits.double(), dim=1)
    neg = negative_logits.double()
    if groups is None:
        return torch.sigmoid(a - torch.logsumexp(neg, dim=1)).to(out_dtype)
    per_group = torch.logsumexp(neg[:, groups], dim=2)  # (B, G)
    return torch.sigmoid(a[:, None] - per_group).mean(dim=1).to(out_dtype)


def mcm_score(id_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MCM: the maximum softmax probability over the ID labels only."""
    return torch.softmax(id_logits.double() / temperature, dim=1).amax(dim=1).to(id_logits.dtype)
