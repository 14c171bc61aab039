"""Metrics against scikit-learn, with tied scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from tanl_guard.metrics import auroc, average_precision, fpr_at_tpr, ood_metrics


def _sk_fpr_at_95(pos, neg):
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, _ = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    return fpr[np.searchsorted(tpr, 0.95, side="left")]


@pytest.mark.parametrize("seed", range(8))
def test_against_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(5, 300, size=2)
    ids = rng.beta(5, 2, n_id)
    oods = rng.beta(2, 4, n_ood)
    if seed % 2 == 0:  # coarse rounding makes many ties, also across the two sets
        ids, oods = np.round(ids, 1), np.round(oods, 1)
    y = np.r_[np.ones(n_id), np.zeros(n_ood)]
    s = np.r_[ids, oods]
    m = ood_metrics(ids, oods)
    assert m.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m.aupr_in == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m.aupr_out == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert m.fpr95_id_positive == pytest.approx(_sk_fpr_at_95(ids, oods), abs=1e-12)
    assert m.fpr95_ood_positive == pytest.approx(_sk_fpr_at_95(-oods, -ids), abs=1e-12)
    assert (m.n_id, m.n_ood) == (n_id, n_ood)


def test_conventions_differ_and_are_named():
    ids = np.array([0.9, 0.8, 0.7, 0.6, 0.1])  # one ID outlier
    oods = np.array([0.65, 0.2, 0.15, 0.05])
    m = ood_metrics(ids, oods)
    # accepting 95 % of ID needs the threshold at 0.1: three of the four OOD are accepted too
    assert m.fpr95_id_positive == pytest.approx(3 / 4)
    # rejecting 95 % of OOD needs the threshold above 0.65: ID 0.6 and 0.1 are rejected
    assert m.fpr95_ood_positive == pytest.approx(2 / 5)


def test_perfect_and_inverted_separation():
    assert auroc([1.0, 0.9], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [1.0, 0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert average_precision([1.0, 0.9], [0.1]) == 1.0
    assert fpr_at_tpr([1.0, 0.9], [0.1, 0.2]) == 0.0


def test_bad_scores_raise():
    with pytest.raises(ValueError):
        ood_metrics([], [0.1])
    with pytest.raises(ValueError):
        ood_metrics([float("nan")], [0.1])
