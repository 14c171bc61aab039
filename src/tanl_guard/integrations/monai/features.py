# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A MONAI classifier's own penultimate features as the guard's feature source (``feature_source="external"``).

The features most in-domain for a classifier are its own: a forward hook on a named layer captures that layer's
output during the classifier's ordinary forward pass (no second pass), pooled over any spatial dimensions and
flattened to (B, F). Fit the guard's feature gate on the classifier's features of reference ID inputs, then give
each batch's features with its embeddings::

    from tanl_guard.encoders import ImageEncoding
    from tanl_guard.guard import Guard
    from tanl_guard.integrations.monai.features import ClassifierFeatures

    hook = ClassifierFeatures(network)                       # MONAI DenseNet: layer "class_layers.flatten"
    guard = Guard.build(encoder="biomedclip", labels=["brain MRI"], detector="tanl+knn",
                        reference_features={"brain MRI": hook.features(reference_inputs)})
    logits, features = hook(inputs)                           # the classifier's forward, features captured
    gate = guard.score_features(ImageEncoding(guard.encoder.encode_images(views), features))

Which layer: the input of the final linear layer, after pooling. Defaults per MONAI network
(:data:`DEFAULT_FEATURE_LAYERS`): DenseNet ``class_layers.flatten``; ResNet ``avgpool``; EfficientNetBN
``_avg_pooling``; others must name one (``dict(network.named_modules())`` lists them).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ClassifierFeatures", "DEFAULT_FEATURE_LAYERS", "default_feature_layer"]

#: the penultimate (pooled) layer of MONAI's classifiers, by class name
DEFAULT_FEATURE_LAYERS = {
    "DenseNet": "class_layers.flatten",
    "DenseNet121": "class_layers.flatten",
    "DenseNet169": "class_layers.flatten",
    "DenseNet201": "class_layers.flatten",
    "DenseNet264": "class_layers.flatten",
    "ResNet": "avgpool",
    "EfficientNetBN": "_avg_pooling",
}


def default_feature_layer(network: torch.nn.Module) -> str:
    """The penultimate layer of a known MONAI classifier (see :data:`DEFAULT_FEATURE_LAYERS`).

    Args:
        network: the classifier.

    Raises:
        ValueError: an unknown network: name the layer.
    """
    for cls in type(network).__mro__:
        if cls.__name__ in DEFAULT_FEATURE_LAYERS:
            return DEFAULT_FEATURE_LAYERS[cls.__name__]
    raise ValueError(f"no default feature layer for {type(network).__name__}: pass layer= (a name from "
                     "dict(network.named_modules()), the input of the final linear layer)")


def _pooled(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        raise ValueError(f"the hooked layer gave {type(output).__name__}, not a (B, C, ...) tensor")
    if output.ndim > 2:  # a feature map: global average pool, as the classifier's own head does
        output = output.flatten(2).mean(dim=2)
    return output.detach().float()


class ClassifierFeatures:
    """A forward hook on a named layer of a classifier that returns its pooled output as (B, F) features.

    Args:
        network: the classifier (a ``torch.nn.Module``; put it in eval mode for inference).
        layer: the module whose output is taken (dotted name); the network's default when None.

    Use it from the thread that runs the classifier (the hook keeps the last batch's output); :meth:`remove`
    (or a ``with`` block) takes the hook off.
    """

    def __init__(self, network: torch.nn.Module, layer: str | None = None) -> None:
        self.network = network
        self.layer = layer or default_feature_layer(network)
        modules = dict(network.named_modules())
        if self.layer not in modules:
            near = [name for name in modules if name.split(".")[-1] == self.layer.split(".")[-1]]
            raise ValueError(f"{type(network).__name__} has no layer {self.layer!r}" +
                             (f" (did you mean {near}?)" if near else ""))
        self._captured: torch.Tensor | None = None
        self._handle = modules[self.layer].register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self._captured = _pooled(output)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> tuple[Any, torch.Tensor]:
        """Run the classifier once: ``(its outputs, (B, F) features of the hooked layer)``.

        Args:
            inputs: the classifier's input batch.
            *args: further positional arguments of the network.
            **kwargs: keyword arguments of the network.
        """
        self._captured = None
        outputs = self.network(inputs, *args, **kwargs)
        if self._captured is None:
            raise RuntimeError(f"layer {self.layer!r} did not run in the forward pass")
        features, self._captured = self._captured, None
        return outputs, features

    def features(self, inputs: Any, batch_size: int = 32) -> torch.Tensor:
        """The (N, F) features of a set of inputs (e.g. the reference ID images), without gradients.

        Args:
            inputs: an (N, C, ...) tensor.
            batch_size: inputs per forward pass.
        """
        with torch.no_grad():
            return torch.cat([self(inputs[i : i + batch_size])[1] for i in range(0, len(inputs), batch_size)])

    def remove(self) -> None:
        """Take the hook off the network."""
        self._handle.remove()

    def __enter__(self) -> ClassifierFeatures:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
