# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Helpers of the MONAI integration tests: the tiny network, call counters, the data loader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

SIZE = 96  # image size: the tiny DenseNet is instant, and the surrogate still tells brain slices from photos
MIN_GAP = 0.15  # the least id_score gap between the test brain slices and the photos the tests rely on
SALT = "tanl-guard-monai-tests"

# the negative-label corpus of the test guard: everyday and medical nouns
CORPUS_WORDS = (
    "cat dog car tree house chair table cup bottle phone book lamp bicycle bird fish flower apple banana pizza "
    "shoe hat shirt clock window door road mountain river beach boat airplane train bus truck horse cow sheep "
    "elephant guitar piano camera computer keyboard television sofa bed toilet sink refrigerator oven knife "
    "spoon fork bowl chest skull bone lung heart kidney liver ultrasound mammogram"
).split()


class GuardSpy:
    """Counts ``score_images`` calls on a guard and the images of each call."""

    def __init__(self, guard: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []
        original = guard.score_images

        def score_images(images: Any) -> Any:
            self.calls.append(len(images))
            return original(images)

        monkeypatch.setattr(guard, "score_images", score_images)


def make_network(spatial_dims: int = 2) -> torch.nn.Module:
    """The tiny DenseNet of MONAI's own tests, in eval mode, seeded."""
    from monai.networks.nets import DenseNet

    torch.manual_seed(0)
    return DenseNet(
        spatial_dims=spatial_dims, in_channels=1, out_channels=2, init_features=2, growth_rate=2, block_config=(2,)
    ).eval()


class ForwardCounter:
    """Counts calls and the items the network was run on (a forward pre-hook)."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.calls = 0
        self.items = 0
        network.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        self.calls += 1
        self.items += int(args[0].shape[0])


# Items of the evaluation set, in order: brain, cat, brain | astronaut, brain, brain (batch size 3).
EVAL_KINDS = ("brain", "photo", "brain", "photo", "brain", "brain")


def eval_loader(files: list[dict[str, Any]], batch_size: int = 3) -> Any:
    """A MONAI DataLoader over the files: LoadImaged (NumpyReader), channel first, label as a tensor."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged

    transform = Compose(
        [
            LoadImaged(keys="image", reader="NumpyReader"),
            EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            EnsureTyped(keys=["image", "label"]),
        ]
    )
    data = [{"image": f["image"], "label": f["label"]} for f in files]
    return DataLoader(Dataset(data=data, transform=transform), batch_size=batch_size, shuffle=False, num_workers=0)


def batch_of(images: list[np.ndarray]) -> torch.Tensor:
    """A (B, 1, H, W) float batch from 2D arrays."""
    return torch.stack([torch.as_tensor(a, dtype=torch.float32)[None] for a in images])
