"""The baselines behind the shared detector interface: NegLabel, MCM, AdaNeg."""

from __future__ import annotations

import pytest
import torch

from conftest import Mixture
from tanl_guard import DETECTORS, AdaNegConfig, AdaNegDetector, MCMDetector, NegLabelConfig, NegLabelDetector
from tanl_guard.selection import distance_to_id, select_farthest, split_by_kind


def test_registry_names():
    assert set(DETECTORS) == {"tanl", "neglabel", "mcm", "adaneg", "knn", "mahalanobis"}
    for name, (cls, config_class) in DETECTORS.items():
        assert cls.name == name and cls.paper and cls.config_class is config_class


def test_distance_is_the_quantile_element_of_sorted_similarities():
    mix = Mixture(n_id=20, n_corpus=50)
    d = distance_to_id(mix.corpus, mix.id_text, 0.95, chunk=7)
    sims = mix.corpus @ mix.id_text.T
    expected = torch.sort(sims, dim=1).values[:, 19]  # floor(0.95 * 20) = 19
    torch.testing.assert_close(d, expected)


def test_select_farthest_per_kind_in_proportion():
    assert split_by_kind(10000, [11453, 58101]) == [1646, 8354]  # OpenOOD-VLM's ImageNet split
    distances = torch.tensor([0.5, 0.1, 0.9, 0.2, 0.3, 0.05, 0.7, 0.6])
    kinds = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert select_farthest(distances, n_select=4, kinds=kinds).tolist() == [1, 3, 4, 5]
    assert select_farthest(distances, share=0.5, kinds=kinds).tolist() == [1, 3, 4, 5]
    assert select_farthest(distances, n_select=3).tolist() == [1, 3, 5]
    with pytest.raises(ValueError):
        select_farthest(distances)


def test_neglabel_keeps_distant_labels_and_scores_by_groups():
    mix = Mixture(n_corpus=600)
    det = NegLabelDetector(mix.id_text, mix.corpus, 100.0, NegLabelConfig(n_negatives=100, n_groups=10))
    d = distance_to_id(mix.corpus, mix.id_text, 0.95)
    assert det.selected.numel() == 100
    assert float(d[det.selected].max()) <= float(d[~torch.isin(torch.arange(600), det.selected)].min())
    x, is_ood = mix.batch(200, ood_fraction=0.5)
    res = det.step(x)
    assert res.scores.shape == (200,) and res.threshold is None
    assert float(res.scores[~is_ood].mean()) > float(res.scores[is_ood].mean())
    assert res.top_negatives.shape == (200, 5)


def test_mcm_runs_without_corpus():
    mix = Mixture()
    det = MCMDetector(mix.id_text, None, 100.0)
    x, _ = mix.batch(10)
    res = det.step(x)
    expected = torch.softmax(100.0 * x @ mix.id_text.T, 1).max(1).values
    torch.testing.assert_close(res.scores, expected)


def test_adaneg_caches_confident_samples_and_adapts():
    mix = Mixture(n_corpus=600)
    cfg = AdaNegConfig(negatives=NegLabelConfig(n_negatives=100), memory_len=4, n_groups=5)
    det = AdaNegDetector(mix.id_text, mix.corpus, 100.0, cfg)
    proxies_before = det.proxies().clone()
    x, is_ood = mix.batch(64, ood_fraction=0.3)
    res = det.step(x)
    assert int(det.filled.sum()) > 0  # something was confident enough to cache
    assert int(det.filled.max()) <= 4  # memories are bounded
    assert not torch.equal(det.proxies(), proxies_before)
    assert bool(((res.scores >= 0) & (res.scores <= 1)).all())
    for _ in range(5):
        x, is_ood = mix.batch(64, ood_fraction=0.3)
        res = det.step(x)
    assert float(res.scores[~is_ood].mean()) > float(res.scores[is_ood].mean())
    state = det.state_dict()
    other = AdaNegDetector(mix.id_text, mix.corpus, 100.0, cfg)
    other.load_state_dict(state)
    x, _ = mix.batch(16)
    torch.testing.assert_close(other.step(x).scores, det.step(x).scores)


def test_baselines_reject_bad_input():
    mix = Mixture(n_corpus=300)
    for det in (
        NegLabelDetector(mix.id_text, mix.corpus, 100.0, NegLabelConfig(n_negatives=50, n_groups=5)),
        MCMDetector(mix.id_text, None, 100.0),
        AdaNegDetector(mix.id_text, mix.corpus, 100.0, AdaNegConfig(negatives=NegLabelConfig(n_negatives=50))),
    ):
        with pytest.raises(ValueError):
            det.step(torch.zeros(0, mix.id_text.shape[1]))
        with pytest.raises(ValueError):
            det.step(torch.full((2, mix.id_text.shape[1]), float("nan")))


def test_make_detector_builds_every_detector_the_same_way_and_seeds_it():
    from tanl_guard import KNNConfig, TANLConfig, make_detector

    mix = Mixture(n_corpus=300)
    for name, (cls, config_class) in DETECTORS.items():
        det = make_detector(name, mix.id_text, mix.corpus, 100.0, seed=7)
        assert type(det) is cls and isinstance(det.config, config_class)
        seeds = [v for k, v in vars(det.config).items() if k == "seed"]
        nested = [v.seed for v in vars(det.config).values() if hasattr(v, "seed")]
        assert all(s == 7 for s in seeds + nested)
    with pytest.raises(TypeError, match="KNNConfig"):
        make_detector("knn", config=TANLConfig())
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("magic")
    assert make_detector("knn", config=KNNConfig(k=3)).config.k == 3


def test_every_detector_resets_the_same_way_and_snapshots_json_safe_state():
    import json

    mix = Mixture(n_corpus=300)
    for name in ("tanl", "neglabel", "mcm", "adaneg"):
        det = DETECTORS[name].detector.from_config(
            DETECTORS[name].config(), id_embeddings=mix.id_text, corpus_embeddings=mix.corpus, logit_scale=100.0
        )
        det.reset(noise_features=mix.noise, generator=torch.Generator().manual_seed(1))
        det.step(mix.batch(32)[0])
        snapshot = det.snapshot(n_selected=3)
        assert snapshot["detector"] == name
        json.dumps(snapshot)  # JSON-safe
        assert len(snapshot.get("selected", [])) <= 3
    tanl = DETECTORS["tanl"].detector(mix.id_text, mix.corpus, 100.0)
    tanl.reset(noise_features=mix.noise)
    tanl.step(mix.batch(32)[0])
    assert tanl.snapshot()["pos_queue"] == tanl.queue_sizes[0] and tanl.snapshot()["threshold"] == tanl.threshold
