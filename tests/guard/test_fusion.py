"""The fused guard: the fusion rules, both gates in the verdicts, calibration by source, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from tanl_guard.guard import (
    DEFAULT_FUSED_DETECTOR,
    FusionConfig,
    GateScores,
    Guard,
    detector_names,
    split_detector_name,
)
from tanl_guard.guard.fusion import combined_margin, fused_score, refused_by


def test_detector_names_pair_every_label_gate_with_every_feature_gate():
    names = detector_names()
    assert {"tanl", "knn", "mahalanobis", "tanl+knn", "tanl+mahalanobis", "neglabel+knn"} <= set(names)
    assert split_detector_name("tanl+knn") == ("tanl", "knn")
    assert split_detector_name("knn") == (None, "knn") and split_detector_name("mcm") == ("mcm", None)
    for bad in ("knn+tanl", "tanl+neglabel", "knn+mahalanobis", "tanl+knn+mahalanobis", "magic"):
        with pytest.raises(ValueError, match="unknown detector"):
            split_detector_name(bad)


def test_fusion_rules():
    scores = torch.tensor([0.9, 0.5, 0.4, 0.6], dtype=torch.float64)
    label = GateScores("tanl", "label", scores, threshold=0.5, spread=0.2)
    scores = torch.tensor([0.95, 0.7, 0.9, 0.72], dtype=torch.float64)
    feature = GateScores("knn", "feature", scores, threshold=0.8, spread=0.1)
    lm, fm = label.margin(), feature.margin()
    torch.testing.assert_close(lm, torch.tensor([2.0, 0.0, -0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(fm, torch.tensor([1.5, -1.0, 1.0, -0.8], dtype=torch.float64))
    both = combined_margin(lm, fm, FusionConfig(decision="and"))
    assert (both >= 0).tolist() == [True, False, False, False]  # (a) both gates must accept
    summed = combined_margin(lm, fm, FusionConfig(decision="score", weight=0.5))
    assert (summed >= 0).tolist() == [True, False, True, False]  # (b) a strong gate carries a weak one
    assert float(fused_score(torch.tensor(0.0))) == 0.5  # the operating point
    assert refused_by((label, feature), (0.3, 0.9)) == ["tanl"] and refused_by((label, feature), (0.4, 0.7)) == [
        "tanl", "knn"]
    for bad in (dict(decision="or"), dict(admission="both"), dict(weight=1.5), dict(admission_margin=-1),
                dict(label_threshold="otsu"), dict(label_rate=1.0), dict(window=0)):
        with pytest.raises(ValueError):
            FusionConfig(**bad)


@pytest.fixture
def photos():
    from skimage import data as skdata

    return [skdata.astronaut() / 255.0, skdata.coffee() / 255.0, skdata.chelsea() / 255.0, skdata.camera() / 255.0]


def _sources(references):
    return {label: [f"vol{i % 3}" for i in range(len(images))] for label, images in references.items()}


def test_references_make_the_fused_guard_the_default(surrogate, references, corpus_file, tmp_path):
    guard = Guard.build(encoder=surrogate, labels=["brain MRI"], reference_images=references,
                        reference_sources=_sources(references), corpus=str(corpus_file), cache_dir=str(tmp_path))
    assert guard.detector_name == DEFAULT_FUSED_DETECTOR and guard.fused and guard.feature_source == "trunk"
    calibration = guard.feature_calibration
    assert calibration["method"] == "leave-one-source-out" and calibration["folds"] == 3
    assert calibration["rate"] == 0.95 and calibration["n_reference"] == sum(len(v) for v in references.values())
    snapshot = guard.snapshot()
    json.dumps(snapshot)
    assert snapshot["feature_gate"]["calibration"] == calibration and snapshot["fusion"]["decision"]
    text_only = Guard.build(encoder=surrogate, labels=["brain MRI"], corpus=str(corpus_file), cache_dir=str(tmp_path))
    assert text_only.detector_name == "tanl" and text_only.feature_detector is None


def test_fused_verdicts_carry_both_gates_and_name_the_one_that_refused(make_guard, references, photos):
    guard = make_guard(detector="tanl+knn", fusion=FusionConfig(decision="and", admission="label"))
    brains = references["brain MRI"][:4]
    gate = guard.score_images(brains + photos)
    label, feature = gate.gates
    assert (label.role, feature.role) == ("label", "feature") and (label.name, feature.name) == ("tanl", "knn")
    both = (label.scores >= label.threshold) & (feature.scores >= feature.threshold)
    assert torch.equal(gate.accepted, both)  # rule (a)
    # the label gate's threshold accepts 95 % of what the feature gate (calibrated on held-out references) accepts
    seen = label.scores[feature.scores >= feature.threshold]
    assert label.threshold == float(torch.quantile(seen, 0.05, interpolation="lower"))
    own = make_guard(detector="tanl+knn", fusion=FusionConfig(label_threshold="own")).score_images(brains + photos)
    assert own.gates[0].threshold == own.step.threshold  # TANL's Otsu split
    assert bool(gate.accepted[:4].all()) and not bool(gate.accepted[4:].any())  # references in, photos out
    verdicts = [guard.judge_series(f"s{i}", "MR", gate, [i]) for i in range(len(gate))]
    for v, accepted in zip(verdicts, gate.accepted.tolist()):
        line = v.to_json()
        assert {"label_score", "label_threshold", "feature_score", "feature_threshold", "refused_by"} <= set(line)
        assert (v.verdict == "accept") == accepted
        if not accepted:
            assert v.refused_by and all(name in v.reason for name in v.refused_by)
            assert f"refused by {' and '.join(v.refused_by)}" in v.reason
    assert "knn" in verdicts[4].refused_by  # the feature gate refuses a photo
    from tanl_guard.guard import study_verdict

    study = study_verdict("study", verdicts[3:5], "any")
    line = study.to_json()
    assert line["verdict"] == "reject" and "knn" in line["refused_by"] and "refused by" in line["reason"]
    assert line["feature_score"] == verdicts[4].feature_score  # the lowest series' gate scores
    from tanl_guard.guard import StudyVerdict

    assert StudyVerdict.from_json(line).to_json() == line


def test_score_rule_and_admission_by_the_feature_gate(make_guard, references, photos):
    guard = make_guard(detector="tanl+knn", fusion=FusionConfig(decision="score", admission="feature", weight=0.7))
    assert guard.admission == "feature"
    gate = guard.score_images(references["brain MRI"][:4] + photos)
    label, feature = gate.gates
    margin = 0.3 * label.margin() + 0.7 * feature.margin()
    torch.testing.assert_close(gate.scores, torch.sigmoid(margin))
    assert torch.equal(gate.accepted, margin >= 0)
    # rule (c): TANL's queues took exactly what the feature gate accepted / refused
    step = gate.step
    assert torch.equal(step.confident_id.cpu(), feature.scores >= feature.threshold)
    assert torch.equal(step.confident_ood.cpu(), feature.scores < feature.threshold)
    neglabel = make_guard(detector="neglabel+knn", fusion=FusionConfig(admission="feature"))
    assert neglabel.admission == "label"  # NegLabel keeps no queues: nothing to admit


def _refuses_from(rate: float) -> int:
    """The smallest pool whose lower (1 - rate) quantile is not its minimum, found with torch itself (float64, as
    the guard's pool of label scores)."""
    return next(n for n in range(2, 1000) if float(torch.quantile(
        torch.arange(n, dtype=torch.float64), 1.0 - rate, interpolation="lower")) > 0)


def test_label_gate_says_while_it_is_too_young_to_refuse(make_guard, references, photos):
    guard = make_guard(detector="tanl+knn")
    needed = _refuses_from(0.95)
    assert guard.label_warmup() == {"seen": 0, "refuses_from": needed} == guard.snapshot()["fusion"]["label_warmup"]
    brains = guard.encode(references["brain MRI"][:8])
    pool: list[torch.Tensor] = []
    for _ in range(needed):  # 8 views a batch, nearly all feature-accepted (references score themselves)
        if guard.label_warmup() is None:
            break
        gate = guard.score_features(brains)
        label, feature = gate.gates
        pool.append(label.scores[feature.scores >= feature.threshold])
        scores = torch.cat(pool)
        if len(scores) < needed:  # too few to refuse any: the threshold is the lowest of them
            assert guard.label_warmup() == {"seen": len(scores), "refuses_from": needed}
            assert label.threshold == float(scores.min())
    assert len(scores) >= needed and label.threshold > float(scores.min())  # now the lowest is refused
    assert "label_warmup" not in guard.snapshot()["fusion"]

    assert make_guard(detector="tanl+knn", fusion=FusionConfig(label_rate=0.9)).label_warmup()["refuses_from"] == (
        _refuses_from(0.9))
    assert make_guard(detector="tanl+knn", fusion=FusionConfig(label_rate=0.9, window=5)).label_warmup()[
        "refuses_from"] == 6  # a window too small to ever refuse: always warming up
    assert make_guard(detector="tanl+knn", fusion=FusionConfig(label_threshold="own")).label_warmup() is None
    assert make_guard(detector="tanl").label_warmup() is None


def test_feature_gate_alone(make_guard, references, photos):
    guard = make_guard(detector="mahalanobis")
    assert guard.label_detector is None and len(guard.corpus) == 0
    gate = guard.score_images(references["brain MRI"][:3] + photos)
    assert gate.threshold == guard.feature_detector.threshold and len(gate.gates) == 1
    assert gate.predictions == ("brain MRI",) * 7 and gate.top_negatives == ((),) * 7
    assert bool(gate.accepted[:3].all()) and not bool(gate.accepted[3:].any())
    assert guard.snapshot()["threshold"] == guard.feature_detector.threshold
    fixed = make_guard(threshold="0.99", detector="knn")
    assert fixed.score_images(photos[:1]).threshold == 0.99
    with pytest.raises(ValueError, match="reference ID images"):
        Guard.build(encoder=guard.encoder, labels=["brain MRI"], detector="knn", corpus=guard.corpus)


def test_fused_guard_resumes_bit_identically(make_guard, references, photos, tmp_path):
    from tanl_guard.encoders import ImageEncoding

    encoded = make_guard(detector="tanl+knn").encode(references["brain MRI"] + photos)
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(3))
    batches = [encoded.rows(order[i : i + 6]) for i in range(0, len(order), 6)]
    fusion = FusionConfig(decision="score", admission="feature")
    straight = make_guard(detector="tanl+knn", fusion=fusion)
    expected = [straight.score_features(b) for b in batches]
    first = make_guard(detector="tanl+knn", fusion=fusion)
    for b in batches[:2]:
        first.score_features(b)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = make_guard(detector="tanl+knn", fusion=fusion)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    for b, want in zip(batches[2:], expected[2:]):
        got = resumed.score_features(ImageEncoding(b.embeddings.clone(), b.features.clone()))
        assert torch.equal(got.scores, want.scores) and got.threshold == want.threshold
        for g, w in zip(got.gates, want.gates):
            assert torch.equal(g.scores, w.scores) and g.threshold == w.threshold and g.spread == w.spread
    assert resumed.snapshot() == straight.snapshot()
    other = make_guard(detector="tanl+mahalanobis")
    with pytest.raises(ValueError, match="tanl\\+knn"):
        other.load_state_dict(first.state_dict())


def test_fused_guard_needs_features_with_its_embeddings(make_guard, references):
    guard = make_guard(detector="tanl+knn")
    embeddings = guard.encoder.encode_images(references["brain MRI"][:2])
    with pytest.raises(ValueError, match="ImageEncoding with features"):
        guard.score_features(embeddings)
    assert guard.n_images == 0  # nothing was learnt from the refused call


def test_resume_in_another_process_tolerates_the_encoders_last_bits(make_guard, references, photos):
    """Embeddings differ by about 6e-8 across processes (batch composition, threads): a resumed fused guard adopts
    the saved ID columns and recognises its feature fit, and continues as the guard that saved the state."""
    first = make_guard(detector="tanl+knn")
    batches = [first.encode(photos[:2] + references["brain MRI"][:4]), first.encode(references["brain MRI"][4:8])]
    first.score_features(batches[0])
    state = first.state_dict()
    want = first.score_features(batches[1])

    def other_process(offset: float):
        guard = make_guard(detector="tanl+knn")
        bank = guard.label_detector.bank
        noise = torch.randn(bank.id_text.shape, generator=torch.Generator().manual_seed(1)).to(bank.dtype)
        bank.weights[: bank.n_id] += offset * noise  # the rebuilt ID columns, rounded otherwise
        bank._fingerprint = None
        features = guard.encode(references["brain MRI"]).features
        guard.fit_feature_gate(features + offset * torch.sign(features))  # the feature fit, rounded otherwise
        return guard

    resumed = other_process(6e-8)
    resumed.load_state_dict(state)
    got = resumed.score_features(batches[1])
    assert torch.equal(got.gates[0].scores, want.gates[0].scores)  # the label gate continues exactly
    assert got.gates[0].threshold == want.gates[0].threshold
    torch.testing.assert_close(got.gates[1].scores, want.gates[1].scores, rtol=0, atol=1e-6)
    assert got.gates[1].threshold == want.gates[1].threshold  # the saved operating point
    with pytest.raises(ValueError, match="other label embeddings"):
        other_process(1e-2).load_state_dict(state)  # other references: refused
