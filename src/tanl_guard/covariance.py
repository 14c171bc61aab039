# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Shrinkage covariance estimators (Ledoit-Wolf, OAS) in torch, as scikit-learn computes them.

A few hundred reference images in 1280 dimensions give a singular empirical covariance; both estimators shrink it
towards ``mu * I`` (``mu`` = mean variance) by an amount estimated from the data, which makes it invertible and
well conditioned. The formulas follow ``sklearn.covariance.ledoit_wolf_shrinkage`` and ``sklearn.covariance.OAS``
(scikit-learn 1.9), so the results agree to rounding (checked in the tests); scikit-learn is not needed at run time.
"""

from __future__ import annotations

import torch

__all__ = ["empirical_covariance", "ledoit_wolf", "oas", "shrunk_covariance"]


def _centred(x: torch.Tensor, assume_centered: bool) -> torch.Tensor:
    """Checked (n, p) data, minus its mean unless already centred."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"expected a (n_samples, n_features) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise ValueError(f"expected floating point data, got {x.dtype}")
    return x if assume_centered else x - x.mean(dim=0)


def empirical_covariance(x: torch.Tensor, assume_centered: bool = False) -> torch.Tensor:
    """Maximum-likelihood covariance ``X^T X / n`` (after subtracting the mean unless ``assume_centered``).

    Args:
        x: (n, p) samples.
        assume_centered: the data are already centred (e.g. per class).
    """
    x = _centred(x, assume_centered)
    return x.T @ x / x.shape[0]


def ledoit_wolf(x: torch.Tensor, assume_centered: bool = False) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance and its shrinkage coefficient (Ledoit & Wolf, 2004).

    Args:
        x: (n, p) samples.
        assume_centered: the data are already centred.

    Returns:
        ((p, p) covariance, shrinkage in [0, 1]).
    """
    x = _centred(x, assume_centered)
    n, p = x.shape
    emp_cov = empirical_covariance(x, assume_centered=True)
    if p == 1:
        return emp_cov, 0.0
    x2 = x * x
    emp_cov_trace = x2.sum(dim=0) / n
    mu = emp_cov_trace.sum() / p
    beta_ = (x2.T @ x2).sum()
    delta_ = (emp_cov**2).sum()  # the (p, p) product once: (X^T X)^2 / n^2 is emp_cov^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu**2) / p
    beta = torch.minimum(beta, delta)
    shrinkage = 0.0 if float(beta) == 0.0 else float(beta / delta)
    return shrunk_covariance(emp_cov, shrinkage), shrinkage


def oas(x: torch.Tensor, assume_centered: bool = False) -> tuple[torch.Tensor, float]:
    """Oracle Approximating Shrinkage covariance and its coefficient (Chen et al., 2010; scikit-learn's form).

    Args:
        x: (n, p) samples.
        assume_centered: the data are already centred.

    Returns:
        ((p, p) covariance, shrinkage in [0, 1]).
    """
    emp_cov = empirical_covariance(x, assume_centered)
    p = emp_cov.shape[0]
    if p == 1:
        return emp_cov, 0.0
    alpha = (emp_cov**2).mean()
    mu = torch.trace(emp_cov) / p
    num = alpha + mu**2
    den = (x.shape[0] + 1) * (alpha - mu**2 / p)
    shrinkage = 1.0 if float(den) == 0.0 else min(float(num / den), 1.0)
    return shrunk_covariance(emp_cov, shrinkage), shrinkage


def shrunk_covariance(emp_cov: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """``(1 - shrinkage) * S + shrinkage * trace(S) / p * I``.

    Args:
        emp_cov: (p, p) empirical covariance S.
        shrinkage: the coefficient in [0, 1].
    """
    p = emp_cov.shape[0]
    mu = torch.trace(emp_cov) / p
    out = (1.0 - shrinkage) * emp_cov
    out.diagonal().add_(shrinkage * mu)
    return out
