# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Synthetic noise images that seed TANL's queue of confident OOD samples (the reference's cold start)."""

from __future__ import annotations

import torch

__all__ = ["NOISE_KINDS", "noise_images"]

NOISE_KINDS = ("gaussian", "uniform", "poisson", "gamma", "salt_and_pepper")


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def noise_images(
    per_kind: int = 3, size: int = 224, channels: int = 3, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``per_kind`` images of each of five noise kinds, values in [0, 1], shape (5 * per_kind, channels, size, size).

    Gaussian noise min-max scaled; uniform [0, 1]; Poisson(5) scaled; Gamma(2, 1) scaled; binary salt-and-pepper.
    They are meant to go through the encoder *without* its mean/std normalisation, as in the reference.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    shape = (per_kind, channels, size, size)
    gaussian = _minmax(torch.randn(shape, generator=generator))
    uniform = torch.rand(shape, generator=generator)
    poisson = _minmax(torch.poisson(torch.full(shape, 5.0), generator=generator))
    # Gamma(2, 1) as the sum of two unit exponentials, so it can use the explicit generator.
    gamma = _minmax(-torch.log(torch.rand(shape, generator=generator).clamp_min(1e-12))
                    - torch.log(torch.rand(shape, generator=generator).clamp_min(1e-12)))
    salt_and_pepper = (torch.rand(shape, generator=generator) > 0.5).float()
    return torch.cat([gaussian, uniform, poisson, gamma, salt_and_pepper])
