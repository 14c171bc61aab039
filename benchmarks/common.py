# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Shared pieces of the detection-quality benchmarks: stream orders, running a detector over a stream, metrics
as plain dicts, result files and the matplotlib figures.

Nothing here knows where the embeddings come from (simulation, real images with the surrogate encoder, or a user's
BiomedCLIP/CLIP), so every benchmark writes results in the same format.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanl_guard import ood_metrics
from tanl_guard.metrics import roc_points

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "FIGURES_DIR",
    "ORDERS",
    "StreamRun",
    "stream_order",
    "run_stream",
    "metrics_dict",
    "tier_metrics",
    "environment",
    "write_json",
    "set_threads",
    "plot_roc",
    "plot_histograms",
    "add_footer",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
FIGURES_DIR = REPO_ROOT / "docs" / "figures"
ORDERS = ("random", "id_first", "ood_first")


def set_threads(n: int | None) -> None:
    """Pin torch's intra-op threads (the shared development machine has 2 cores)."""
    if n:
        torch.set_num_threads(int(n))


def stream_order(is_ood: np.ndarray, order: str, seed: int) -> np.ndarray:
    """Indices of the samples in stream order.

    Args:
        is_ood: (n,) boolean ground truth.
        order: ``random`` (shuffled), ``id_first`` (all ID, then all OOD) or ``ood_first``; inside each block of a
            sorted order the samples are shuffled too.
        seed: seed of the shuffles.
    """
    rng = np.random.default_rng(seed)
    n = int(is_ood.size)
    if order == "random":
        return rng.permutation(n)
    ids, oods = np.flatnonzero(~is_ood), np.flatnonzero(is_ood)
    ids, oods = ids[rng.permutation(ids.size)], oods[rng.permutation(oods.size)]
    if order == "id_first":
        return np.concatenate([ids, oods])
    if order == "ood_first":
        return np.concatenate([oods, ids])
    raise ValueError(f"unknown stream order {order!r}; expected one of {ORDERS}")


@dataclass
class StreamRun:
    """A detector's scores for every sample of one stream (in the samples' original indexing) and per-batch traces.

    Attributes:
        scores: (n,) id_score of each sample, indexed like the input (not in stream order).
        order: (n,) the stream order used.
        batch_thresholds: the detector's threshold after each batch (NaN when it has none).
        batch_selected: for TANL, the selected corpus indices after each batch (rank order), else empty.
        batch_admitted: for TANL, (confident ID, confident OOD) counts per batch.
        seconds: wall time of the whole stream (reset included).
    """

    scores: np.ndarray
    order: np.ndarray
    batch_thresholds: list[float] = field(default_factory=list)
    batch_selected: list[np.ndarray] = field(default_factory=list)
    batch_admitted: list[tuple[int, int]] = field(default_factory=list)
    initial_selected: np.ndarray | None = None
    seconds: float = 0.0


def run_stream(
    detector: Any,
    features: torch.Tensor,
    order: np.ndarray,
    batch_size: int = 256,
    reset_kwargs: dict[str, Any] | None = None,
    keep_selected: bool = True,
) -> StreamRun:
    """Reset ``detector`` and feed ``features[order]`` batch by batch.

    Args:
        detector: any :class:`tanl_guard.Detector`.
        features: (n, D) unit-norm image embeddings.
        order: stream order (see :func:`stream_order`).
        batch_size: images per step (256 as in the paper).
        reset_kwargs: passed to ``detector.reset`` (TANL: ``noise_features``).
        keep_selected: record TANL's selection after every batch (for churn and precision traces).
    """
    start = time.perf_counter()
    detector.reset(**(reset_kwargs or {}))
    initial = getattr(detector, "selected", None)
    initial = initial.detach().cpu().numpy().copy() if isinstance(initial, torch.Tensor) else None
    scores = np.empty(order.size, dtype=np.float64)
    run = StreamRun(scores=scores, order=order, initial_selected=initial)
    for lo in range(0, order.size, batch_size):
        idx = order[lo : lo + batch_size]
        res = detector.step(features[torch.as_tensor(idx)])
        scores[idx] = res.scores.detach().cpu().double().numpy()
        run.batch_thresholds.append(float("nan") if res.threshold is None else float(res.threshold))
        selected = getattr(res, "selected", None)
        if keep_selected and selected is not None:
            run.batch_selected.append(selected.detach().cpu().numpy().copy())
            run.batch_admitted.append((int(res.confident_id.sum()), int(res.confident_ood.sum())))
    run.seconds = time.perf_counter() - start
    return run


def metrics_dict(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """ood_metrics as a plain dict, rounded for small JSON files."""
    m = ood_metrics(np.asarray(id_scores), np.asarray(ood_scores)).as_dict()
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()}


def tier_metrics(scores: np.ndarray, is_ood: np.ndarray, tiers: np.ndarray, names: list[str] | None = None) -> dict:
    """Metrics of ID against all OOD, and against each OOD tier on its own (same scores, same stream)."""
    out = {"all": metrics_dict(scores[~is_ood], scores[is_ood])}
    for name in names if names is not None else sorted(set(tiers[is_ood].tolist())):
        mask = is_ood & (tiers == name)
        if mask.any():
            out[name] = metrics_dict(scores[~is_ood], scores[mask])
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Where a result was measured (for the JSON header)."""
    import tanl_guard

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tanl_guard": tanl_guard.__version__,
        "git_commit": _git_commit(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if not np.isfinite(v) else round(v, 6)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (numpy values converted, NaN -> null) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------- figures


def add_footer(fig, text: str, width: int) -> float:
    """Draw a wrapped grey footer; returns the figure fraction it occupies (for tight_layout's rect)."""
    import textwrap

    if not text:
        return 0.0
    lines = textwrap.wrap(text, width=width)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=6, color="dimgrey", va="bottom")
    return min(0.25, 0.012 + 0.022 * len(lines) * 4.8 / fig.get_figheight())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_curve(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) with ID as the positive class (an ID sample is accepted when its score >= threshold)."""
    tps, fps, _ = roc_points(id_scores, ood_scores)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path, footer: str = "") -> Path:
    """ROC curves; ``curves`` maps a legend label to (id_scores, ood_scores)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.8), dpi=110)
    for label, (ids, oods) in curves.items():
        fpr, tpr = roc_curve(ids, oods)
        auc = ood_metrics(ids, oods).auroc
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axhline(0.95, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("OOD accepted (false positive rate)")
    ax.set_ylabel("ID accepted (true positive rate)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    bottom = add_footer(fig, footer, 95)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_histograms(
    panels: dict[str, tuple], title: str, path: Path, footer: str = ""
) -> Path:
    """One panel per method: ID and OOD score histograms and the method's own threshold (if it has one).

    ``panels`` maps a title to ``(id_scores, ood_scores, threshold)``, optionally with a 4th element: the OOD
    legend text (e.g. when each OOD image was scored once per fold)."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), dpi=110, squeeze=False)
    bins = np.linspace(0.0, 1.0, 41)
    for ax, (label, panel) in zip(axes[0], panels.items()):
        ids, oods, thr = panel[:3]
        ood_label = panel[3] if len(panel) > 3 else f"OOD (n={oods.size})"
        ax.hist(np.clip(ids, 0, 1), bins=bins, alpha=0.6, color="tab:blue", label=f"ID (n={ids.size})", density=True)
        ax.hist(np.clip(oods, 0, 1), bins=bins, alpha=0.6, color="tab:red", label=ood_label, density=True)
        if thr is not None and np.isfinite(thr):
            ax.axvline(thr, color="k", lw=1.0, ls="--", label=f"threshold {thr:.2f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("id_score")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    bottom = add_footer(fig, footer, int(60 * n))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
