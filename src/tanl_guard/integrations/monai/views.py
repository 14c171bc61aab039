# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Encoder-ready 2D views of MONAI arrays: channel pick, axial slices or a MIP of volumes, min-max to [0, 1].

One rule, shared by :class:`~tanl_guard.integrations.monai.GuardedInferer`,
:class:`~tanl_guard.integrations.monai.GuardedClassifier` and
:class:`~tanl_guard.integrations.monai.ToGuardViewd`, so reference images made with the transform look exactly like
what the gate sees. The slice positions are those of the DICOM ingest (:class:`tanl_guard.view_spec.ViewSpec`):
``slices:K`` takes K evenly spaced slices at ``(i + 1) / (K + 1)`` of the range (25/50/75 % for K = 3).
"""

from __future__ import annotations

import torch

from tanl_guard.view_spec import ViewSpec

__all__ = ["parse_view", "select_guard_channels", "minmax_unit", "guard_views"]


def parse_view(view: str | ViewSpec) -> ViewSpec:
    """Parse a view spec: ``"slices:K"``, ``"slices"`` (K = 3), ``"mid"`` or ``"mip"`` (or a ``ViewSpec``).

    Args:
        view: the spec string or a :class:`tanl_guard.view_spec.ViewSpec`.

    Returns:
        the :class:`~tanl_guard.view_spec.ViewSpec`.
    """
    return ViewSpec.parse(view)


def select_guard_channels(images: torch.Tensor) -> torch.Tensor:
    """Keep the channels the encoder should see: all three of a 3-channel (RGB) batch, else channel 0.

    Multi-channel medical inputs (e.g. stacked MRI sequences) are judged on their first channel.

    Args:
        images: (B, C, ...) channel-first batch.
    """
    if images.ndim < 3:
        raise ValueError(f"expected a channel-first batch (B, C, H, W[, D]), got shape {tuple(images.shape)}")
    return images if images.shape[1] == 3 else images[:, :1]


def minmax_unit(images: torch.Tensor) -> torch.Tensor:
    """Scale each image of a (N, C, H, W) batch to [0, 1] by its own minimum and maximum (over C, H, W).

    Non-finite values are replaced by the image's finite minimum first; constant images become zeros.

    Args:
        images: (N, C, H, W) batch, any real dtype.
    """
    x = images.detach().to(torch.float32)
    if x.numel() == 0:
        return x
    flat = x.reshape(x.shape[0], -1)
    finite = torch.isfinite(flat)
    big = torch.finfo(torch.float32).max
    lo = torch.where(finite, flat, torch.full_like(flat, big)).amin(dim=1, keepdim=True)
    hi = torch.where(finite, flat, torch.full_like(flat, -big)).amax(dim=1, keepdim=True)
    lo = torch.where(torch.isfinite(lo) & (lo < big), lo, torch.zeros_like(lo))
    hi = torch.where(hi > lo, hi, lo)
    flat = torch.where(finite, flat, lo)
    span = hi - lo
    out = torch.where(
        span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat)
    )
    return out.clamp_(0.0, 1.0).reshape(x.shape)


def guard_views(images: torch.Tensor, view: str | ViewSpec = "slices:3") -> tuple[torch.Tensor, int]:
    """Turn a channel-first MONAI batch into the 2D views the gate scores.

    - 2D batch (B, C, H, W): one view per image (``view`` is ignored).
    - 3D batch (B, C, H, W, D): views along the last spatial axis, which is the axial (superior-inferior) axis
      after MONAI's ``Orientationd(axcodes="RAS")``: ``slices:K`` gives K evenly spaced slices per volume (their
      scores are reduced per volume by the guard policy's ``view_reduction``), ``mid`` the middle slice, ``mip``
      the maximum intensity projection along that axis.

    Channels: a 3-channel batch is kept as RGB, otherwise channel 0 is used. Every view is min-max scaled to
    [0, 1] on its own, like the DICOM ingest scales every frame.

    Args:
        images: (B, C, H, W) or (B, C, H, W, D) tensor (a MetaTensor is read as a plain tensor).
        view: ``"slices:K"`` (default K = 3), ``"mid"`` or ``"mip"``, or a ``ViewSpec``; used for 3D only.

    Returns:
        ``(views, k)``: a float32 (B * k, C', H, W) tensor on the input's device, item-major (the views of item
        0 first), and k, the number of views per item.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected a tensor batch, got {type(images).__name__}")
    x = images.as_tensor() if hasattr(images, "as_tensor") else images
    x = select_guard_channels(x.detach())
    if x.ndim == 4:
        return minmax_unit(x), 1
    if x.ndim != 5:
        raise ValueError(
            f"expected a (B, C, H, W) or (B, C, H, W, D) batch, got shape {tuple(images.shape)}; "
            "pass to_guard_images= for other layouts"
        )
    spec = parse_view(view)
    if spec.kind == "mip":
        return minmax_unit(x.amax(dim=-1)), 1
    positions = spec.positions(int(x.shape[-1]))
    stacked = torch.stack([x[..., p] for p in positions], dim=1)  # (B, K, C, H, W)
    k = len(positions)
    return minmax_unit(stacked.reshape(x.shape[0] * k, *stacked.shape[2:])), k
