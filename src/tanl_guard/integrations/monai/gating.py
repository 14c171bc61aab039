# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Gate a batch once, run the classifier by the ``on_reject`` policy, and put the verdicts on the output.

Shared by :class:`~tanl_guard.integrations.monai.GuardedInferer` (the classifier is a MONAI inferer call) and
:class:`~tanl_guard.integrations.monai.GuardedClassifier` (the classifier is a module call).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from tanl_guard._optional import optional_import
from tanl_guard.guard.verdicts import ACCEPT

from .verdicts import ON_REJECT_MODES, BatchVerdicts
from .views import guard_views

__all__ = ["check_on_reject", "gate_batch", "run_gated", "OutputTemplate"]

monai_data = optional_import("monai.data", "monai", "the MONAI integration")
MetaTensor = monai_data.MetaTensor


def check_on_reject(on_reject: str) -> str:
    """Validate an ``on_reject`` policy.

    Args:
        on_reject: ``"skip"``, ``"nan"`` or ``"pass"``.
    """
    if on_reject not in ON_REJECT_MODES:
        raise ValueError(f"on_reject must be one of {ON_REJECT_MODES}, got {on_reject!r}")
    return on_reject


def _to_guard_input(images: Any) -> tuple[Any, int]:
    if isinstance(images, torch.Tensor):
        x = images.as_tensor() if hasattr(images, "as_tensor") else images
        return x.detach(), int(x.shape[0])
    images = list(images)
    return images, len(images)


def gate_batch(
    guard: Any,
    inputs: torch.Tensor,
    on_reject: str = "skip",
    view: Any = "slices:3",
    to_guard_images: Callable[[torch.Tensor], Any] | None = None,
) -> BatchVerdicts:
    """Score a whole classifier batch with the guard, once, and judge each item.

    Args:
        guard: the :class:`~tanl_guard.guard.Guard`.
        inputs: the classifier inputs, (B, C, H, W) or (B, C, H, W, D).
        on_reject: the policy that will be applied (recorded in the verdicts; it sets ``classified``/``flagged``).
        view: 3D view spec for the default conversion (see :func:`~.views.guard_views`).
        to_guard_images: custom conversion ``inputs -> images`` for the guard: a (N, C, H, W) tensor in [0, 1] or
            a list of (H, W)/(H, W, 3) arrays, with N = B (one view per item) or N = B * K (K views per item,
            item-major). ``None`` uses :func:`~.views.guard_views`.

    Returns:
        the :class:`~.verdicts.BatchVerdicts`.
    """
    check_on_reject(on_reject)
    batch = int(inputs.shape[0])
    if to_guard_images is None:
        images, _ = guard_views(inputs, view)
    else:
        images = to_guard_images(inputs)
    images, n_views = _to_guard_input(images)
    if batch == 0 or n_views % batch:
        raise ValueError(f"the guard images ({n_views}) must be a positive multiple of the batch size ({batch})")
    k = n_views // batch
    # The gate must not run under the evaluator's autocast: half-precision scores would move the verdicts.
    device_type = inputs.device.type if inputs.device.type in ("cuda", "cpu") else "cpu"
    with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
        gate = guard.score_images(images)
    judged = [
        guard.judge_series(series=f"item{i}", modality="", gate=gate, views=range(i * k, (i + 1) * k))
        for i in range(batch)
    ]
    scores = torch.tensor([float(v.id_score) for v in judged], dtype=torch.float32)
    accepted = torch.tensor([v.verdict == ACCEPT for v in judged], dtype=torch.bool)
    classified = accepted.clone() if on_reject != "pass" else torch.ones(batch, dtype=torch.bool)
    return BatchVerdicts(
        scores=scores,
        threshold=float(gate.threshold),
        accepted=accepted,
        classified=classified,
        flagged=classified & ~accepted,
        predictions=tuple(v.prediction or "" for v in judged),
        top_negatives=tuple(tuple(v.top_negatives) for v in judged),
        view_scores=gate.scores.detach().to("cpu", torch.float32).reshape(batch, k),
        on_reject=on_reject,
        gate=gate,
    )


class OutputTemplate:
    """Shape and dtype of one output row, remembered so an all-rejected batch needs no classifier call."""

    def __init__(self) -> None:
        self.template: Any = None

    def remember(self, output: Any) -> None:
        """Keep the per-row shape/dtype structure of ``output``.

        Args:
            output: a classifier output (tensor, or a tuple/list/dict of tensors).
        """
        self.template = _map_tensors(output, lambda t: (tuple(t.shape[1:]), t.dtype, t.device))

    def nan_batch(self, batch: int) -> Any:
        """A NaN output of ``batch`` rows, or ``None`` when no output was seen yet.

        Args:
            batch: the number of rows.
        """
        if self.template is None:
            return None

        def build(spec: Any) -> Any:
            if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[1], torch.dtype):
                shape, dtype, device = spec
                dtype = dtype if dtype.is_floating_point else torch.float32
                return torch.full((batch, *shape), float("nan"), dtype=dtype, device=device)
            if isinstance(spec, Mapping):
                return {k: build(v) for k, v in spec.items()}
            if isinstance(spec, (list, tuple)):
                return type(spec)(build(v) for v in spec)
            return spec

        return build(self.template)


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _floating(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() or t.is_complex() else t.to(torch.float32)


def _mask_rows(output: Any, rejected: torch.Tensor) -> Any:
    """NaN the rows of rejected items (outputs that are not batched per item are left alone)."""

    def mask(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0 or t.shape[0] != rejected.numel():
            return t
        t = _floating(t)
        keep = (~rejected.to(t.device)).reshape(-1, *([1] * (t.ndim - 1)))
        return torch.where(keep, t, torch.full_like(t, float("nan")))

    return _map_tensors(output, mask)


def _scatter_rows(sub_output: Any, index: torch.Tensor, batch: int) -> Any:
    """Place the outputs of the accepted items at their rows of a NaN-filled full batch."""

    def scatter(t: torch.Tensor) -> torch.Tensor:
        t = _floating(_plain(t))
        if t.ndim == 0 or t.shape[0] != index.numel():
            return t
        full = torch.full((batch, *t.shape[1:]), float("nan"), dtype=t.dtype, device=t.device)
        full[index.to(t.device)] = t
        return full

    return _map_tensors(sub_output, scatter)


def _select_meta(meta: Mapping[str, Any], index: list[int], batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            out[key] = value[index]
        elif isinstance(value, (list, tuple)) and len(value) == batch:
            out[key] = [value[i] for i in index]
        else:
            out[key] = value
    return out


def _select_rows(inputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The accepted rows of the batch; a MetaTensor keeps the matching rows of its batched metadata."""
    rows = _plain(inputs)[index.to(inputs.device)]
    if not isinstance(inputs, MetaTensor):
        return rows
    batch, picks = int(inputs.shape[0]), index.tolist()
    sub = MetaTensor(rows)  # metadata set afterwards: MetaTensor's constructor expects unbatched metadata
    sub.meta = _select_meta(inputs.meta, picks, batch)
    ops = inputs.applied_operations
    if isinstance(ops, list) and len(ops) == batch:
        sub.applied_operations = [ops[i] for i in picks]
    sub.is_batch = inputs.is_batch
    return sub


def _select_args(args: tuple, kwargs: dict, index: torch.Tensor, batch: int) -> tuple[tuple, dict]:
    """Extra network inputs that are batched per item (leading dimension B) follow the accepted rows."""

    def pick(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch:
            return _select_rows(v, index)
        return v

    return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}


def _attach(output: Any, verdicts: BatchVerdicts, inputs: torch.Tensor) -> Any:
    """Return the output as MetaTensor(s) whose batched metadata carries the verdicts."""
    ood = verdicts.to_meta()
    batch = len(verdicts)

    def attach(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0 or t.shape[0] != batch:
            return t
        if isinstance(t, MetaTensor):
            out = t
            base_meta = dict(t.meta)
        else:
            # Like SimpleInferer on a MetaTensor input: the output carries a copy of the input's metadata.
            out = MetaTensor(t)
            base_meta = dict(inputs.meta) if isinstance(inputs, MetaTensor) else {}
            if isinstance(inputs, MetaTensor):
                ops = inputs.applied_operations
                out.applied_operations = list(ops) if isinstance(ops, list) else ops
        out.meta = {**base_meta, **ood}  # a new dict: the input's metadata is never modified
        out.is_batch = True
        return out

    return _map_tensors(output, attach)


def run_gated(
    guard: Any,
    inputs: torch.Tensor,
    run: Callable[..., Any],
    args: tuple = (),
    kwargs: dict | None = None,
    on_reject: str = "skip",
    view: Any = "slices:3",
    to_guard_images: Callable[[torch.Tensor], Any] | None = None,
    template: OutputTemplate | None = None,
) -> tuple[Any, BatchVerdicts]:
    """Gate ``inputs`` once, then run the classifier on them by the ``on_reject`` policy.

    - ``skip``: ``run`` sees only the accepted items; rejected rows of the output are NaN (no prediction exists
      for them). When every item is rejected, ``run`` is not called and the NaN rows follow the shape of an
      earlier output (``template``); with none seen yet, ``run`` is tried on an empty batch, and only if that
      fails on the first item, whose output is then discarded (a warning says so).
    - ``nan``: ``run`` sees all items; rejected rows are set to NaN.
    - ``pass``: ``run`` sees all items and the output is unchanged; rejected items are flagged in the metadata.

    Integer outputs become float32 under ``skip`` and ``nan`` (NaN needs a floating dtype).

    Args:
        guard: the :class:`~tanl_guard.guard.Guard`.
        inputs: the classifier inputs (B, C, H, W[, D]).
        run: ``run(inputs, *args, **kwargs) -> output`` (a tensor, or a tuple/list/dict of tensors, batched by item).
        args: extra positional arguments for ``run``; tensors with leading dimension B follow the accepted rows.
        kwargs: extra keyword arguments for ``run``, likewise.
        on_reject: ``skip``, ``nan`` or ``pass``.
        view: 3D view spec (see :func:`~.views.guard_views`).
        to_guard_images: custom conversion of ``inputs`` to guard images (see :func:`gate_batch`).
        template: remembers the output shape for all-rejected batches under ``skip``.

    Returns:
        ``(output, verdicts)``; the output's tensors (with one row per item) are MetaTensors whose metadata carries
        the verdicts (see :mod:`~.verdicts`).
    """
    kwargs = dict(kwargs or {})
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"the gated classifier needs a tensor batch, got {type(inputs).__name__}")
    verdicts = gate_batch(guard, inputs, on_reject, view, to_guard_images)
    batch = len(verdicts)
    if on_reject != "skip" or bool(verdicts.accepted.all()):
        output = run(inputs, *args, **kwargs)
        if template is not None:
            template.remember(output)
        if on_reject == "nan" and verdicts.n_rejected:
            output = _mask_rows(output, ~verdicts.accepted)
    elif verdicts.n_accepted:
        index = verdicts.accepted.nonzero().flatten()
        sub_args, sub_kwargs = _select_args(args, kwargs, index, batch)
        sub_output = run(_select_rows(inputs, index), *sub_args, **sub_kwargs)
        if template is not None:
            template.remember(sub_output)
        output = _scatter_rows(sub_output, index, batch)
    else:
        output = _all_rejected(inputs, run, args, kwargs, batch, template)
    return _attach(output, verdicts, inputs), verdicts


def _all_rejected(
    inputs: torch.Tensor,
    run: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    batch: int,
    template: OutputTemplate | None,
) -> Any:
    cached = template.nan_batch(batch) if template is not None else None
    if cached is not None:
        return cached
    probe = template if template is not None else OutputTemplate()
    empty = torch.zeros(0, dtype=torch.long)
    try:
        sub_args, sub_kwargs = _select_args(args, kwargs, empty, batch)
        probe.remember(run(_select_rows(inputs, empty), *sub_args, **sub_kwargs))
    except Exception:
        warnings.warn(
            "every item of the first batch was rejected and the classifier cannot run on an empty batch: it was run "
            "on one rejected item to learn the output shape, and that output was discarded",
            RuntimeWarning,
            stacklevel=3,
        )
        first = torch.zeros(1, dtype=torch.long)
        sub_args, sub_kwargs = _select_args(args, kwargs, first, batch)
        probe.remember(run(_select_rows(inputs, first), *sub_args, **sub_kwargs))
    return probe.nan_batch(batch)
