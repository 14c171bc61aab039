# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A MONAI classifier's penultimate features as the guard's feature source, with the tiny DenseNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai_testing import make_network

from tanl_guard.encoders import ImageEncoding
from tanl_guard.integrations.monai.features import ClassifierFeatures, default_feature_layer


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack(images), dtype=torch.float32)[:, None]


def test_hook_returns_the_outputs_and_the_pooled_penultimate_layer(brain_slices):
    network = make_network()
    x = _batch(brain_slices[:4])
    with torch.no_grad():
        plain = network(x)
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.relu(network.features(x)), 1).flatten(1)
    with ClassifierFeatures(network) as hook, torch.no_grad():
        assert hook.layer == "class_layers.flatten" == default_feature_layer(network)
        outputs, features = hook(x)  # one forward pass: the classifier's outputs, and its features
        torch.testing.assert_close(outputs, plain)
        torch.testing.assert_close(features, expected)
        assert hook.features(x, batch_size=3).shape == features.shape
    with ClassifierFeatures(network, "features.norm5") as spatial, torch.no_grad():  # a feature map: pooled
        torch.testing.assert_close(spatial(x)[1], network.features(x).mean(dim=(2, 3)))
    assert not network.class_layers.flatten._forward_hooks  # removed on exit


def test_bad_layers_are_named():
    network = make_network()
    with pytest.raises(ValueError, match="did you mean"):
        ClassifierFeatures(network, "flatten")
    with pytest.raises(ValueError, match="no default feature layer"):
        ClassifierFeatures(torch.nn.Linear(3, 2))


def test_guard_feature_gate_on_classifier_features(brain_slices, photos):
    from tanl_guard.guard import Guard

    network = make_network()
    hook = ClassifierFeatures(network)
    references = _batch(brain_slices[0::2])
    guard = Guard.build(encoder="surrogate", labels=["brain MRI"], detector="knn",
                        reference_features={"brain MRI": hook.features(references)})
    assert guard.feature_source == "external" and guard.feature_calibration["n_reference"] == 5
    with pytest.raises(ValueError, match="external"):
        guard.score_images(brain_slices[:2])
    inputs = _batch(brain_slices[0::2][:2] + photos)
    with torch.no_grad():
        _, features = hook(inputs)
    views = [np.asarray(image) for image in brain_slices[0::2][:2] + photos]
    gate = guard.score_features(ImageEncoding(guard.encoder.encode_images(views), features))
    assert gate.scores[:2].tolist() == pytest.approx([1.0, 1.0])  # a reference is its own nearest neighbour
    assert bool(gate.accepted[:2].all()) and float(gate.scores[2:].max()) < 1.0
