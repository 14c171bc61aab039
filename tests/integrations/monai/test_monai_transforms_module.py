# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""ToGuardViewd (stateless views of 2D and 3D images) and GuardedClassifier in a plain PyTorch loop."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd
from monai_testing import SIZE, ForwardCounter, batch_of, make_network

from tanl_guard.integrations.monai import GuardedClassifier, ToGuardViewd, guard_views


def _volume(mni_volume: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(mni_volume[None] * 1000.0 - 50.0)  # (1, H, W, D), raw-scanner-like intensities


def test_views_of_2d_and_3d(mni_volume, photos):
    vol = _volume(mni_volume)
    d = {"image": vol, "photo": torch.as_tensor(photos[0][None] * 255.0)}
    out = ToGuardViewd(keys=["image", "photo"], view="mid")(d)
    assert out["image"] is vol  # inputs are left alone
    mid = out["image_guard"]
    assert mid.shape == (1, 99, 117) and mid.dtype == torch.float32
    assert float(mid.min()) == 0.0 and float(mid.max()) == 1.0
    expected = (vol[0, :, :, 47] - vol[0, :, :, 47].min()) / (vol[0, :, :, 47].max() - vol[0, :, :, 47].min())
    assert torch.allclose(mid[0], expected, atol=1e-6)
    assert out["photo_guard"].shape == (1, SIZE, SIZE)
    assert torch.allclose(out["photo_guard"][0], torch.as_tensor(photos[0]), atol=1e-5)

    slices = ToGuardViewd("image", view="slices:3", output_key="views")({"image": vol})["views"]
    assert slices.shape == (3, 1, 99, 117)  # axial slices at 25/50/75 %
    assert torch.allclose(slices[1], mid)
    mip = ToGuardViewd("image", view="mip", output_key="image")({"image": vol.numpy()})["image"]
    assert mip.shape == (1, 99, 117) and float(mip.max()) == 1.0

    rgb = ToGuardViewd("image")({"image": torch.rand(3, 16, 20)})["image_guard"]
    assert rgb.shape == (3, 16, 20)  # three channels are read as RGB
    multi = ToGuardViewd("image")({"image": torch.rand(2, 16, 20, 8)})["image_guard"]
    assert multi.shape == (1, 16, 20)  # other channel counts: channel 0

    # the transform and the inferer's default conversion agree
    batched, k = guard_views(vol[None], "slices:3")
    assert k == 3 and torch.allclose(batched, slices)


def test_transform_is_stateless(mni_volume):
    t = ToGuardViewd("image", view="slices:2")
    state = {k: v for k, v in vars(t).items()}
    assert not any(isinstance(v, torch.Tensor) for v in state.values())
    assert "guard" not in state and "detector" not in state
    vol = _volume(mni_volume)
    first = t({"image": vol})["image_guard"]
    assert torch.equal(first, t({"image": vol})["image_guard"])  # no memory between calls
    assert vars(t) == state
    clone = pickle.loads(pickle.dumps(t))  # safe to send to DataLoader workers
    assert torch.equal(clone({"image": vol})["image_guard"], first)

    data = [{"image": mni_volume[:, :, z].copy()} for z in (30, 40, 50)]
    pipeline = Compose([EnsureChannelFirstd("image", channel_dim="no_channel"), ToGuardViewd("image")])
    batch = next(iter(DataLoader(Dataset(data, pipeline), batch_size=3)))
    assert batch["image_guard"].shape == (3, 1, 99, 117)


def test_transform_arguments():
    with pytest.raises(ValueError, match="view"):
        ToGuardViewd("image", view="sideways")
    with pytest.raises(ValueError, match="output_key"):
        ToGuardViewd(["a", "b"], output_key="c")
    with pytest.raises(ValueError, match="channel-first"):
        ToGuardViewd("image")({"image": torch.rand(8)})


def test_guarded_classifier_plain_pytorch(fresh_guard, brain_slices, photos):
    network = make_network()
    counter = ForwardCounter(network)
    model = GuardedClassifier(network, fresh_guard)  # on_reject="nan"
    batch = batch_of([photos[1], brain_slices[7]])
    model.eval()
    with torch.no_grad():
        logits = model(batch)
    assert isinstance(logits, MetaTensor) and logits.shape == (2, 2)
    assert bool(torch.isnan(logits[0]).all()) and bool(torch.isfinite(logits[1]).all())
    assert model.last_result.accepted.tolist() == [False, True]
    assert logits.meta["ood_accepted"].tolist() == [False, True]
    assert counter.items == 2  # "nan" runs the classifier on everything, then masks
    assert set(model.state_dict()) == {f"classifier.{k}" for k in network.state_dict()}

    # training mode: the classifier alone, the online state untouched
    screened = fresh_guard.n_images
    model.train()
    out = model(batch)
    assert not isinstance(out, MetaTensor) and bool(torch.isfinite(out).all())
    assert fresh_guard.n_images == screened
