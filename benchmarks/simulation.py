# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Controlled simulation: the paper's qualitative claims checked against ground truth.

Embeddings come from a known mixture (``benchmarks/sim_model.py``) at ImageNet-like sizes (C = 1000 ID labels,
N = 70,000 corpus words, D = 512, batch 256), so we know which corpus words describe the OOD images of a stream.
Five checks:

a. TANL's selected negatives concentrate on the words of the concepts the stream's OOD actually contains
   (precision@k of the selection against those words, beside the base rate and NegLabel's static set);
b. TANL against NegLabel (static farthest-10k), MCM and AdaNeg on the same stream (far and near-ID OOD tiers);
c. robustness to the number of negatives M: TANL (activation-aware score), TANL with the plain one-softmax score
   (``score_step=0``, same selection) and NegLabel with its M farthest labels;
d. stream order: random (3 seeds) against all-ID-first and all-OOD-first;
e. a mid-stream change of the OOD mix (concepts A, then disjoint concepts B): windowed AUROC / FPR95 before and
   after, the selection's precision against A and B words and its churn per batch.

    python -m benchmarks simulation            # full size: 3 min on 2 quiet cores, 3.4 GB
    python -m benchmarks simulation --small    # C=200, N=12,000, D=256, under a minute

Writes ``benchmarks/results/simulation[_small].json`` and ``docs/figures/sim_*.png`` (full size only, unless
``--figures``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tanl_guard import (
    AdaNegConfig,
    AdaNegDetector,
    MCMDetector,
    NegLabelConfig,
    NegLabelDetector,
    TANLConfig,
    TANLDetector,
)

from .common import (
    FIGURES_DIR,
    RESULTS_DIR,
    add_footer,
    environment,
    metrics_dict,
    plot_histograms,
    plot_roc,
    run_stream,
    set_threads,
    stream_order,
    tier_metrics,
    write_json,
)
from .sim_model import FULL, SMALL, TINY, SimSpec, SimWorld, build_world

__all__ = ["SimSize", "SIZES", "Stream", "make_stream", "selection_precision", "churn", "run", "main"]

COMMAND = "python -m benchmarks simulation"


@dataclass(frozen=True)
class SimSize:
    """A spec plus the stream sizes and sweeps run on it."""

    spec: SimSpec
    n_id: int  # ID images per stream (per phase in the shift experiment)
    n_ood: int  # OOD images per stream (per phase)
    n_far: int  # far concepts in an OOD mix
    n_near: int  # near-ID concepts in an OOD mix
    neglabel_m: int  # NegLabel's static set size
    m_sweep: tuple[int, ...]  # M values for TANL (one stream each; the largest = the whole corpus)
    m_sweep_step0: tuple[int, ...]  # M values for TANL with score_step=0
    m_sweep_neglabel: tuple[int, ...]  # M values for NegLabel (stateless, cheap)
    seeds: tuple[int, ...]
    batch_size: int = 256
    window: int = 4  # batches per window in the shift experiment


SIZES = {
    "full": SimSize(
        FULL, 4000, 1000, 16, 4, 10000,
        (100, 1000, 10000, 70000), (100, 1000, 70000), (100, 300, 1000, 3000, 10000, 30000, 70000), (0, 1, 2),
    ),
    "small": SimSize(
        SMALL, 2000, 500, 12, 4, 1700,
        (50, 200, 1000, 3000, 12000), (50, 1000, 12000), (50, 200, 1000, 3000, 6000, 12000), (0, 1, 2),
    ),
    "tiny": SimSize(TINY, 700, 200, 6, 3, 350, (30, 300, 2500), (30, 2500), (30, 300, 2500), (0,), batch_size=128,
                    window=2),
}


@dataclass
class Stream:
    """One stream's embeddings and ground truth (indexed by sample, not in stream order)."""

    features: torch.Tensor
    is_ood: np.ndarray
    tier: np.ndarray  # "id", "far", "near"
    concept: np.ndarray  # ID class or OOD concept id
    phase: np.ndarray  # 0 / 1 (shift experiment; 0 otherwise)
    ood_concepts: dict[str, np.ndarray]  # mix name -> concept ids


def _mix(world: SimWorld, size: SimSize, rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
    far, near = world.concepts("far"), world.concepts("near")
    if exclude is not None:
        far, near = np.setdiff1d(far, exclude), np.setdiff1d(near, exclude)
    return np.r_[rng.choice(far, size.n_far, replace=False), rng.choice(near, size.n_near, replace=False)]


def make_stream(world: SimWorld, size: SimSize, seed: int = 1, shift: bool = False) -> Stream:
    """ID images plus OOD images of mix A (half far, half near-ID by count); with ``shift`` a second phase of new
    ID images plus OOD images of a disjoint mix B follows."""
    rng = np.random.default_rng(seed)
    mixes = {"A": _mix(world, size, rng)}
    if shift:
        mixes["B"] = _mix(world, size, rng, exclude=mixes["A"])
    feats, is_ood, tier, concept, phase = [], [], [], [], []
    for p, concepts in enumerate(mixes.values()):
        fi, ci = world.id_images(size.n_id, rng)
        kinds = world.concept_kind[concepts]
        n_far = size.n_ood // 2
        ff, cf = world.ood_images(n_far, concepts[kinds == "far"], rng)
        fn, cn = world.ood_images(size.n_ood - n_far, concepts[kinds == "near"], rng)
        feats += [fi, ff, fn]
        is_ood += [np.zeros(size.n_id, bool), np.ones(size.n_ood, bool)]
        tier += [["id"] * size.n_id, ["far"] * n_far, ["near"] * (size.n_ood - n_far)]
        concept += [ci, cf, cn]
        phase.append(np.full(size.n_id + size.n_ood, p))
    return Stream(
        features=torch.from_numpy(np.concatenate(feats)).float(),
        is_ood=np.concatenate(is_ood),
        tier=np.concatenate([np.array(t) for t in tier]),
        concept=np.concatenate(concept),
        phase=np.concatenate(phase),
        ood_concepts=mixes,
    )


def shift_order(stream: Stream, seed: int) -> np.ndarray:
    """Random order inside each phase, phase 0 first."""
    rng = np.random.default_rng(seed)
    parts = [np.flatnonzero(stream.phase == p) for p in (0, 1)]
    return np.concatenate([p[rng.permutation(p.size)] for p in parts])


def selection_precision(selected: np.ndarray, true_words: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Fraction of the top-k selected labels that are words of the stream's OOD concepts, for each k."""
    hit = np.isin(selected, true_words)
    return {f"p@{k}": float(hit[:k].mean()) for k in ks if k <= selected.size}


def churn(previous: np.ndarray, current: np.ndarray) -> float:
    """Share of the current selection that was not selected in the previous batch (0 = unchanged)."""
    return 1.0 - np.intersect1d(previous, current).size / max(current.size, 1)


def _detectors(world: SimWorld, size: SimSize, which: tuple[str, ...], tanl_cfg: TANLConfig | None = None):
    id_text, corpus = world.tensors()
    kappa = world.spec.logit_scale
    nl_cfg = NegLabelConfig(n_negatives=size.neglabel_m)
    made = {}
    for name in which:
        if name == "tanl":
            made[name] = TANLDetector(id_text, corpus, kappa, tanl_cfg or TANLConfig())
        elif name == "neglabel":
            made[name] = NegLabelDetector(id_text, corpus, kappa, nl_cfg)
        elif name == "mcm":
            made[name] = MCMDetector(id_text, corpus, kappa)
        elif name == "adaneg":
            made[name] = AdaNegDetector(id_text, corpus, kappa, AdaNegConfig(negatives=nl_cfg))
    return made


def _run(det, stream: Stream, order: np.ndarray, size: SimSize, noise: torch.Tensor):
    kwargs = {"noise_features": noise} if isinstance(det, TANLDetector) else None
    return run_stream(det, stream.features, order, size.batch_size, kwargs)


def _windowed(stream: Stream, run, size: SimSize) -> list[dict[str, Any]]:
    out = []
    per = size.batch_size * size.window
    for lo in range(0, run.order.size, per):
        idx = run.order[lo : lo + per]
        ood = stream.is_ood[idx]
        if ood.all() or (~ood).all():
            continue
        m = metrics_dict(run.scores[idx][~ood], run.scores[idx][ood])
        out.append({"first_batch": lo // size.batch_size, "phase": int(stream.phase[idx].max()), **m})
    return out


def run(size_name: str = "full", figures: bool | None = None, threads: int | None = 2, quiet: bool = False) -> dict:
    """Run all five checks at ``size_name`` (``full``, ``small`` or ``tiny``) and return the result dict."""
    set_threads(threads)
    size = SIZES[size_name]
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t_all = time.perf_counter()
    world = build_world(size.spec, seed=0)
    noise = torch.from_numpy(world.noise_features(15, seed=0)).float()
    stream = make_stream(world, size, seed=1)
    true_words = world.words_of(stream.ood_concepts["A"])
    n_corpus = world.spec.corpus_size
    res: dict[str, Any] = {
        "benchmark": "simulation",
        "size": size_name,
        "encoder": "none: simulated CLIP-like embeddings from a known mixture (benchmarks/sim_model.py)",
        "spec": size.spec.as_dict(),
        "stream": {
            "n_id": size.n_id,
            "n_ood": size.n_ood,
            "ood_concepts": {"far": size.n_far, "near": size.n_near},
            "batch_size": size.batch_size,
            "true_ood_words": int(true_words.size),
            "base_rate": true_words.size / n_corpus,
        },
        "tanl_config": TANLConfig().__dict__,
        "neglabel_config": NegLabelConfig(n_negatives=size.neglabel_m).__dict__,
        "environment": environment(),
    }
    ks = (20, 100, 1000)

    # (a) + (b): main comparison, random order, several stream seeds
    log(f"[sim] world C={size.spec.n_id} N={n_corpus} D={size.spec.dim}; stream {size.n_id} ID + {size.n_ood} OOD")
    main: dict[str, Any] = {}
    runs0: dict[str, Any] = {}
    dets = _detectors(world, size, ("tanl", "neglabel", "mcm", "adaneg"))
    for name, det in dets.items():
        seeds = size.seeds if name == "tanl" else size.seeds[:1]
        per_seed = []
        for s in seeds:
            r = _run(det, stream, stream_order(stream.is_ood, "random", s), size, noise)
            if s == size.seeds[0]:
                runs0[name] = r
            entry = {"seed": s, "seconds": round(r.seconds, 2), **tier_metrics(r.scores, stream.is_ood, stream.tier)}
            if name == "tanl":
                sel = r.batch_selected[-1]
                entry["selection_final"] = selection_precision(sel, true_words, ks)
                entry["selection_mean_over_batches"] = {
                    k: float(np.mean([selection_precision(b, true_words, ks)[k] for b in r.batch_selected]))
                    for k in selection_precision(sel, true_words, ks)
                }
                entry["selection_initial"] = selection_precision(r.initial_selected, true_words, ks)
                entry["synonym_share_final"] = float(np.isin(sel, world.words_of(world.concepts("synonym"))).mean())
                entry["true_words_recalled_in_top_m"] = float(np.isin(true_words, sel).mean())
            per_seed.append(entry)
            log(f"[sim] {name:9s} seed {s}: AUROC {entry['all']['auroc']:.4f} "
                f"FPR95(ID+) {entry['all']['fpr95_id_positive']:.4f} ({r.seconds:.1f}s)")
        main[name] = {"per_seed": per_seed}
        if name in ("neglabel", "adaneg"):
            main[name]["static_selection"] = selection_precision(det.selected.numpy(), true_words, ks)
        if name in ("neglabel", "mcm"):
            main[name]["note"] = "stateless: the score does not depend on the stream order or seed"
    for entry in main.values():
        vals = {k: [ps["all"][k] for ps in entry["per_seed"]] for k in ("auroc", "fpr95_id_positive", "fpr95_ood_positive")}
        entry["mean"] = {k: float(np.mean(v)) for k, v in vals.items()}
        entry["std"] = {k: float(np.std(v)) for k, v in vals.items()}
    res["a_b_main"] = main

    # (c): sweep of M
    log("[sim] (c) sweep of M")
    order0 = stream_order(stream.is_ood, "random", size.seeds[0])
    id_text, corpus = world.tensors()
    sweep: dict[str, list] = {"tanl": [], "tanl_score_step0": [], "neglabel": []}
    # NegLabel is stateless: its sweep is cheap, so it gets more points.
    for m in size.m_sweep_neglabel:
        nl = NegLabelDetector(id_text, corpus, 100.0, NegLabelConfig(n_negatives=m, n_groups=min(100, m)))
        r = _run(nl, stream, order0, size, noise)
        sweep["neglabel"].append({"m": m, **metrics_dict(r.scores[~stream.is_ood], r.scores[stream.is_ood])})
        log(f"[sim]   M={m}: NegLabel {sweep['neglabel'][-1]['auroc']:.4f}")
    for m in size.m_sweep:
        if m == TANLConfig().n_negatives:
            r = runs0["tanl"]
        else:
            r = _run(TANLDetector(id_text, corpus, 100.0, TANLConfig(n_negatives=m)), stream, order0, size, noise)
        sweep["tanl"].append({"m": m, **metrics_dict(r.scores[~stream.is_ood], r.scores[stream.is_ood])})
        log(f"[sim]   M={m}: TANL {sweep['tanl'][-1]['auroc']:.4f}")
    for m in size.m_sweep_step0:
        det = TANLDetector(id_text, corpus, 100.0, TANLConfig(n_negatives=m, score_step=0))
        r = _run(det, stream, order0, size, noise)
        sweep["tanl_score_step0"].append({"m": m, **metrics_dict(r.scores[~stream.is_ood], r.scores[stream.is_ood])})
        log(f"[sim]   M={m}: TANL score_step=0 {sweep['tanl_score_step0'][-1]['auroc']:.4f}")
    res["c_m_sweep"] = sweep

    # (d): stream orders
    log("[sim] (d) stream orders")
    orders: dict[str, Any] = {}
    for name in ("tanl", "adaneg"):
        orders[name] = {"random": main[name]["mean"]}
        for order_name in ("id_first", "ood_first"):
            det = _detectors(world, size, (name,))[name]
            r = _run(det, stream, stream_order(stream.is_ood, order_name, size.seeds[0]), size, noise)
            orders[name][order_name] = tier_metrics(r.scores, stream.is_ood, stream.tier)["all"]
            log(f"[sim]   {name} {order_name}: AUROC {orders[name][order_name]['auroc']:.4f} "
                f"FPR95(OOD+) {orders[name][order_name]['fpr95_ood_positive']:.4f}")
    for name in ("neglabel", "mcm"):
        orders[name] = {"any order": main[name]["mean"]}
    res["d_orders"] = orders

    # (e): shift of the OOD mix mid-stream
    log("[sim] (e) mid-stream shift of the OOD mix")
    sstream = make_stream(world, size, seed=2, shift=True)
    sorder = shift_order(sstream, seed=0)
    words_a, words_b = world.words_of(sstream.ood_concepts["A"]), world.words_of(sstream.ood_concepts["B"])
    shift_batch = int(np.flatnonzero(sstream.phase[sorder] == 1)[0]) // size.batch_size
    shift: dict[str, Any] = {"shift_at_batch": shift_batch, "n_per_phase": {"id": size.n_id, "ood": size.n_ood}}
    shift_runs = {}
    for name, det in _detectors(world, size, ("tanl", "neglabel", "adaneg")).items():
        r = _run(det, sstream, sorder, size, noise)
        shift_runs[name] = r
        phases = {}
        for p in (0, 1):
            mask = sstream.phase == p
            phases["before" if p == 0 else "after"] = metrics_dict(
                r.scores[mask & ~sstream.is_ood], r.scores[mask & sstream.is_ood]
            )
        shift[name] = {"phases": phases, "windows": _windowed(sstream, r, size)}
        log(f"[sim]   {name}: AUROC before {phases['before']['auroc']:.4f} after {phases['after']['auroc']:.4f}")
    tr = shift_runs["tanl"]
    trace = []
    prev = tr.initial_selected
    for b, sel in enumerate(tr.batch_selected):
        pa, pb = np.isin(sel[:100], words_a).mean(), np.isin(sel[:100], words_b).mean()
        trace.append({
            "batch": b,
            "threshold": tr.batch_thresholds[b],
            "churn": churn(prev, sel),
            "p@100_A": float(pa),
            "p@100_B": float(pb),
            "admitted_id": tr.batch_admitted[b][0],
            "admitted_ood": tr.batch_admitted[b][1],
        })
        prev = sel
    recovered = [t["batch"] for t in trace if t["batch"] >= shift_batch and t["p@100_B"] > t["p@100_A"]]
    shift["tanl"]["trace"] = trace
    shift["tanl"]["batches_until_B_dominates_top100"] = (recovered[0] - shift_batch) if recovered else None
    res["e_shift"] = shift
    res["seconds_total"] = round(time.perf_counter() - t_all, 1)
    log(f"[sim] done in {res['seconds_total']} s")

    suffix = "" if size_name == "full" else f"_{size_name}"
    if figures is None:
        figures = size_name == "full"
    if size_name != "tiny":
        write_json(RESULTS_DIR / f"simulation{suffix}.json", res)
    if figures:
        _figures(res, stream, runs0, sstream, shift_runs, size, suffix)
    return res


def _figures(res, stream: Stream, runs0, sstream: Stream, shift_runs, size: SimSize, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = size.spec
    cmd = COMMAND + ("" if suffix == "" else f" --{suffix.strip('_')}")
    foot = (f"Simulated embeddings (no encoder): C={spec.n_id}, N={spec.corpus_size}, D={spec.dim}; "
            f"stream {size.n_id} ID + {size.n_ood} OOD, batch {size.batch_size}.  Reproduce: {cmd}")
    ido, ood = ~stream.is_ood, stream.is_ood
    labels = {"tanl": "TANL", "neglabel": f"NegLabel (static {size.neglabel_m})", "mcm": "MCM", "adaneg": "AdaNeg"}
    plot_roc({labels[k]: (r.scores[ido], r.scores[ood]) for k, r in runs0.items()},
             "Simulation: ID vs OOD (far + near-ID), random order, seed 0", FIGURES_DIR / f"sim_roc{suffix}.png", foot)
    panels = {}
    for k, r in runs0.items():
        thr = r.batch_thresholds[-1] if k == "tanl" else None
        panels[labels[k]] = (r.scores[ido], r.scores[ood], thr)
    plot_histograms(panels, "Simulation: id_score histograms (TANL: its final Otsu threshold)",
                    FIGURES_DIR / f"sim_hist{suffix}.png", foot)

    # M sweep
    sw = res["c_m_sweep"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for key, lab, style in (("tanl", "TANL (activation-aware score)", "o-"),
                            ("tanl_score_step0", "TANL selection, one-softmax score", "s--"),
                            ("neglabel", "NegLabel (M farthest labels)", "^-")):
        ms = [e["m"] for e in sw[key]]
        axes[0].plot(ms, [e["auroc"] for e in sw[key]], style, label=lab)
        axes[1].plot(ms, [e["fpr95_id_positive"] for e in sw[key]], style, label=lab)
    for ax, yl in zip(axes, ("AUROC", "FPR95 (ID-positive)")):
        ax.set_xscale("log")
        ax.set_xlabel("number of negative labels M")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Simulation: sensitivity to the number of negatives M (same stream, random order)", fontsize=9)
    fig.tight_layout(rect=(0, add_footer(fig, foot, 165), 1, 1))
    fig.savefig(FIGURES_DIR / f"sim_m_sweep{suffix}.png")
    plt.close(fig)

    # shift
    sh = res["e_shift"]
    trace = sh["tanl"]["trace"]
    b = [t["batch"] for t in trace]
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 7.5), dpi=110, sharex=True)
    for k in ("tanl", "neglabel", "adaneg"):
        w = sh[k]["windows"]
        x = [e["first_batch"] + size.window / 2 for e in w]
        axes[0].plot(x, [e["auroc"] for e in w], "o-", label=labels[k])
    axes[0].set_ylabel(f"AUROC per window\n({size.window} batches)")
    axes[0].legend(fontsize=7)
    axes[1].plot(b, [t["p@100_A"] for t in trace], label="top-100 selected: words of mix A")
    axes[1].plot(b, [t["p@100_B"] for t in trace], label="top-100 selected: words of mix B")
    axes[1].plot(b, [t["churn"] for t in trace], "k:", label="churn of the top-M (vs previous batch)")
    axes[1].set_ylabel("share")
    axes[1].legend(fontsize=7)
    axes[2].plot(b, [t["threshold"] for t in trace], "k-", label="Otsu threshold")
    ax2 = axes[2].twinx()
    ax2.plot(b, [t["admitted_id"] for t in trace], color="tab:blue", alpha=0.6, label="admitted ID")
    ax2.plot(b, [t["admitted_ood"] for t in trace], color="tab:red", alpha=0.6, label="admitted OOD")
    ax2.set_ylabel("admitted per batch")
    axes[2].set_ylabel("threshold")
    axes[2].set_xlabel("batch")
    axes[2].legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7, loc="upper right")
    for ax in axes:
        ax.axvline(sh["shift_at_batch"], color="grey", ls="--", lw=1)
    fig.suptitle("Simulation: the OOD mix changes from concepts A to disjoint concepts B (dashed line)", fontsize=9)
    shift_foot = foot.replace(f"stream {size.n_id} ID + {size.n_ood} OOD", f"2 phases of {size.n_id} ID + {size.n_ood} OOD")
    fig.tight_layout(rect=(0, add_footer(fig, shift_foot, 140), 1, 1))
    fig.savefig(FIGURES_DIR / f"sim_shift{suffix}.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--small", action="store_true", help="C=200, N=12,000, D=256 (under a minute)")
    g.add_argument("--tiny", action="store_true", help="the smoke-test size (seconds); writes no result file")
    p.add_argument("--figures", action="store_true", help="also draw figures at --small (suffix _small)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    a = p.parse_args(argv)
    size = "small" if a.small else "tiny" if a.tiny else "full"
    run(size, figures=True if a.figures else None, threads=a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
