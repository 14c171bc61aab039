# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``GuardedInferer``: a MONAI inferer that gates each whole input batch once, then delegates to a base inferer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tanl_guard._optional import optional_import

from .gating import OutputTemplate, check_on_reject, run_gated
from .verdicts import BatchVerdicts
from .views import parse_view

__all__ = ["GuardedInferer"]

monai_inferers = optional_import("monai.inferers", "monai", "the MONAI integration")


class GuardedInferer(monai_inferers.Inferer):
    """Out-of-distribution gate in front of any MONAI inferer.

    On each call it turns the whole classifier batch into 2D views, scores them with the guard **once** (never
    per sliding-window patch or per slice), judges each item, and then runs the base inferer according to
    ``on_reject``:

    - ``"skip"`` (default): the network runs on the accepted items only; the rows of rejected items are NaN, so
      no prediction exists for them.
    - ``"nan"``: the network runs on every item; the rows of rejected items are set to NaN.
    - ``"pass"``: the network runs on every item and the output is unchanged; rejected items are flagged
      (``ood_flagged``), so a prediction made on an out-of-distribution input is kept for audit but marked.

    The output has the base inferer's shape and is a MetaTensor whose batched metadata carries the verdicts
    (``ood_id_score``, ``ood_accepted``, ``ood_threshold``, ``ood_classified``, ``ood_flagged``,
    ``ood_prediction``, ``ood_top_negatives``; see :mod:`tanl_guard.integrations.monai.verdicts`), so
    ``decollate_batch`` gives every item its own verdict and post-transforms run as usual (they see NaN rows for
    items that were not classified). The verdicts of the last call are also on :attr:`last_result`.

    Guard views (default conversion): 2D inputs (B, C, H, W) are scored as they are; 3D inputs (B, C, H, W, D)
    give ``view`` views along the last (axial) axis: ``"slices:3"`` (default) scores 3 evenly spaced slices per
    volume and reduces their scores per volume by the guard policy's ``view_reduction`` (mean or min);
    ``"mid"`` scores the middle slice; ``"mip"`` a maximum intensity projection. A 3-channel input is read as RGB,
    any other as its channel 0, and every view is min-max scaled to [0, 1], so the inputs may have any intensity
    range (the classifier's own). Give the guard reference images made the same way (e.g. with
    :class:`~tanl_guard.integrations.monai.ToGuardViewd`).

    The guard owns the online detector state and lives in the main process, next to the network; that is why
    the gate is an inferer and not a transform (DataLoader workers would each fork their own copy of the state).

    Example code::

        guard = Guard.build(encoder="biomedclip", labels=["brain MRI"], reference_images={"brain MRI": refs})
        inferer = GuardedInferer(SlidingWindowInferer(roi_size=(96, 96, 96)), guard=guard, on_reject="skip")
        evaluator = SupervisedEvaluator(device, val_loader, network, inferer=inferer, postprocessing=post)

    Args:
        base_inferer: the inferer that runs the network (``SimpleInferer()`` when None), e.g. a
            ``SlidingWindowInferer``.
        guard: the :class:`~tanl_guard.guard.Guard` (required; keyword ``guard=`` in bundles).
        on_reject: ``"skip"``, ``"nan"`` or ``"pass"``.
        to_guard_images: custom conversion of the classifier inputs into guard images: a callable
            ``inputs -> images`` returning a (N, C, H, W) tensor in [0, 1] (C = 1 or 3) or a list of
            (H, W)/(H, W, 3) arrays in [0, 1], with N = B (one view per item) or N = B * K (K views per item,
            item-major; their scores are reduced per item by the guard policy). ``None``: the default conversion.
            Images it returns outside [0, 1] are min-max scaled per image by the encoder, with an
            ``ImageRangeWarning``.
        view: 3D view spec of the default conversion: ``"slices:K"``, ``"mid"`` or ``"mip"``.

    Raises:
        ValueError: no guard, or an unknown ``on_reject`` or ``view``.
    """

    def __init__(
        self,
        base_inferer: Any = None,
        guard: Any = None,
        on_reject: str = "skip",
        to_guard_images: Callable[[torch.Tensor], Any] | None = None,
        view: str = "slices:3",
    ) -> None:
        super().__init__()
        if guard is None:
            raise ValueError("GuardedInferer needs a guard (tanl_guard.guard.Guard)")
        self.base_inferer = base_inferer if base_inferer is not None else monai_inferers.SimpleInferer()
        self.guard = guard
        self.on_reject = check_on_reject(on_reject)
        self.to_guard_images = to_guard_images
        self.view = parse_view(view)
        self.last_result: BatchVerdicts | None = None
        self._template = OutputTemplate()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Gate ``inputs`` once, then run ``base_inferer(inputs, network, *args, **kwargs)`` by the policy.

        Args:
            inputs: the classifier input batch, (B, C, H, W) or (B, C, H, W, D).
            network: the model.
            args: optional positional arguments for ``network`` (per-item tensors follow the accepted rows under
                ``skip``).
            kwargs: optional keyword arguments for ``network``, likewise.

        Returns:
            the base inferer's output (same shape), as MetaTensor(s) carrying the verdicts.
        """

        def run(x: torch.Tensor, *a: Any, **kw: Any) -> Any:
            return self.base_inferer(x, network, *a, **kw)

        output, verdicts = run_gated(
            self.guard,
            inputs,
            run,
            args=args,
            kwargs=kwargs,
            on_reject=self.on_reject,
            view=self.view,
            to_guard_images=self.to_guard_images,
            template=self._template,
        )
        self.last_result = verdicts
        return output

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_inferer={type(self.base_inferer).__name__}, on_reject={self.on_reject!r}, "
            f"view={str(self.view)!r})"
        )
