# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``GuardedClassifier``: an ``nn.Module`` that gates its input batch, then classifies (plain PyTorch users)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .gating import OutputTemplate, check_on_reject, run_gated
from .verdicts import BatchVerdicts
from .views import parse_view

__all__ = ["GuardedClassifier"]


class GuardedClassifier(nn.Module):
    """A classifier behind the OOD gate, for plain PyTorch loops and ``SimpleInferer``.

    ``forward(x)`` scores the batch with the guard once, then runs ``classifier`` by ``on_reject`` (see
    :class:`~tanl_guard.integrations.monai.GuardedInferer` for ``skip``, ``nan`` and ``pass``). The output is a
    MetaTensor with the verdicts in its metadata; the verdicts of the last call are also on :attr:`last_result`.

    **Not for sliding-window or slice inferers**: those call the module once per patch or slice, so the gate would
    judge patches instead of images (and update its online state with them). Use
    :class:`~tanl_guard.integrations.monai.GuardedInferer` around the base inferer instead.

    The gate runs in ``eval()`` mode only: in training mode ``forward`` is the classifier's (NaN rows would poison
    the loss, and training images must not move the detector's online state). The guard is not a submodule:
    ``state_dict()`` holds the classifier's weights under ``classifier.``; the guard's state is saved with
    ``guard.state_dict()``.

    Example code::

        model = GuardedClassifier(DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), guard).eval()
        with torch.no_grad():
            logits = model(images)  # NaN rows for rejected images
        accepted = model.last_result.accepted

    Args:
        classifier: the network (any callable module taking the batch).
        guard: the :class:`~tanl_guard.guard.Guard`.
        on_reject: ``"nan"`` (default), ``"skip"`` or ``"pass"``.
        to_guard_images: custom conversion of the inputs into guard images (see ``GuardedInferer``).
        view: 3D view spec of the default conversion: ``"slices:K"``, ``"mid"`` or ``"mip"``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        guard: Any,
        on_reject: str = "nan",
        to_guard_images: Callable[[torch.Tensor], Any] | None = None,
        view: str = "slices:3",
    ) -> None:
        super().__init__()
        if guard is None:
            raise ValueError("GuardedClassifier needs a guard (tanl_guard.guard.Guard)")
        self.classifier = classifier
        self.guard = guard
        self.on_reject = check_on_reject(on_reject)
        self.to_guard_images = to_guard_images
        self.view = parse_view(view)
        self.last_result: BatchVerdicts | None = None
        self._template = OutputTemplate()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Gate ``x`` (in eval mode) and classify it.

        Args:
            x: the input batch, (B, C, H, W) or (B, C, H, W, D).
            args: extra positional arguments for the classifier.
            kwargs: extra keyword arguments for the classifier.

        Returns:
            the classifier output (rejected rows NaN under ``skip``/``nan``), as MetaTensor(s) with the verdicts.
        """
        if self.training:
            return self.classifier(x, *args, **kwargs)
        output, verdicts = run_gated(
            self.guard,
            x,
            self.classifier,
            args=args,
            kwargs=kwargs,
            on_reject=self.on_reject,
            view=self.view,
            to_guard_images=self.to_guard_images,
            template=self._template,
        )
        self.last_result = verdicts
        return output

    def extra_repr(self) -> str:
        return f"on_reject={self.on_reject!r}, view={str(self.view)!r}"
