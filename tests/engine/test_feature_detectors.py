"""The feature detectors (kNN, Mahalanobis) and the shrinkage covariances against scikit-learn, and calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tanl_guard import CalibrationConfig, KNNConfig, KNNDetector, MahalanobisConfig, MahalanobisDetector
from tanl_guard.covariance import ledoit_wolf, oas
from tanl_guard.detectors import held_out_splits

sklearn_covariance = pytest.importorskip("sklearn.covariance")
sklearn_neighbors = pytest.importorskip("sklearn.neighbors")


def _data(n=80, p=40, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(p, p)) / np.sqrt(p)
    return rng.normal(size=(n, p)) @ mixing + shift


@pytest.mark.parametrize("n, p", [(80, 40), (30, 120)])  # more samples than dimensions, and fewer
def test_shrinkage_covariances_match_scikit_learn(n, p):
    x = _data(n, p)
    for ours, theirs in ((ledoit_wolf, sklearn_covariance.LedoitWolf()), (oas, sklearn_covariance.OAS())):
        theirs.fit(x)
        cov, shrinkage = ours(torch.tensor(x))
        np.testing.assert_allclose(cov.numpy(), theirs.covariance_, rtol=0, atol=1e-6)
        assert shrinkage == pytest.approx(theirs.shrinkage_, abs=1e-6)
        centred, _ = ours(torch.tensor(x - x.mean(0)), assume_centered=True)
        np.testing.assert_allclose(centred.numpy(), theirs.covariance_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shrinkage, estimator", [("ledoit-wolf", "LedoitWolf"), ("oas", "OAS")])
def test_mahalanobis_distances_match_scikit_learn(shrinkage, estimator):
    x, y = _data(60, 30), _data(9, 30, seed=1, shift=0.5)
    det = MahalanobisDetector(MahalanobisConfig(shrinkage=shrinkage, normalize=False))
    det.fit(torch.tensor(x), calibrate=False)
    reference = getattr(sklearn_covariance, estimator)().fit(x)
    np.testing.assert_allclose(det.squared_distances(torch.tensor(y))[:, 0].numpy(), reference.mahalanobis(y),
                               rtol=1e-6, atol=1e-6)
    assert det.shrinkage == pytest.approx(reference.shrinkage_, abs=1e-6)
    scores, labels = det.score(torch.tensor(y))
    np.testing.assert_allclose(scores.numpy(), 1 / (1 + reference.mahalanobis(y) / 30), rtol=1e-6)
    assert labels.tolist() == [0] * 9


def test_mahalanobis_is_class_conditional_with_a_tied_covariance():
    a, b = _data(40, 20, seed=2), _data(30, 20, seed=3, shift=4.0)
    x = np.concatenate([a, b])
    labels = torch.tensor([0] * 40 + [1] * 30)
    det = MahalanobisDetector(MahalanobisConfig(normalize=False))
    det.fit(torch.tensor(x), labels, calibrate=False)
    centred = np.concatenate([a - a.mean(0), b - b.mean(0)])
    tied = sklearn_covariance.LedoitWolf(assume_centered=True).fit(centred)
    np.testing.assert_allclose(det.covariance.numpy(), tied.covariance_, rtol=0, atol=1e-6)
    y = np.stack([a.mean(0) + 0.1, b.mean(0) - 0.1])
    expected = np.stack([((y - m) @ tied.precision_ * (y - m)).sum(1) for m in (a.mean(0), b.mean(0))], axis=1)
    np.testing.assert_allclose(det.squared_distances(torch.tensor(y)).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert det.score(torch.tensor(y))[1].tolist() == [0, 1]  # the nearest label's mean


@pytest.mark.parametrize("k, reduction", [(1, "kth"), (3, "kth"), (3, "mean")])
def test_knn_distances_match_scikit_learn(k, reduction):
    x, y = _data(50, 16), _data(7, 16, seed=4, shift=0.3)
    det = KNNDetector(KNNConfig(k=k, reduction=reduction))
    det.fit(torch.tensor(x), torch.tensor([0] * 25 + [1] * 25), calibrate=False)
    distances, indices = det.kneighbors(torch.tensor(y))
    reference = sklearn_neighbors.NearestNeighbors(n_neighbors=k, metric="cosine").fit(x)
    ref_distances, ref_indices = reference.kneighbors(y)
    np.testing.assert_allclose(distances.numpy(), ref_distances, rtol=0, atol=1e-6)
    assert (indices.numpy() == ref_indices).all()
    scores, labels = det.score(torch.tensor(y))
    expected = ref_distances[:, -1] if reduction == "kth" else ref_distances.mean(1)
    np.testing.assert_allclose(scores.numpy(), 1 - expected / 2, rtol=0, atol=1e-6)
    assert labels.tolist() == [int(i >= 25) for i in ref_indices[:, 0]]


def test_leave_one_source_out_never_fits_on_the_held_out_source():
    sources = ["a", "a", "b", "c", "b", "c", "c"]
    method, splits = held_out_splits(len(sources), sources)
    assert method == "leave-one-source-out" and len(splits) == 3
    for fit, held in splits:
        held_sources = {sources[i] for i in held.tolist()}
        assert len(held_sources) == 1 and not held_sources & {sources[i] for i in fit.tolist()}
        assert sorted(fit.tolist() + held.tolist()) == list(range(7))
    method, splits = held_out_splits(10, ["one"] * 10, n_folds=4, seed=1)  # one source: k-fold
    assert method == "k-fold" and len(splits) == 4
    assert sorted(i for _, held in splits for i in held.tolist()) == list(range(10))
    for fit, held in splits:
        assert not set(fit.tolist()) & set(held.tolist())


class _RecordingKNN(KNNDetector):
    """A real kNN detector that also records which references each fit saw (fit inputs, not a stub)."""

    fits: list[torch.Tensor] = []

    def _fit(self, features, labels):
        type(self).fits.append(features.clone())
        super()._fit(features, labels)


def test_calibration_holds_out_each_source_and_sets_the_rate():
    # two volumes far apart, each of near-duplicate slices: held out by source, the other volume looks far away
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(2, 32))
    x = np.concatenate([centres[i] + 0.05 * rng.normal(size=(20, 32)) for i in (0, 1)])
    sources = ["vol0"] * 20 + ["vol1"] * 20
    _RecordingKNN.fits = []
    det = _RecordingKNN(KNNConfig(calibration=CalibrationConfig(rate=0.9)))
    result = det.fit(torch.tensor(x), sources=sources)
    fold_fits, final_fit = _RecordingKNN.fits[:-1], _RecordingKNN.fits[-1]
    assert result["method"] == "leave-one-source-out" and result["folds"] == 2 and len(fold_fits) == 2
    for fit, held in zip(fold_fits, (slice(0, 20), slice(20, 40))):
        assert fit.shape[0] == 20 and not any(torch.equal(row, ref) for row in fit for ref in torch.tensor(x[held]))
    assert final_fit.shape[0] == 40  # deployed on all references
    pooled = KNNDetector(KNNConfig(calibration=CalibrationConfig(rate=0.9)))
    pooled.fit(torch.tensor(x))  # k-fold: near-duplicates in every fold, a far stricter threshold
    assert result["threshold"] < pooled.threshold - 0.1
    assert det.threshold == result["threshold"] and result["held_out_accepted"] >= 0.9


def test_feature_state_is_the_operating_point_and_the_fit_fingerprint():
    x = torch.tensor(_data(30, 12))
    det = KNNDetector()
    det.fit(x)
    state = det.state_dict()
    assert "references" not in state and state["threshold"] == det.threshold
    other = KNNDetector()
    other.fit(x, calibrate=False)
    other.load_state_dict(state)
    assert other.threshold == det.threshold and other.calibration == det.calibration
    refit = KNNDetector()
    refit.fit(x[1:], calibrate=False)
    with pytest.raises(ValueError, match="other reference features"):
        refit.load_state_dict(state)
    description = KNNDetector.describe_state(state)
    assert description["threshold"] == det.threshold and description["calibration"]["method"] == "k-fold"


def test_feature_detectors_reject_bad_input():
    det = MahalanobisDetector()
    with pytest.raises(RuntimeError, match="fit"):
        det.step(torch.zeros(2, 8))
    det.fit(torch.tensor(_data(20, 8)))
    for bad in (torch.zeros(0, 8), torch.zeros(2, 9), torch.full((2, 8), float("nan"))):
        with pytest.raises(ValueError):
            det.step(bad)
    with pytest.raises(ValueError, match="at least 2"):
        KNNDetector().fit(torch.zeros(1, 8))
