"""The closed-form scores against their literal definitions."""

from __future__ import annotations

import pytest
import torch
from reference_tanl import m_softmax_score

from tanl_guard.scores import (
    _id_lse,
    _prefix_id_probabilities,
    activation_aware_score,
    group_permutation,
    grouped_neglabel_score,
    mcm_score,
    prefix_lengths,
)


def _logits(b, c, m, dtype, seed=0, scale=100.0):
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(b, c + m, generator=g, dtype=torch.float64) * 0.4  # CLIP-like cosines in [0, 0.4]
    z = (scale * cos).to(dtype)
    return z[:, :c], z[:, c:]


@pytest.mark.parametrize("step", [0, 1, 7, 1000, 1500])
def test_activation_aware_score_matches_m_softmax_definition(step):
    # M = 1000 is the paper's default; step 7 does not divide it, so the last prefix is clipped.
    id_logits, neg_logits = _logits(6, 50, 1000, torch.float64)
    expected = m_softmax_score(id_logits, neg_logits, step)
    got = activation_aware_score(id_logits, neg_logits, step)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_float32_score_within_1e6_of_exact():
    id32, neg32 = _logits(8, 1000, 1000, torch.float32, seed=3)
    exact = m_softmax_score(id32.double(), neg32.double(), 1)
    got = activation_aware_score(id32, neg32, 1)
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() < 1e-6
    # the naive float32 cumulative sum is the thing this guards against
    naive = (id32.exp().sum(1, keepdim=True) / (id32.exp().sum(1, keepdim=True) + torch.cumsum(neg32.exp(), 1))).mean(1)
    assert (naive.double() - exact).abs().max() > (got.double() - exact).abs().max()


def test_prefix_lengths_clip_last_prefix():
    assert prefix_lengths(10, 3).tolist() == [3, 6, 9, 10]
    assert prefix_lengths(9, 3).tolist() == [3, 6, 9]
    assert prefix_lengths(5, 1).tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        prefix_lengths(5, 0)


def test_step_zero_is_single_softmax_and_scores_are_probabilities():
    id_logits, neg_logits = _logits(4, 10, 30, torch.float64, seed=5)
    s = activation_aware_score(id_logits, neg_logits, 0)
    direct = id_logits.exp().sum(1) / (id_logits.exp().sum(1) + neg_logits.exp().sum(1))
    torch.testing.assert_close(s, direct)
    for step in (0, 1, 4):
        s = activation_aware_score(id_logits, neg_logits, step)
        assert bool(((s >= 0) & (s <= 1)).all())


def test_grouped_neglabel_score_matches_direct_formula():
    id_logits, neg_logits = _logits(5, 10, 103, torch.float64, seed=9)
    groups = group_permutation(103, 10, seed=0)
    assert groups.shape == (10, 10)  # 103 mod 10 = 3 labels dropped
    assert len(set(groups.flatten().tolist())) == 100
    got = grouped_neglabel_score(id_logits, neg_logits, groups)
    pos = id_logits.exp().sum(1)
    direct = torch.stack([pos / (pos + neg_logits[:, grp].exp().sum(1)) for grp in groups], 1).mean(1)
    torch.testing.assert_close(got, direct)
    # the permutation is seeded: same seed, same groups; another seed, others
    assert torch.equal(group_permutation(103, 10, seed=0), groups)
    assert not torch.equal(group_permutation(103, 10, seed=1), groups)


def test_mcm_is_max_softmax_over_id_labels():
    id_logits, _ = _logits(4, 7, 1, torch.float64, seed=2)
    torch.testing.assert_close(mcm_score(id_logits), torch.softmax(id_logits, 1).max(1).values)
    torch.testing.assert_close(mcm_score(id_logits, 2.0), torch.softmax(id_logits / 2.0, 1).max(1).values)


@pytest.mark.parametrize("scale", [100.0, 1000.0, 5000.0])
def test_activation_aware_score_at_any_logit_range(scale):
    # The linear-domain form serves CLIP-sized logits; logits hundreds apart take the log-domain form. Both must
    # agree with the M-softmax definition, also for rows whose scores saturate at 0 or 1.
    id_logits, neg_logits = _logits(6, 40, 300, torch.float64, seed=7, scale=scale)
    neg_logits[0] -= scale  # an image no negative fires on
    neg_logits[1] += scale  # an image every negative fires on
    for step in (1, 7):
        expected = m_softmax_score(id_logits, neg_logits, step)
        torch.testing.assert_close(activation_aware_score(id_logits, neg_logits, step), expected, rtol=0, atol=1e-12)


def test_linear_and_log_domain_prefix_probabilities_agree():
    id_logits, neg_logits = _logits(64, 1000, 1000, torch.float32, seed=11)
    a = _id_lse(id_logits)
    neg = neg_logits.double()
    linear = _prefix_id_probabilities(a, neg)
    log_domain = torch.sigmoid(a[:, None] - torch.logcumsumexp(neg, dim=1))
    assert (linear - log_domain).abs().max() < 1e-13
