# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The guard as it ships, on real images: brain-MRI slices as ID against five OOD tiers (Track A, enlarged), or
your own ID / OOD folders.

Every method under test is built per fold from the training groups' references and decides with its own
threshold (see :mod:`benchmarks.methods` and :mod:`benchmarks.protocol`):

* methods: the shipped ``Guard`` with each detector: ``tanl+knn`` (what the guard ships with references: TANL
  fused with a kNN feature gate calibrated leave-one-group-out on the fold's references), its two gates alone
  (``tanl``, ``knn``), the baselines (``neglabel``, ``mcm``, ``adaneg``), or any name ``Guard.build`` accepts,
  optionally with a fusion rule (``tanl+knn:decision=score/admission=label``); and the 32 x 32 pixel-thumbnail
  floor (``thumbnail``);
* folds: leave one ID group out (MNI152, Colin27 and BrainWeb form one template-space group);
* policies: ``adaptive`` (the guard's own Otsu threshold), ``calibrated`` (``Guard.calibrate`` on the training
  references, as shipped), ``nested`` (a threshold from an inner leave-one-group-out loop on the training groups);
* streams: ``all_ood`` (the held-out group's slices + every OOD image: AUROC / FPR95 per tier), ``id95`` and
  ``id80`` (ID-majority streams with covariate-shifted ID slices: decisions as in deployment);
* intervals: 95 % cluster bootstrap over ID groups and OOD sources, beside every AUROC, FPR95 and rate.

The encoder is the offline surrogate by default (NOT a medical model; results say so); ``--encoder`` takes any
spec (``biomedclip``, ``biomedclip:local-dir:PATH``, ``open_clip:ARCH:PRETRAINED``, ...) and nothing else changes.
Image outputs are cached per encoder in ``benchmarks/data/embeddings/`` and the corpus embedding in the product's
corpus cache, so reruns take minutes.

    python -m benchmarks real_images                                   # surrogate, WordNet corpus, Track A
    python -m benchmarks real_images --encoder biomedclip:local-dir:/models/biomedclip --device cuda
    python -m benchmarks real_images --methods tanl+knn,tanl,knn       # the shipped guard and its two gates
    python -m benchmarks real_images --id-dir my_id/ --ood-dir CT=ct/ --ood-dir photos=photos/ --id-label "chest X-ray"
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .artefacts import ARTEFACTS, shifted_copies
from .common import FIGURES_DIR, RESULTS_DIR, add_footer, environment, set_threads, write_json
from .datasets import DATA_DIR, Item, Skipped, fold_group, load_track_a, manifest
from .embedding_cache import CachedEncoder
from .methods import GuardMethod, make_method
from .protocol import POLICIES, STREAM_KINDS, Pool, Records, folds, run_method
from .summary import decisions, paired_differences, separation

__all__ = ["DEFAULT_METHODS", "load_folders", "build_pool", "load_corpus_for", "run", "build_parser", "run_from_args",
           "main"]

COMMAND = "python -m benchmarks real_images"
SURROGATE_WARNING = (
    "Measured with the offline SURROGATE encoder (ConSE over EfficientNet-Lite0 + all-MiniLM-L6-v2). It is not a "
    "medical model and cannot read medical text; these numbers say nothing about BiomedCLIP/CLIP accuracy."
)
DEFAULT_METHODS = ("tanl+knn", "tanl", "knn", "neglabel", "mcm", "adaneg", "thumbnail")
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy"}


# ------------------------------------------------------------------------------------------------ user folders


def _read_any(path: Path) -> list[tuple[np.ndarray, int]]:
    from .datasets import _dicom, _to_unit

    ext = path.suffix.lower()
    if ext == ".npy":
        arr = np.load(path)
        return [(_to_unit(arr.astype(np.float64)), 0)]
    if ext in _IMAGE_EXT:
        from PIL import Image

        with Image.open(path) as im:
            return [(_to_unit(np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im)), 0)]
    img, frame, _ = _dicom(path)  # .dcm or no extension: try DICOM
    return [(img, frame)]


def load_folders(id_dir: str | None, ood_dirs: Sequence[str]) -> tuple[list[Item], list[Skipped]]:
    """Images from user folders. ID volumes (fold groups) = the first sub-folder level under ``id_dir`` (files
    directly in it are each their own group); ``ood_dirs`` entries are ``NAME=DIR`` and NAME becomes the OOD tier,
    its sub-folders (or files) the bootstrap's OOD sources."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    specs = [("id", id_dir)] if id_dir else []
    for entry in ood_dirs:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--ood-dir expects NAME=DIR, got {entry!r}")
        specs.append((name, folder))
    for tier, folder in specs:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"{tier}: no such folder {root}")
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            rel = path.relative_to(root)
            volume = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            try:
                for img, idx in _read_any(path):
                    sha = hashlib.sha256(path.read_bytes()).hexdigest()
                    items.append(Item(img, tier, tier if tier != "id" else "ID", "user folder", "-", str(rel), sha,
                                      f"{tier}:{volume}", idx))
            except Exception as exc:
                skipped.append(Skipped("user folder", str(path), f"{type(exc).__name__}: {exc}"[:200]))
    return items, skipped


# ------------------------------------------------------------------------------------------------ preparation


def build_pool(items: list[Item], shifted: bool = True, artefacts: Sequence[str] = ARTEFACTS,
               cache_dir: str | Path | None = None) -> Pool:
    """The evaluation's images: clean ID, one shifted copy of every ID slice (when ``shifted``), OOD.

    Args:
        items: the clean images.
        shifted: add the covariate-shifted copies.
        artefacts: the artefacts cycled over the ID slices.
        cache_dir: where the shifted copies are kept between runs (None: made every time).
    """
    images: list[np.ndarray] = []
    kind, tier, group, cluster, detail = [], [], [], [], []
    ids = [it for it in items if it.tier == "id"]
    for it in items:
        images.append(it.image)
        if it.tier == "id":
            g = fold_group(it.volume)
            kind.append("id"), tier.append("id"), group.append(g), cluster.append(g), detail.append(it.volume)
        else:
            kind.append("ood"), tier.append(it.tier), group.append(""), cluster.append(it.volume)
            detail.append(it.group)
    if shifted and ids:
        for i, name, img in shifted_copies([it.image for it in ids], tuple(artefacts), cache_dir):
            g = fold_group(ids[i].volume)
            images.append(img)
            kind.append("id_shifted"), tier.append("id_shifted"), group.append(g), cluster.append(g), detail.append(name)
    return Pool(images, np.array(kind), np.array(tier), np.array(group), np.array(cluster), np.array(detail))


def load_corpus_for(corpus_spec: str, corpus_limit: int | None, seed: int = 0) -> tuple[Any, str]:
    """The corpus object handed to ``Guard.build`` (a seeded random subset with ``corpus_limit``), and its name."""
    from tanl_guard.corpora import load_corpus

    corpus = load_corpus(corpus_spec)
    name = corpus_spec
    if corpus_limit is not None and corpus_limit < len(corpus):
        keep = np.sort(np.random.default_rng(seed).choice(len(corpus), corpus_limit, replace=False))
        corpus = corpus.subset(keep.tolist())
        name = f"{corpus_spec} (random {corpus_limit} labels, seed {seed})"
    return corpus, name


def _slug(encoder_id: str) -> str:
    if encoder_id.startswith("surrogate"):
        return "surrogate"
    return re.sub(r"[^A-Za-z0-9]+", "_", encoder_id).strip("_")[:40] or "encoder"


def _probe(encoder: Any, labels: Sequence[str], pool: Pool, corpus: Any, cache_dir: str | None) -> dict[str, Any]:
    """What the guard's corpus becomes after Guard.build's filters (all clean ID slices as references)."""
    from tanl_guard.guard import Guard

    refs = [pool.images[i] for i in np.flatnonzero(pool.kind == "id")]
    guard = Guard.build(encoder=encoder, labels=tuple(labels), reference_images={labels[0]: refs}, corpus=corpus,
                        detector="mcm", cache_dir=cache_dir)
    return {"labels_loaded": len(corpus), "labels_after_guard_filters": len(guard.corpus),
            "filters": "Guard.build: ID label names removed, labels within cosine 0.95 of an ID text anchor dropped",
            "modality_gap": guard.modality_gap}


def _summaries(pool: Pool, records: dict[tuple[str, str], Records], n_boot: int, seed: int) -> dict[str, Any]:
    first = next(iter(records))[0]
    out: dict[str, Any] = {}
    if (first, "all_ood") in records:
        out["separation"] = separation(pool, records[(first, "all_ood")], n_boot, seed)
        out["separation_scores_from_policy"] = first
    out["decisions"] = {}
    for (policy, kind), rec in records.items():
        out["decisions"].setdefault(policy, {})[kind] = decisions(pool, rec, n_boot, seed)
    return out


def run(
    encoder_spec: str = "surrogate",
    device: str = "cpu",
    corpus_spec: str = "wordnet",
    corpus_limit: int | None = None,
    id_labels: Sequence[str] = ("brain MRI",),
    id_dir: str | None = None,
    ood_dirs: Sequence[str] = (),
    slices_per_volume: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    policies: Sequence[str] = POLICIES,
    stream_kinds: Sequence[str] = STREAM_KINDS,
    artefacts: Sequence[str] = ARTEFACTS,
    batch_size: int = 32,
    max_streams: int = 8,
    n_boot: int = 2000,
    cache_dir: str | None = None,
    embedding_cache: bool = True,
    embedding_cache_dir: str | None = None,
    fetch: bool = True,
    figures: bool = True,
    out: str | None = None,
    threads: int | None = 2,
    encoder: Any = None,
    seed: int = 0,
    quick: bool = False,
    items: tuple[list[Item], list[Skipped]] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Build the images, run every method over every fold, policy and stream, write the result file and figures.

    Args:
        encoder_spec: encoder spec (ignored when ``encoder`` is given).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        corpus_spec: corpus spec for ``Guard.build``.
        corpus_limit: a seeded random subset of the corpus of this size (quick runs, controls).
        id_labels: the ID label(s); the first also names the reference images.
        id_dir: your ID folder (sub-folders = fold groups) instead of Track A.
        ood_dirs: your OOD folders, ``NAME=DIR``.
        slices_per_volume: cap per ID volume (None: every usable slice).
        methods: method names (:func:`benchmarks.methods.make_method`).
        policies: threshold policies (:data:`benchmarks.protocol.POLICIES`).
        stream_kinds: stream kinds (:data:`benchmarks.protocol.STREAM_KINDS`).
        artefacts: the covariate shifts cycled over the ID slices (:data:`benchmarks.artefacts.ARTEFACTS`).
        batch_size: images per gate batch (the CLI's default, 32).
        max_streams: cap on ID-majority streams per fold.
        n_boot: bootstrap replicates.
        cache_dir: the product's corpus-embedding cache.
        embedding_cache: keep per-image encoder outputs on disk.
        embedding_cache_dir: where (``benchmarks/data/embeddings`` when None).
        fetch: fetch the Debian / npm / dipy sources when Track A is (re)built.
        figures: draw the figures.
        out: result path (``benchmarks/results/real_images_<encoder>.json`` when None).
        threads: torch threads.
        encoder: an encoder object instead of ``encoder_spec``.
        seed: seeds the streams, the corpus subset and the guards' cold start.
        quick: a small Track A (smoke tests).
        items: images to use instead of building Track A (tests).
        verbose: print progress.
    """
    set_threads(threads)
    log = print if verbose else (lambda *a, **k: None)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    if items is not None:
        (item_list, skipped), data_name = items, "given images"
    elif id_dir or ood_dirs:
        (item_list, skipped), data_name = load_folders(id_dir, ood_dirs), "user folders"
    else:
        item_list, skipped = load_track_a(slices_per_volume, fetch=fetch, verbose=verbose, quick=quick)
        data_name = "Track A, enlarged (brain-MRI ID, package-shipped images)"
    shifted = any(k != "all_ood" for k in stream_kinds)
    pool = build_pool(item_list, shifted=shifted, artefacts=artefacts,
                      cache_dir=DATA_DIR if items is None and not (id_dir or ood_dirs) else None)
    timings["data_s"] = time.perf_counter() - t_all
    log(f"[real] {len(pool)} images ({int((pool.kind == 'id').sum())} ID, {int((pool.kind == 'id_shifted').sum())} "
        f"shifted ID, {int((pool.kind == 'ood').sum())} OOD) in {timings['data_s']:.1f}s", flush=True)

    t = time.perf_counter()
    if encoder is None:
        from tanl_guard.encoders import resolve

        encoder = resolve(encoder_spec, device=device)
    cached = CachedEncoder(encoder, embedding_cache_dir, enabled=embedding_cache)
    timings["encoder_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for lo in range(0, len(pool), 64):
        cached.encode_images(pool.images[lo : lo + 64])
    cached.save()
    timings["encode_s"] = time.perf_counter() - t
    timings["encoded_now"] = cached.misses
    if cached.misses:
        timings["per_image_ms"] = 1000.0 * timings["encode_s"] / cached.misses
    log(f"[real] encoder {encoder.id}: {cached.misses} images encoded, {cached.hits} from the cache, "
        f"{timings['encode_s']:.1f}s", flush=True)

    t = time.perf_counter()
    corpus, corpus_name = load_corpus_for(corpus_spec, corpus_limit, seed)
    context = {"corpus": corpus, "cache_dir": cache_dir, "seed": seed}
    corpus_info = {"spec": corpus_name, **_probe(cached, id_labels, pool, corpus, cache_dir)}
    timings["corpus_s"] = time.perf_counter() - t
    log(f"[real] corpus {corpus_name}: {corpus_info['labels_after_guard_filters']} labels after the guard's filters "
        f"({timings['corpus_s']:.1f}s)", flush=True)

    results: dict[str, Any] = {}
    all_records: dict[str, dict[tuple[str, str], Records]] = {}
    for name in methods:
        method = make_method(name)
        t = time.perf_counter()
        records, info = run_method(method, cached, id_labels, pool, context, policies, stream_kinds, batch_size,
                                   seed, max_streams, log)
        cached.save()
        entry = {"method": method.describe(), **_summaries(pool, records, n_boot, seed), "nested_thresholds":
                 info["nested_thresholds"], "calibrated_thresholds": info["calibrated_thresholds"],
                 "policies_share_scores": info["policies_share_scores"], "end_of_stream_snapshots": info["snapshots"],
                 "seconds": round(time.perf_counter() - t, 1)}
        results[method.name] = entry
        all_records[method.name] = records
        sep = entry.get("separation", {}).get("all")
        if sep:
            log(f"[real] {method.name:10s} AUROC {sep['auroc']} FPR95(ID+) {sep['fpr95_id_positive']} "
                f"({entry['seconds']:.0f}s)", flush=True)
    first_policy = policies[0]
    by_method = {m: r[(first_policy, "all_ood")] for m, r in all_records.items() if (first_policy, "all_ood") in r}
    guard_names = [m for m in results if isinstance(make_method(m), GuardMethod)]
    pairs = [(m, "thumbnail_template") for m in guard_names]
    pairs += [(a, b) for i, a in enumerate(guard_names) for b in guard_names[i + 1 :]]
    diffs = paired_differences(pool, by_method, pairs, n_boot, seed)

    is_surrogate = str(encoder.id).startswith("surrogate")
    fold_list = folds(pool)
    man = manifest(item_list, skipped)
    payload = {
        "benchmark": "real_images",
        "data": data_name,
        "encoder": str(encoder.id),
        "encoder_weights_sha256": str(getattr(encoder, "weights_sha256", "")),
        "logit_scale": float(encoder.logit_scale),
        "warning": SURROGATE_WARNING if is_surrogate else "",
        "corpus": corpus_info,
        "id_labels": list(id_labels),
        "protocol": {
            "folds": {f.name: {"test_id": int(f.test_id.size), "test_shifted": int(f.test_shifted.size),
                               "reference": int(f.reference.size)} for f in fold_list},
            "policies": list(policies),
            "stream_kinds": list(stream_kinds),
            "batch_size": batch_size,
            "max_streams_per_fold": max_streams,
            "bootstrap": {"replicates": n_boot, "level": 0.95, "id_clusters": "fold groups",
                          "ood_clusters": "sources (file / volume / manual / generator)"},
            "artefacts": list(artefacts) if shifted else [],
            "seed": seed,
            "reference_anchors": f"Guard.build(labels={list(id_labels)}, reference_images={{{id_labels[0]!r}: the "
                                 f"fold's training slices}}): one text and one image-prototype column",
        },
        "counts": man["counts"],
        "id_volumes": man["id_volumes"],
        "id_fold_groups": man["id_fold_groups"],
        "manifest_images_sha256": man["images_sha256"],
        "skipped_sources": [s.__dict__ for s in skipped],
        "results": results,
        "paired_auroc_differences": {"streams": f"all_ood, scores under policy {first_policy}", **diffs},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "environment": environment(),
    }
    payload["timings_s"]["total"] = round(time.perf_counter() - t_all, 1)
    slug = _slug(str(encoder.id)) + ("" if data_name.startswith(("Track", "given")) else "_user")
    out_path = Path(out) if out else RESULTS_DIR / f"real_images_{slug}.json"
    write_json(out_path, payload)
    _write_raw(out_path, pool, all_records)
    log(f"[real] wrote {out_path} in {payload['timings_s']['total']:.0f}s", flush=True)
    if figures:
        draw_figures(payload, slug, encoder_spec if encoder_spec != "surrogate" else "")
    return payload


def _write_raw(out_path: Path, pool: Pool, records: dict[str, dict[tuple[str, str], Records]]) -> None:
    """Every decision, for re-analysis: ``<result>_decisions.npz`` in the git-ignored ``benchmarks/results/raw/``
    (beside the result file when it is written elsewhere)."""
    raw = RESULTS_DIR / "raw" if out_path.resolve().parent == RESULTS_DIR.resolve() else out_path.parent
    raw.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"pool_kind": pool.kind, "pool_tier": pool.tier, "pool_group": pool.group,
                                     "pool_cluster": pool.cluster, "pool_detail": pool.detail}
    for m, by in records.items():
        for (policy, kind), rec in by.items():
            for k, v in rec.arrays().items():
                arrays[f"{m}|{policy}|{kind}|{k}"] = v
    np.savez_compressed(raw / (out_path.stem + "_decisions.npz"), **arrays)


# ------------------------------------------------------------------------------------------------ figures

_LABELS = {"tanl+knn": "TANL + kNN (shipped)", "tanl": "TANL", "knn": "kNN", "mahalanobis": "Mahalanobis",
           "neglabel": "NegLabel", "mcm": "MCM", "adaneg": "AdaNeg",
           "thumbnail_template": "32x32 thumbnail (floor)"}


def _footer(payload: dict[str, Any], cmd_suffix: str) -> str:
    c = payload["counts"]
    n_ood = sum(v["images"] for k, v in c.items() if k != "id")
    enc = "SURROGATE encoder (not a medical model)" if payload["warning"] else payload["encoder"]
    return (f"{enc}; {c['id']['images']} ID slices in {len(payload['protocol']['folds'])} fold groups, {n_ood} OOD "
            f"images; corpus {payload['corpus']['spec']} ({payload['corpus']['labels_after_guard_filters']} labels "
            f"after the guard's filters); 95 % cluster-bootstrap intervals. Reproduce: {COMMAND}{cmd_suffix}")


def draw_figures(payload: dict[str, Any], slug: str, encoder_spec: str = "") -> None:
    """Per-tier AUROC with intervals, and ID acceptance against OOD rejection for every policy and stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    foot = _footer(payload, f" --encoder {encoder_spec}" if encoder_spec else "")
    res = payload["results"]
    names = list(res)
    # 1. separation per tier
    tiers = [t for t in next(iter(res.values())).get("separation", {})]
    if tiers:
        fig, ax = plt.subplots(figsize=(9, 3.8), dpi=110)
        w = 0.8 / max(1, len(names))
        for j, m in enumerate(names):
            sep = res[m]["separation"]
            vals = np.array([sep[t]["auroc"] for t in tiers])
            x = np.arange(len(tiers)) + (j - (len(names) - 1) / 2) * w
            ax.bar(x, vals[:, 0], w, label=_LABELS.get(m, m), alpha=0.8)
            ax.errorbar(x, vals[:, 0], yerr=[vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]], fmt="none",
                        ecolor="k", lw=0.8, capsize=2)
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.set_xticks(np.arange(len(tiers)), [t.replace("_", " ") for t in tiers], fontsize=8)
        ax.set_ylabel("AUROC (clean ID vs tier)")
        ax.set_ylim(0.0, 1.02)
        ax.legend(fontsize=7, ncol=len(names), loc="lower left")
        ax.set_title("Separation per OOD tier (all_ood streams, leave-one-group-out, pooled over folds)", fontsize=9)
        fig.tight_layout(rect=(0, add_footer(fig, foot, 150), 1, 1))
        fig.savefig(FIGURES_DIR / f"real_auroc_tiers_{slug}.png")
        plt.close(fig)
    # 2. decisions: ID acceptance vs OOD rejection
    kinds = [k for k in STREAM_KINDS if any(k in res[m]["decisions"].get(p, {}) for m in names
                                            for p in res[m]["decisions"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), dpi=110, squeeze=False)
    markers = {"adaptive": "o", "calibrated": "s", "nested": "^"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds):
        ax.add_patch(plt.Rectangle((0.95, 0.90), 0.05, 0.10, color="tab:green", alpha=0.12, lw=0))
        for j, m in enumerate(names):
            for p, d in res[m]["decisions"].items():
                e = d.get(kind)
                if not e or not e["id_acceptance"] or not e["ood_rejection"]:
                    continue
                ia, orj = e["id_acceptance"], e["ood_rejection"]
                ax.errorbar(orj[0], ia[0], xerr=[[orj[0] - orj[1]], [orj[2] - orj[0]]],
                            yerr=[[ia[0] - ia[1]], [ia[2] - ia[0]]], fmt=markers.get(p, "x"), color=colors[j % 10],
                            ms=5, lw=0.7, capsize=2, label=f"{_LABELS.get(m, m)}, {p}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("OOD rejected")
        ax.set_ylabel("clean ID accepted")
        ax.set_title(f"stream {kind}", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, ncol=5, loc="upper center")
    fig.tight_layout(rect=(0, add_footer(fig, foot, 170), 1, 0.86))
    fig.savefig(FIGURES_DIR / f"real_decisions_{slug}.png")
    plt.close(fig)
    # 3. shifted-ID acceptance per artefact (id95 streams)
    if any("id95" in d for m in names for d in res[m]["decisions"].values()):
        policies = list(next(iter(res.values()))["decisions"])
        fig, axes = plt.subplots(1, len(policies), figsize=(4.2 * len(policies), 3.6), dpi=110, squeeze=False)
        for ax, p in zip(axes[0], policies):
            arts = ["clean", *ARTEFACTS]
            w = 0.8 / max(1, len(names))
            for j, m in enumerate(names):
                e = res[m]["decisions"][p].get("id95")
                if not e:
                    continue
                by = e["id_shifted_acceptance_by_artefact"]
                vals = [e["id_acceptance"]] + [by.get(a) for a in ARTEFACTS]
                v = np.array([x if x else [np.nan] * 3 for x in vals])
                x = np.arange(len(arts)) + (j - (len(names) - 1) / 2) * w
                ax.bar(x, v[:, 0], w, label=_LABELS.get(m, m), alpha=0.8, color=colors[j % 10])
                ax.errorbar(x, v[:, 0], yerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]], fmt="none", ecolor="k", lw=0.6,
                            capsize=1.5)
            ax.set_xticks(np.arange(len(arts)), [a.replace("_", " ") for a in arts], rotation=30, fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"ID accepted, policy {p} (id95 streams)", fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.tight_layout(rect=(0, add_footer(fig, foot, 170), 1, 1))
        fig.savefig(FIGURES_DIR / f"real_shifted_{slug}.png")
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ command line


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser(prog: str = COMMAND) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="surrogate", help="encoder spec: surrogate (default), biomedclip, "
                   "biomedclip:local-dir:PATH, open_clip:ARCH:PRETRAINED, open_clip:local-dir:PATH")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--corpus", default="wordnet", help="corpus spec, e.g. wordnet or wordnet+dicom")
    p.add_argument("--corpus-limit", type=int, default=None, help="seeded random subset of the corpus (quick runs)")
    p.add_argument("--id-label", action="append", default=None, help="ID label (repeatable; default 'brain MRI')")
    p.add_argument("--id-dir", default=None, help="your ID images; sub-folders = volumes/patients (never split)")
    p.add_argument("--ood-dir", action="append", default=[], metavar="NAME=DIR", help="an OOD tier (repeatable)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated: Guard detector names (tanl, neglabel, mcm, adaneg, ...) and 'thumbnail'")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated: adaptive, calibrated, nested")
    p.add_argument("--streams", default=",".join(STREAM_KINDS), help="comma-separated: all_ood, id95, id80")
    p.add_argument("--slices-per-volume", type=int, default=None, help="cap per ID volume (default: all usable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-streams", type=int, default=8, help="ID-majority streams per fold at most")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="corpus embedding cache (default ~/.cache/tanl_guard)")
    p.add_argument("--no-embedding-cache", action="store_true", help="do not keep image embeddings on disk")
    p.add_argument("--no-fetch", action="store_true", help="do not fetch the Debian/npm/dipy sources")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/real_images_<enc>.json)")
    p.add_argument("--threads", type=int, default=2)
    return p


def run_from_args(a: argparse.Namespace) -> None:
    """Run with the options of :func:`build_parser` (shared with ``benchmarks/encoder.py``)."""
    run(
        encoder_spec=a.encoder, device=a.device, corpus_spec=a.corpus, corpus_limit=a.corpus_limit,
        id_labels=tuple(a.id_label or ("brain MRI",)), id_dir=a.id_dir, ood_dirs=a.ood_dir,
        slices_per_volume=a.slices_per_volume, methods=_csv(a.methods), policies=_csv(a.policies),
        stream_kinds=_csv(a.streams), batch_size=a.batch_size, max_streams=a.max_streams, n_boot=a.bootstrap,
        cache_dir=a.cache_dir, embedding_cache=not a.no_embedding_cache, fetch=not a.no_fetch,
        figures=not a.no_figures, out=a.out, threads=a.threads, seed=a.seed,
    )


def main(argv: list[str] | None = None, prog: str = COMMAND) -> int:
    run_from_args(build_parser(prog).parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
