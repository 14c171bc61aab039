"""TANLDetector against the literal reference, plus state, reproducibility and bad input."""

from __future__ import annotations

import io

import pytest
import torch
from reference_tanl import ReferenceTANL

from conftest import Mixture
from tanl_guard import DETECTORS, TANLConfig, TANLDetector
from tanl_guard.detectors.base import UNIT_NORM_TOLERANCE


def _pair(mix: Mixture, cfg: TANLConfig):
    det = TANLDetector(id_text=mix.id_text, corpus=mix.corpus, logit_scale=100.0, config=cfg)
    ref = ReferenceTANL(mix.id_text, mix.corpus, 100.0, cfg.n_negatives, cfg.queue_len, cfg.gap, cfg.alpha,
                        cfg.score_step, cfg.history_len)
    g = torch.Generator().manual_seed(11)
    id_order = torch.randperm(len(mix.id_text), generator=g)
    noise_order = torch.randperm(len(mix.noise), generator=g)
    det.reset(noise_features=mix.noise, id_order=id_order, noise_order=noise_order)
    ref.reset(mix.noise, id_order, noise_order)
    return det, ref


@pytest.mark.parametrize(
    "cfg",
    [
        TANLConfig(n_negatives=100, queue_len=30, gap=0.2, alpha=0.95, score_step=1, history_len=20000),
        TANLConfig(n_negatives=100, queue_len=30, gap=0.0, alpha=0.0, score_step=1, history_len=20000),
        TANLConfig(n_negatives=100, queue_len=30, gap=0.5, alpha=1.0, score_step=0, history_len=20000),
        TANLConfig(n_negatives=97, queue_len=30, gap=0.2, alpha=0.5, score_step=7, history_len=20000),
        # a short history that wraps, and a queue smaller than what one batch admits
        TANLConfig(n_negatives=50, queue_len=4, gap=0.1, alpha=0.95, score_step=1, history_len=60),
    ],
    ids=["paper", "alpha0", "alpha1-step0", "step7", "tiny-queue"],
)
def test_matches_reference_step_by_step(cfg):
    mix = Mixture()
    det, ref = _pair(mix, cfg)
    torch.testing.assert_close(det.history, ref.H, rtol=0, atol=1e-12)
    assert torch.equal(det.selected, ref.sel)
    admitted_more_than_queue = False
    for i, size in enumerate([32, 17, 5, 40, 1, 24, 33, 16, 9, 28, 32, 20]):
        x, _ = mix.batch(size, ood_fraction=0.35)
        got, want = det.step(x), ref.step(x)
        torch.testing.assert_close(got.first_pass_scores, want["first"], rtol=0, atol=1e-12)
        assert got.threshold == want["threshold"], i
        assert torch.equal(got.confident_id, want["pos"]) and torch.equal(got.confident_ood, want["neg"]), i
        assert torch.equal(got.selected, want["selected"]), i
        torch.testing.assert_close(got.scores, want["scores"], rtol=0, atol=1e-12)
        assert torch.equal(got.predictions, want["pred"])
        # queue means equal the exact column means of the reference's rows
        torch.testing.assert_close(det._pos.mean(), ref.Qpos.mean(0), rtol=0, atol=1e-15)
        torch.testing.assert_close(det._neg.mean(), ref.Qneg.mean(0), rtol=0, atol=1e-15)
        admitted_more_than_queue |= int(got.confident_id.sum()) > cfg.queue_len
    assert det.n_steps == 12
    if cfg.queue_len == 4:
        assert admitted_more_than_queue  # the eviction path was exercised


def test_float32_matches_float64_reference_closely():
    mix64 = Mixture()
    mix32 = Mixture(dtype=torch.float32)
    cfg = TANLConfig(n_negatives=100, queue_len=30)
    det, _ = _pair(mix32, cfg)
    _, ref = _pair(mix64, cfg)
    agree = 0
    for size in [32, 24, 32, 16]:
        x64, _ = mix64.batch(size)
        mix32.batch(size)  # keep both generators in step
        got, want = det.step(x64.float()), ref.step(x64)
        assert got.scores.dtype == torch.float32
        agree += int(torch.equal(got.selected, want["selected"]))
        assert (got.scores.double() - want["scores"]).abs().max() < 1e-4
    assert agree >= 3


def test_adaptation_learns_the_streams_ood_concepts():
    mix = Mixture(n_corpus=3000)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=60, queue_len=100))
    det.reset(noise_features=mix.noise)
    for _ in range(15):
        x, is_ood = mix.batch(64, ood_fraction=0.3)
        res = det.step(x)
    # the OOD images were drawn around six corpus labels: TANL must rank those labels among the first selected
    centre_ids = [int(torch.argmax(mix.corpus @ c)) for c in mix.ood_centres]
    top = set(res.selected[:30].tolist())
    assert sum(c in top for c in centre_ids) >= 5
    assert float(res.scores[~is_ood].mean()) > float(res.scores[is_ood].mean()) + 0.3


def test_explicit_orders_and_seeded_generator_are_reproducible():
    mix = Mixture()
    cfg = TANLConfig(n_negatives=80, queue_len=20)
    batches = [mix.batch(16)[0] for _ in range(6)]

    def run(**reset_kwargs):
        det = TANLDetector(mix.id_text, mix.corpus, 100.0, cfg)
        det.reset(noise_features=mix.noise, **reset_kwargs)
        return [det.step(b).scores for b in batches]

    a = run(generator=torch.Generator().manual_seed(4))
    b = run(generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    order = torch.arange(len(mix.id_text)).flip(0)
    c, d = run(id_order=order, noise_order=torch.arange(15)), run(id_order=order, noise_order=torch.arange(15))
    assert all(torch.equal(x, y) for x, y in zip(c, d))
    # default: seeded by config.seed, no global RNG involved
    torch.manual_seed(123)
    e = run()
    torch.manual_seed(999)
    f = run()
    assert all(torch.equal(x, y) for x, y in zip(e, f))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_continue_is_bit_identical(dtype):
    mix = Mixture(dtype=dtype)
    cfg = TANLConfig(n_negatives=80, queue_len=25)
    sizes = [20, 3, 40, 7, 31, 1, 18, 26, 5, 33, 12, 64]
    batches = [mix.batch(n)[0] for n in sizes]
    full = TANLDetector(mix.id_text, mix.corpus, 100.0, cfg)
    full.reset(noise_features=mix.noise)
    expected = [full.step(b) for b in batches]

    first = TANLDetector(mix.id_text, mix.corpus, 100.0, cfg)
    first.reset(noise_features=mix.noise)
    for b in batches[:6]:
        first.step(b)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = TANLDetector.from_state(mix.id_text, mix.corpus, 100.0, state)
    assert resumed.queue_sizes == first.queue_sizes
    for b, want in zip(batches[6:], expected[6:]):
        got = resumed.step(b)
        assert torch.equal(got.scores, want.scores)
        assert torch.equal(got.first_pass_scores, want.first_pass_scores)
        assert torch.equal(got.selected, want.selected)
        assert got.threshold == want.threshold


def test_state_is_lean_at_imagenet_dimensions():
    g = torch.Generator().manual_seed(0)
    d = 512
    id_text = torch.nn.functional.normalize(torch.randn(50, d, generator=g), dim=1)
    corpus = torch.nn.functional.normalize(torch.randn(5000, d, generator=g), dim=1)
    det = TANLDetector(id_text, corpus, 100.0, TANLConfig(queue_len=300))
    det.reset(noise_features=torch.nn.functional.normalize(torch.randn(15, d, generator=g), dim=1))
    for _ in range(3):
        det.step(torch.nn.functional.normalize(torch.randn(256, d, generator=g), dim=1))
    buffer = io.BytesIO()
    torch.save(det.state_dict(), buffer)
    assert buffer.tell() < 5 * 1024 * 1024
    assert "rows" not in str(det.state_dict().keys())


def test_load_rejects_other_bank_and_other_config():
    mix = Mixture()
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    state = det.state_dict()
    other = TANLDetector(mix.id_text, mix.corpus[:-1], 100.0, TANLConfig(n_negatives=50, queue_len=10))
    with pytest.raises(ValueError, match="other label embeddings"):
        other.load_state_dict(state)
    other_cfg = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=11))
    with pytest.raises(ValueError, match="another TANLConfig"):
        other_cfg.load_state_dict(state)


def _bad_inputs(d):
    return [
        ("shape", torch.zeros(d)),
        ("shape", torch.zeros(2, d, 1)),
        ("dimension", torch.zeros(3, d + 1)),
        ("empty", torch.zeros(0, d)),
        ("NaN", torch.full((2, d), float("nan"))),
        ("NaN or infinite", torch.tensor([[float("inf")] * d])),
        ("floating", torch.zeros(2, d, dtype=torch.long)),
        ("torch.Tensor", [[0.0] * d]),
        # issue 11: embeddings that are not embeddings
        ("unit-norm.*row 0 has norm 0", torch.zeros(2, d)),
        ("unit-norm.*row 1 has norm 2", torch.cat([_unit_rows(1, d), 2 * _unit_rows(1, d)])),
        ("unit-norm", torch.full((3, d), 1e30)),
        ("unit-norm", torch.full((1, d), 1e-30)),
        ("unit-norm", (1 + 2 * UNIT_NORM_TOLERANCE) * _unit_rows(4, d)),
    ]


def _unit_rows(n, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(n)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def test_bad_input_raises_value_error_and_leaves_state_unchanged():
    mix = Mixture()
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    det.reset(noise_features=mix.noise)
    det.step(mix.batch(8)[0])
    before = det.state_dict()
    for expected, bad in _bad_inputs(mix.id_text.shape[1]):
        with pytest.raises(ValueError, match=expected):
            det.step(bad)
    _assert_same_state(before, det.state_dict())


def _assert_same_state(before, after):
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


def test_values_outside_the_bank_dtype_raise_and_leave_state_unchanged():
    # float64 1e300 used to overflow to inf in a float32 bank and end in an IndexError deep in the step
    mix = Mixture(dtype=torch.float32)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    det.reset(noise_features=mix.noise)
    det.step(mix.batch(8)[0])
    before = det.state_dict()
    threads = torch.get_num_threads()
    d = mix.id_text.shape[1]
    for bad in (torch.full((2, d), 1e300, dtype=torch.float64), torch.full((2, d), 1e30)):
        with pytest.raises(ValueError, match="range of torch.float32|unit-norm"):
            det.step(bad)
    with pytest.raises(ValueError, match="range of torch.float32"):
        det.step(torch.full((2, d), 1e300, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_features must be unit-norm"):
        det.reset(noise_features=torch.zeros(15, d))
    assert torch.get_num_threads() == threads  # the failed steps gave back the threads they borrowed
    _assert_same_state(before, det.state_dict())


def test_embeddings_normalised_in_any_float_precision_are_accepted():
    mix = Mixture(dtype=torch.float32)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    raw = 7.0 * torch.randn(16, mix.id_text.shape[1], generator=torch.Generator().manual_seed(3))  # encoder output
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        unit = torch.nn.functional.normalize(raw.to(dtype), dim=1)  # normalised in the encoder's precision
        assert det.step(unit).scores.shape == (16,)
    with pytest.raises(ValueError, match="unit-norm"):
        det.step(raw)  # the same features before normalisation


@pytest.mark.parametrize("name", sorted(n for n, entry in DETECTORS.items() if entry.detector.input == "embeddings"))
def test_every_label_detector_rejects_non_unit_embeddings(name):
    mix = Mixture()
    det = DETECTORS[name].detector(mix.id_text, mix.corpus, 100.0)
    good = mix.batch(4)[0]
    det.step(good)
    for bad in (torch.zeros_like(good), 3 * good):
        with pytest.raises(ValueError, match="unit-norm"):
            det.step(bad)


def test_results_do_not_alias_the_reused_buffers():
    mix = Mixture()
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    det.reset(noise_features=mix.noise)
    first = det.step(mix.batch(24)[0])
    kept = {k: getattr(first, k).clone() for k in ("scores", "first_pass_scores", "predictions", "top_negatives")}
    for size in (24, 40, 3):  # same size, a larger one (buffers grow), a smaller one (views of them)
        det.step(mix.batch(size)[0])
    for key, value in kept.items():
        assert torch.equal(getattr(first, key), value), key


@pytest.mark.parametrize("ood_fraction", [0.0, 0.35, 1.0])
def test_queued_activation_rows_are_the_softmax_rows(ood_fraction):
    # Only admitted images are softmaxed, in place or gathered; the queues must hold exactly torch.softmax's rows.
    mix = Mixture()
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=200, gap=0.0))
    det.reset(noise_features=mix.noise)
    for size in (1, 2, 5, 37, 64):
        x = mix.batch(size, ood_fraction=ood_fraction)[0]
        before = det.queue_sizes
        res = det.step(x)
        probs = torch.softmax(det.bank.logits(x), dim=1)[:, len(mix.id_text) :]
        sides = ((det._pos, res.confident_id, before[0]), (det._neg, res.confident_ood, before[1]))
        for queue, admitted, n_before in sides:
            n_new = int(admitted.sum())
            slots = queue.ordered_slots()[n_before : n_before + n_new]
            assert torch.equal(queue.rows[slots], probs[admitted])
            assert torch.equal(queue.features[slots], x[admitted])


def test_busy_and_idle_machines_give_the_same_bits(monkeypatch):
    # On a busy machine the small operations of a step run on one thread. Column means over rows add up in an order
    # that depends on the thread count, so they must still see the configured threads; the results must not move.
    import tanl_guard.detectors.tanl as tanl_module

    mix = Mixture(dtype=torch.float32, n_corpus=5000)
    batches = [mix.batch(n)[0] for n in (64, 48, 64, 7, 64)]
    threads_seen = []
    tensor_mean = torch.Tensor.mean

    def spy_mean(self, *args, **kwargs):
        if self.ndim == 2 and self.shape[1] == 5000 and (args[:1] == (0,) or kwargs.get("dim") == 0):
            threads_seen.append(torch.get_num_threads())
        return tensor_mean(self, *args, **kwargs)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for busy in (False, True):
            monkeypatch.setattr(tanl_module, "machine_is_busy", lambda busy=busy: busy)
            det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=200, queue_len=100))
            det.reset(noise_features=mix.noise)
            monkeypatch.setattr(torch.Tensor, "mean", spy_mean)
            runs.append([det.step(b) for b in batches])
            monkeypatch.setattr(torch.Tensor, "mean", tensor_mean)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert len(threads_seen) >= 2 * len(batches) and set(threads_seen) == {2}  # queue and batch means
    for idle, busy in zip(*runs):
        for key in ("scores", "first_pass_scores", "selected", "confident_id", "top_negatives"):
            assert torch.equal(getattr(idle, key), getattr(busy, key)), key


def test_construction_and_reset_validation():
    mix = Mixture()
    with pytest.raises(ValueError, match="non-empty corpus"):
        TANLDetector(mix.id_text, mix.corpus[:0], 100.0)
    with pytest.raises(ValueError, match="dimension"):
        TANLDetector(mix.id_text, mix.corpus[:, :-1], 100.0)
    with pytest.raises(ValueError, match="logit_scale"):
        TANLDetector(mix.id_text, mix.corpus, 0.0)
    with pytest.raises(ValueError, match="gap"):
        TANLConfig(gap=1.5)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=10_000))
    assert det.n_negatives == len(mix.corpus)  # M is clipped to the corpus size
    with pytest.raises(ValueError, match="permutation"):
        det.reset(noise_features=mix.noise, id_order=[0, 0, 1])


def test_without_reset_or_noise_the_detector_still_runs():
    mix = Mixture()
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    res = det.step(mix.batch(8)[0])  # lazily resets with an empty OOD queue
    assert res.scores.shape == (8,) and det.queue_sizes[0] > 0
    det.reset()
    assert det.queue_sizes[1] == 0


def test_follows_the_dtype_of_the_label_embeddings():
    mix = Mixture(dtype=torch.float64)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=10))
    res = det.step(mix.batch(4)[0].float())
    assert res.scores.dtype == torch.float64 and res.first_pass_scores.dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mix = Mixture()
    cfg = TANLConfig(n_negatives=80, queue_len=20)
    cpu = TANLDetector(mix.id_text, mix.corpus, 100.0, cfg)
    gpu = TANLDetector(mix.id_text.cuda(), mix.corpus.cuda(), 100.0, cfg)
    cpu.reset(noise_features=mix.noise)
    gpu.reset(noise_features=mix.noise.cuda())
    for _ in range(5):
        x = mix.batch(32)[0]
        a, b = cpu.step(x), gpu.step(x.cuda())
        assert b.scores.device.type == "cuda"
        torch.testing.assert_close(a.scores, b.scores.cpu(), rtol=0, atol=1e-9)


def test_admission_masks_decide_what_enters_the_queues():
    mix = Mixture(n_corpus=400)
    det = TANLDetector(mix.id_text, mix.corpus, 100.0, TANLConfig(n_negatives=50, queue_len=100))
    det.reset(noise_features=mix.noise)
    x, is_ood = mix.batch(40, ood_fraction=0.5)
    before = det.queue_sizes
    res = det.step(x, admit=(~is_ood, is_ood))  # e.g. a feature gate's verdicts
    assert torch.equal(res.confident_id, ~is_ood) and torch.equal(res.confident_ood, is_ood)
    assert det.queue_sizes == (min(100, before[0] + int((~is_ood).sum())), min(100, before[1] + int(is_ood.sum())))
    for bad in ((~is_ood,), (~is_ood, is_ood[:5]), (torch.ones(40, dtype=torch.bool),) * 2):
        with pytest.raises(ValueError, match="admit"):
            det.step(x, admit=bad)
