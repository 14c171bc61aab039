# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""GuardedInferer in real MONAI engines: the three on_reject modes, decollate and post-transforms, sliding window."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.engines import IterationEvents, SupervisedEvaluator
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd
from monai_testing import EVAL_KINDS, SIZE, ForwardCounter, batch_of, eval_loader, make_network

from tanl_guard.integrations.monai import OOD_META_KEYS, GuardedInferer

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

IS_OOD = [kind == "photo" for kind in EVAL_KINDS]


def run_evaluator(inferer: GuardedInferer, files: list[dict[str, Any]]) -> tuple[dict[str, Any], ForwardCounter]:
    """Run a SupervisedEvaluator with softmax + argmax post-transforms; collect the batched and decollated outputs."""
    network = make_network()
    counter = ForwardCounter(network)
    post = Compose(
        [
            CopyItemsd(keys="pred", names="prob"),
            Activationsd(keys="prob", softmax=True),
            AsDiscreted(keys="pred", argmax=True),
        ]
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=eval_loader(files),
        network=network,
        inferer=inferer,
        postprocessing=post,
        decollate=True,
    )
    seen: dict[str, Any] = {"batched": [], "items": []}

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def _batched(engine: Any) -> None:
        seen["batched"].append(engine.state.output["pred"])

    @evaluator.on(IterationEvents.MODEL_COMPLETED)  # registered after decollate + postprocessing
    def _items(engine: Any) -> None:
        seen["items"].extend(engine.state.output)

    evaluator.run()
    return seen, counter


def test_skip_rejected_items_get_no_prediction(fresh_guard, guard_spy, eval_files):
    inferer = GuardedInferer(SimpleInferer(), guard=fresh_guard)  # on_reject="skip" is the default
    seen, counter = run_evaluator(inferer, eval_files)

    assert guard_spy.calls == [3, 3], "one guard call per batch"
    # the network only ever saw the accepted items
    assert counter.items == IS_OOD.count(False) == 4
    batched = torch.cat([p.as_tensor() for p in seen["batched"]])
    assert batched.shape == (6, 2)
    for row, ood in zip(batched, IS_OOD, strict=True):
        assert bool(torch.isnan(row).all()) == ood
        assert bool(torch.isfinite(row).all()) == (not ood)

    items = seen["items"]
    assert len(items) == 6
    threshold = fresh_guard.policy.threshold.value
    for item, ood in zip(items, IS_OOD, strict=True):
        pred, prob = item["pred"], item["prob"]
        assert isinstance(pred, MetaTensor) and pred.shape == (1,)  # argmax ran
        assert set(OOD_META_KEYS) <= set(pred.meta)
        assert pred.meta["ood_accepted"] is (not ood)
        assert pred.meta["ood_classified"] is (not ood)
        assert pred.meta["ood_flagged"] is False
        assert pred.meta["ood_threshold"] == pytest.approx(threshold)
        assert (pred.meta["ood_id_score"] >= threshold) == (not ood)
        assert pred.meta["filename_or_obj"].endswith(f"_{'photo' if ood else 'brain'}.npy")
        if ood:
            assert bool(torch.isnan(prob).all())
            assert pred.meta["ood_top_negatives"]  # the negatives that fired are named
        else:
            assert pred.meta["ood_prediction"] == "brain MRI"
            assert float(prob.sum()) == pytest.approx(1.0, abs=1e-5)
    last = inferer.last_result
    assert last is not None and last.on_reject == "skip" and len(last) == 3
    assert last.accepted.tolist() == [not o for o in IS_OOD[3:]]


def test_pass_classifies_everything_and_flags_rejected(fresh_guard, guard_spy, eval_files):
    inferer = GuardedInferer(guard=fresh_guard, on_reject="pass")
    seen, counter = run_evaluator(inferer, eval_files)

    assert guard_spy.calls == [3, 3]
    assert counter.items == 6
    batched = torch.cat([p.as_tensor() for p in seen["batched"]])
    assert bool(torch.isfinite(batched).all())
    for item, ood in zip(seen["items"], IS_OOD, strict=True):
        meta = item["pred"].meta
        assert meta["ood_accepted"] is (not ood)
        assert meta["ood_classified"] is True
        assert meta["ood_flagged"] is ood
        assert float(item["prob"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert inferer.last_result.flagged.tolist() == IS_OOD[3:]


def test_nan_runs_all_then_masks_and_all_rejected_skip_needs_no_network(fresh_guard, brain_slices, photos):
    network = make_network()
    counter = ForwardCounter(network)
    batch = batch_of([brain_slices[1], photos[0]])
    with torch.no_grad():
        out = GuardedInferer(guard=fresh_guard, on_reject="nan")(batch, network)
        assert counter.items == 2
        assert isinstance(out, MetaTensor) and out.shape == (2, 2)
        assert bool(torch.isfinite(out[0]).all()) and bool(torch.isnan(out[1]).all())
        assert out.meta["ood_accepted"].tolist() == [True, False]
        # the unguarded network gives the same row for the accepted item
        assert torch.allclose(out.as_tensor()[0], network(batch)[0], atol=1e-6)  # the accepted row is the network's

        # skip, every item rejected: a fresh inferer probes with an empty batch (no image reaches the network) ...
        counter.items = 0
        skip = GuardedInferer(guard=fresh_guard, on_reject="skip")
        out = skip(batch_of(photos), network)
        assert counter.items == 0
        assert out.shape == (2, 2) and bool(torch.isnan(out).all())
        # ... and once it has seen an output, the network is not called at all
        calls = counter.calls
        out = skip(batch_of(photos), network)
        assert counter.calls == calls and bool(torch.isnan(out).all())


def test_plain_tensor_input_and_input_meta_untouched(fresh_guard, brain_slices, photos):
    network = make_network()
    inputs = MetaTensor(batch_of([photos[1], brain_slices[3]]), meta={"filename_or_obj": ["a.npy", "b.npy"]})
    inputs.is_batch = True
    with torch.no_grad():
        out = GuardedInferer(guard=fresh_guard)(inputs, network)
    assert out.meta["filename_or_obj"] == ["a.npy", "b.npy"]
    assert out.meta["ood_accepted"].tolist() == [False, True]
    assert "ood_id_score" not in inputs.meta  # the input's metadata is not modified
    assert math.isnan(float(out[0, 0])) and math.isfinite(float(out[1, 0]))


def test_sliding_window_base_gates_once_per_batch(fresh_guard, guard_spy, brain_slices, photos):
    """The gate judges whole images: one guard call per batch while the network runs once per window."""
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1).eval()
    counter = ForwardCounter(network)
    base = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=1, overlap=0.25)
    inferer = GuardedInferer(base, guard=fresh_guard, on_reject="skip")
    batch = batch_of([brain_slices[1], photos[0], brain_slices[5]])
    with torch.no_grad():
        out = inferer(batch, network)
    assert guard_spy.calls == [3]
    assert counter.calls > 2  # several windows per image ...
    assert counter.items == counter.calls  # ... of the 2 accepted images only (sw_batch_size=1)
    assert out.shape == (3, 2, SIZE, SIZE)
    assert bool(torch.isnan(out[1]).all())
    assert bool(torch.isfinite(out[[0, 2]]).all())
    expected = base(batch[[0, 2]], network)
    assert torch.allclose(torch.as_tensor(out)[[0, 2]], torch.as_tensor(expected), atol=1e-6)


def test_volumes_are_judged_on_axial_slices(fresh_guard, guard_spy, mni_volume, photos):
    """3D inputs: 3 axial slices per volume, scored in one guard call, reduced to one verdict per volume."""
    from skimage.transform import resize

    # the slab of the reference slices; its 25/50/75 % slices are new to the guard
    brain = resize(mni_volume[:, :, 28:63], (SIZE, SIZE, 16), anti_aliasing=True).astype(np.float32)
    photo = np.repeat(photos[1][:, :, None], 16, axis=2)
    batch = torch.stack([torch.as_tensor(brain)[None], torch.as_tensor(np.ascontiguousarray(photo))[None]])
    network = make_network(spatial_dims=3)
    inferer = GuardedInferer(guard=fresh_guard, view="slices:3")
    with torch.no_grad():
        out = inferer(batch, network)
    assert guard_spy.calls == [6]
    assert out.shape == (2, 2)
    result = inferer.last_result
    assert out.meta["ood_accepted"].tolist() == [True, False], result.view_scores
    assert result.view_scores.shape == (2, 3)
    # one score per volume: the guard policy's reduction (mean) of its three views
    assert torch.allclose(result.scores, result.view_scores.mean(dim=1), atol=1e-6)
    assert bool(torch.isfinite(out[0]).all()) and bool(torch.isnan(out[1]).all())


def test_bad_arguments(fresh_guard):
    with pytest.raises(ValueError, match="on_reject"):
        GuardedInferer(guard=fresh_guard, on_reject="drop")
    with pytest.raises(ValueError, match="guard"):
        GuardedInferer(SimpleInferer())
    with pytest.raises(ValueError, match="view"):
        GuardedInferer(guard=fresh_guard, view="front")
