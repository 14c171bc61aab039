# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Real images through an encoder: brain-MRI slices as ID against four OOD tiers (Track A of data_sources.md),
or your own ID / OOD folders.

By default the encoder is the offline **surrogate** (ConSE over EfficientNet-Lite0 + MiniLM). It is NOT a medical
model and cannot read medical text, so every number this benchmark writes with it is labelled as such. The same
harness runs unchanged with ``--encoder biomedclip`` or any open_clip spec (``--device cuda`` optional).

Protocol:

* ID anchors, three settings: **text** (the ID label's prompt ensemble only, zero-shot), **text + image** (plus
  a prototype of reference ID images) and **image** (the prototype alone). Image anchors are built leave-one-volume-out: for each ID volume, the
  prototype comes from the *other* volumes' slices, and the stream holds that volume's slices plus every OOD
  image; slices of one volume are never split between reference and test.
* Detectors: TANL (paper defaults), NegLabel (static farthest 10k, noun/adjective split), MCM, AdaNeg, and kNN
  on the image embeddings (max cosine to the reference slices; image setting only).
* Streams: random (seeded), ID-first, OOD-first; batch 16 (the sets are small; the paper's 256 would put a
  whole stream in one batch).
* Metrics per OOD tier: AUROC and FPR95 in both conventions (ID-positive and OOD-positive), pooled over the folds;
  per-group rejection counts and per-volume ID acceptance at the threshold that accepts 95 % of the ID slices.

    python -m benchmarks real_images                              # Track A, surrogate encoder, WordNet corpus
    python -m benchmarks real_images --encoder biomedclip --device cuda
    python -m benchmarks real_images --encoder open_clip:ViT-B-16:/path/weights.pt \\
        --id-dir my_id/ --ood-dir CT=ct_dir/ --ood-dir photos=photo_dir/ --id-label "chest X-ray"
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
    noise_images,
)

from .common import (
    FIGURES_DIR,
    ORDERS,
    RESULTS_DIR,
    environment,
    metrics_dict,
    plot_histograms,
    plot_roc,
    run_stream,
    set_threads,
    stream_order,
    write_json,
)
from .datasets import TIERS, Item, Skipped, build_track_a, manifest

__all__ = ["Bench", "load_folders", "prepare", "evaluate", "run", "main"]

COMMAND = "python -m benchmarks real_images"
SURROGATE_WARNING = (
    "Measured with the offline SURROGATE encoder (ConSE over EfficientNet-Lite0 + all-MiniLM-L6-v2). It is not a "
    "medical model and cannot read medical text; these numbers say nothing about BiomedCLIP/CLIP accuracy."
)
METHODS = ("tanl", "neglabel", "mcm", "adaneg", "knn")
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
    """Images from user folders. ID volumes = the first sub-folder level under ``id_dir`` (files directly in it
    are each their own volume); ``ood_dirs`` entries are ``NAME=DIR`` and NAME becomes the OOD tier."""
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


@dataclass
class Bench:
    """Everything the evaluation needs, embedded once."""

    encoder_id: str
    logit_scale: float
    features: torch.Tensor  # (n, D) image embeddings
    tier: np.ndarray
    group: np.ndarray
    volume: np.ndarray
    corpus: torch.Tensor  # (N, D)
    corpus_kinds: torch.Tensor | None
    corpus_labels: list[str]
    text_anchors: torch.Tensor  # (C_text, D)
    noise: torch.Tensor  # (15, D)
    manifest: dict[str, Any]
    timings: dict[str, float]
    corpus_spec: str = ""

    @property
    def is_ood(self) -> np.ndarray:
        return self.tier != "id"


def _corpus_rows(corpus: Any, id_labels: Sequence[str]) -> list[int]:
    """Indices of the corpus labels that are not an ID label or a simple variant of one."""
    from tanl_guard.corpora import label_variants, normalize_label

    drop: set[str] = set()
    for label in id_labels:
        drop |= label_variants(label)
    return [i for i, lab in enumerate(corpus.labels) if normalize_label(lab) not in drop
            and normalize_label(lab).replace("-", " ") not in drop]


def prepare(
    encoder: Any,
    items: list[Item],
    skipped: list[Skipped],
    id_labels: Sequence[str] = ("brain MRI",),
    corpus_spec: str = "wordnet",
    corpus_limit: int | None = None,
    cache_dir: str | None = None,
    templates: Sequence[str] | None = None,
    verbose: bool = True,
) -> Bench:
    """Embed images, corpus (through the on-disk cache), the ID text anchors and TANL's noise images."""
    from tanl_guard.corpora import embed_corpus, load_corpus
    from tanl_guard.encoders import DEFAULT_TEMPLATES, build_id_anchors

    log = print if verbose else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    corpus = load_corpus(corpus_spec)
    if corpus_limit is not None and corpus_limit < len(corpus):
        keep = np.sort(np.random.default_rng(0).choice(len(corpus), corpus_limit, replace=False))
        corpus = corpus.subset(keep.tolist())
    emb = embed_corpus(encoder, corpus, cache_dir=cache_dir, progress=verbose)
    rows = _corpus_rows(corpus, id_labels)
    timings["corpus_s"] = time.perf_counter() - t
    log(f"[real] corpus {corpus_spec}: {len(rows)} labels (of {len(corpus)}) in {timings['corpus_s']:.1f}s", flush=True)

    t = time.perf_counter()
    feats = []
    for lo in range(0, len(items), 32):
        feats.append(encoder.encode_images([it.image for it in items[lo : lo + 32]]).float().cpu())
    features = torch.cat(feats)
    timings["images_s"] = time.perf_counter() - t
    timings["per_image_ms"] = 1000.0 * timings["images_s"] / max(1, len(items))
    log(f"[real] {len(items)} images embedded in {timings['images_s']:.1f}s", flush=True)

    anchors = build_id_anchors(encoder, list(id_labels), templates=tuple(templates or DEFAULT_TEMPLATES))
    noise = encoder.encode_images(noise_images(), normalize_input=False).float().cpu()
    kinds = corpus.kind_ids() if hasattr(corpus, "kind_ids") else None
    return Bench(
        encoder_id=str(getattr(encoder, "id", "?")),
        logit_scale=float(encoder.logit_scale),
        features=features,
        tier=np.array([it.tier for it in items]),
        group=np.array([it.group for it in items]),
        volume=np.array([it.volume for it in items]),
        corpus=emb[rows].float().contiguous(),
        corpus_kinds=None if kinds is None else torch.as_tensor(kinds)[rows],
        corpus_labels=[corpus.labels[i] for i in rows],
        text_anchors=anchors.embeddings.float().cpu(),
        noise=noise,
        manifest=manifest(items, skipped),
        timings=timings,
        corpus_spec=corpus_spec + (f" (random {corpus_limit})" if corpus_limit else ""),
    )


# ------------------------------------------------------------------------------------------------ evaluation


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _make(method: str, id_cols: torch.Tensor, b: Bench):
    kappa = b.logit_scale
    n_static = min(10000, b.corpus.shape[0])
    nl = NegLabelConfig(n_negatives=n_static)
    if method == "tanl":
        return TANLDetector(id_cols, b.corpus, kappa, TANLConfig(n_negatives=min(1000, b.corpus.shape[0])))
    if method == "neglabel":
        return NegLabelDetector(id_cols, b.corpus, kappa, nl, kinds=b.corpus_kinds)
    if method == "mcm":
        return MCMDetector(id_cols, b.corpus, kappa)
    if method == "adaneg":
        return AdaNegDetector(id_cols, b.corpus, kappa, AdaNegConfig(negatives=nl), kinds=b.corpus_kinds)
    raise ValueError(method)


class _KNN:
    """kNN on image embeddings: id_score = mean cosine to the k nearest reference ID images (stateless)."""

    def __init__(self, reference: torch.Tensor, k: int = 1) -> None:
        self.ref, self.k = reference, k

    def reset(self, **_: Any) -> None:
        pass

    def step(self, x: torch.Tensor):
        from tanl_guard import DetectorStep

        sims = x @ self.ref.T
        s = torch.topk(sims, min(self.k, sims.shape[1]), dim=1).values.mean(dim=1)
        return DetectorStep(scores=s, predictions=torch.zeros(len(x), dtype=torch.long))


def _folds(b: Bench, setting: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(fold name, stream sample indices, reference ID indices). text: one stream of everything; image: LOVO."""
    ood = np.flatnonzero(b.is_ood)
    ids = np.flatnonzero(~b.is_ood)
    if setting == "text":
        return [("all", np.r_[ids, ood], np.empty(0, int))]
    out = []
    for vol in sorted(set(b.volume[ids].tolist())):
        held = ids[b.volume[ids] == vol]
        ref = ids[b.volume[ids] != vol]
        out.append((vol, np.r_[held, ood], ref))
    return out


def evaluate(
    b: Bench,
    settings: Sequence[str] = ("text", "text+image", "image"),
    methods: Sequence[str] = METHODS,
    orders: Sequence[str] = ORDERS,
    batch_size: int = 16,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores of every (setting, method, order); returns (results, raw) where raw keeps pooled score arrays."""
    log = print if verbose else (lambda *a, **k: None)
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    ood_tiers = [t for t in dict.fromkeys(b.tier.tolist()) if t != "id"]
    for setting in settings:
        results[setting] = {}
        folds = _folds(b, "text" if setting == "text" else "image")
        for method in methods:
            if method == "knn" and setting == "text":
                continue
            stateful = method in ("tanl", "adaneg")
            results[setting][method] = {}
            for order in orders if stateful else ("random",):
                t0 = time.perf_counter()
                id_scores, id_idx, ood_scores, ood_idx, traces = [], [], [], [], []
                for f, (_name, stream, ref) in enumerate(folds):
                    if setting == "text":
                        cols = b.text_anchors
                    else:
                        proto = _unit(b.features[ref].mean(dim=0, keepdim=True))
                        cols = proto if setting == "image" else torch.cat([b.text_anchors, proto])
                    det = _KNN(b.features[ref]) if method == "knn" else _make(method, cols, b)
                    feats = b.features[stream]
                    order_idx = stream_order(b.is_ood[stream], order, seed + f)
                    kwargs = {"noise_features": b.noise} if method == "tanl" else None
                    r = run_stream(det, feats, order_idx, batch_size, kwargs)
                    is_o = b.is_ood[stream]
                    id_scores.append(r.scores[~is_o])
                    id_idx.append(stream[~is_o])
                    ood_scores.append(r.scores[is_o])
                    ood_idx.append(stream[is_o])
                    if method == "tanl" and f == 0:
                        traces.append(r)
                ids_s, oods_s = np.concatenate(id_scores), np.concatenate(ood_scores)
                ids_i, oods_i = np.concatenate(id_idx), np.concatenate(ood_idx)
                entry = _summarise(b, ids_s, ids_i, oods_s, oods_i, ood_tiers)
                entry["seconds"] = round(time.perf_counter() - t0, 2)
                entry["folds"] = len(folds)
                results[setting][method][order] = entry
                raw[(setting, method, order)] = {"id": ids_s, "ood": oods_s, "ood_idx": oods_i, "trace": traces}
                log(f"[real] {setting:10s} {method:8s} {order:9s} AUROC(all OOD) {entry['tiers']['all']['auroc']:.3f} "
                    f"FPR95 ID+ {entry['tiers']['all']['fpr95_id_positive']:.3f} ({entry['seconds']:.1f}s)", flush=True)
    return results, raw


def _summarise(b: Bench, ids, ids_i, oods, oods_i, ood_tiers) -> dict[str, Any]:
    tiers = {"all": metrics_dict(ids, oods)}
    for t in ood_tiers:
        m = b.tier[oods_i] == t
        if m.any():
            tiers[t] = metrics_dict(ids, oods[m])
    thr = float(np.quantile(ids, 0.05, method="lower"))  # accepts >= 95 % of the ID slices
    groups: dict[str, str] = {}
    for g in dict.fromkeys(b.group[oods_i].tolist()):
        m = b.group[oods_i] == g
        # with LOVO every OOD image is scored once per fold: count decisions, report images x folds
        groups[f"{b.tier[oods_i][m][0]} / {g}"] = f"{int((oods[m] < thr).sum())}/{int(m.sum())} rejected"
    vols: dict[str, str] = {}
    for v in dict.fromkeys(b.volume[ids_i].tolist()):
        m = b.volume[ids_i] == v
        vols[v] = f"{int((ids[m] >= thr).sum())}/{int(m.sum())} accepted"
    return {"tiers": tiers, "threshold_95_id": thr, "group_rejections": groups, "volume_acceptance": vols}


# ------------------------------------------------------------------------------------------------ run + report


def _slug(encoder_id: str) -> str:
    if encoder_id.startswith("surrogate"):
        return "surrogate"
    return re.sub(r"[^A-Za-z0-9]+", "_", encoder_id).strip("_")[:40] or "encoder"


def run(
    encoder_spec: str = "surrogate",
    device: str = "cpu",
    corpus_spec: str = "wordnet",
    corpus_limit: int | None = None,
    id_labels: Sequence[str] = ("brain MRI",),
    id_dir: str | None = None,
    ood_dirs: Sequence[str] = (),
    slices_per_volume: int = 12,
    batch_size: int = 16,
    cache_dir: str | None = None,
    fetch: bool = True,
    figures: bool = True,
    out: str | None = None,
    threads: int | None = 2,
    encoder: Any = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Build or load the images, embed them with the encoder, evaluate, write JSON (and figures)."""
    set_threads(threads)
    t_all = time.perf_counter()
    log = print if verbose else (lambda *a, **k: None)
    if id_dir or ood_dirs:
        items, skipped = load_folders(id_dir, ood_dirs)
        data_name = "user folders"
    else:
        items, skipped = build_track_a(slices_per_volume, fetch=fetch, verbose=verbose)
        data_name = "Track A (brain-MRI ID, package-shipped images)"
    t_data = time.perf_counter() - t_all
    log(f"[real] {len(items)} images ({int(sum(it.tier == 'id' for it in items))} ID) in {t_data:.1f}s", flush=True)
    if encoder is None:
        from tanl_guard.encoders import resolve

        t = time.perf_counter()
        encoder = resolve(encoder_spec, device=device)
        log(f"[real] encoder {encoder.id} loaded in {time.perf_counter() - t:.1f}s", flush=True)
    bench = prepare(encoder, items, skipped, id_labels, corpus_spec, corpus_limit, cache_dir, verbose=verbose)
    bench.timings["data_s"] = t_data
    results, raw = evaluate(bench, batch_size=batch_size, verbose=verbose)
    is_surrogate = bench.encoder_id.startswith("surrogate")
    payload = {
        "benchmark": "real_images",
        "data": data_name,
        "encoder": bench.encoder_id,
        "encoder_weights_sha256": getattr(encoder, "weights_sha256", None),
        "logit_scale": bench.logit_scale,
        "warning": SURROGATE_WARNING if is_surrogate else "",
        "corpus": {"spec": bench.corpus_spec, "n_labels": int(bench.corpus.shape[0])},
        "id_labels": list(id_labels),
        "protocol": {
            "text": "ID anchors = prompt ensemble of the ID label(s); one stream of all ID + all OOD images",
            "text+image": "plus a prototype of the reference ID slices, leave-one-volume-out: one stream per ID "
                          "volume (its slices + every OOD image); scores pooled over the folds",
            "image": "the prototype alone (same leave-one-volume-out folds)",
            "batch_size": batch_size,
            "threshold_95_id": "the 5th percentile of the pooled ID scores (accepts >= 95 % of ID slices)",
            "mcm_note": "with a single ID label MCM's max-softmax over ID columns is (nearly) constant: a "
                        "degenerate baseline here, kept for completeness",
        },
        "counts": bench.manifest["counts"],
        "id_volumes": bench.manifest["id_volumes"],
        "manifest_images_sha256": bench.manifest["images_sha256"],
        "skipped_sources": bench.manifest["skipped"],
        "results": results,
        "tanl_top_negatives": {
            f"{setting} (stream: {'all images' if setting == 'text' else 'first LOVO fold'}, random order)": [
                bench.corpus_labels[i] for i in raw[(setting, "tanl", "random")]["trace"][0].batch_selected[-1][:20]
            ]
            for setting in ("text", "image") if (setting, "tanl", "random") in raw
        },
        "timings_s": {k: round(v, 2) for k, v in bench.timings.items()},
        "environment": environment(),
    }
    payload["timings_s"]["total"] = round(time.perf_counter() - t_all, 1)
    slug = _slug(bench.encoder_id) + ("" if data_name.startswith("Track") else "_user")
    out_path = Path(out) if out else RESULTS_DIR / f"real_images_{slug}.json"
    write_json(out_path, payload)
    write_json(RESULTS_DIR / "raw" / f"manifest_{slug}.json", bench.manifest)  # git-ignored: per-image records
    log(f"[real] wrote {out_path} and the manifest under {RESULTS_DIR / 'raw'}", flush=True)
    if figures:
        _figures(bench, raw, slug, is_surrogate, encoder_spec)
    return payload


def _figures(b: Bench, raw: dict, slug: str, is_surrogate: bool, encoder_spec: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_id, n_vol = int((~b.is_ood).sum()), len(set(b.volume[~b.is_ood].tolist()))
    n_ood = int(b.is_ood.sum())
    cmd = COMMAND + ("" if encoder_spec == "surrogate" else f" --encoder {encoder_spec}")
    enc = "SURROGATE encoder (not a medical model)" if is_surrogate else b.encoder_id
    foot = f"{enc}; {n_id} ID slices / {n_vol} volumes, {n_ood} OOD images; corpus {b.corpus_spec}. Reproduce: {cmd}"
    labels = {"tanl": "TANL", "neglabel": "NegLabel", "mcm": "MCM", "adaneg": "AdaNeg", "knn": "kNN (image)"}
    for setting, tag in (("text+image", "img"), ("text", "txt")):
        curves = {labels[m]: (raw[(setting, m, "random")]["id"], raw[(setting, m, "random")]["ood"])
                  for m in METHODS if (setting, m, "random") in raw}
        plot_roc(curves, f"Real images, ID anchors: {setting} (random order; all OOD tiers)",
                 FIGURES_DIR / f"real_roc_{tag}_{slug}.png", foot)
    # TANL per tier, text+image
    r = raw[("text+image", "tanl", "random")]
    tiers = b.tier[r["ood_idx"]]
    plot_roc({t: (r["id"], r["ood"][tiers == t]) for t in TIERS if t != "id" and (tiers == t).any()},
             "TANL, text + image anchors: ID vs each OOD tier", FIGURES_DIR / f"real_roc_tiers_{slug}.png", foot)
    panels = {}
    for m in ("tanl", "neglabel", "knn"):
        rr = raw[("text+image", m, "random")]
        n_folds = max(1, rr["ood"].size // max(1, n_ood))
        panels[labels[m]] = (rr["id"], rr["ood"], float(np.quantile(rr["id"], 0.05, method="lower")),
                             f"OOD ({n_ood} images x {n_folds} folds)")
    plot_histograms(panels, "Real images, text + image anchors: id_score (dashed: 95 % ID acceptance)",
                    FIGURES_DIR / f"real_hist_{slug}.png", foot)
    # TANL stream trace (text anchors, one stream of everything)
    tr = raw[("text", "tanl", "random")]["trace"][0]
    prev = tr.initial_selected
    churn = []
    for sel in tr.batch_selected:
        churn.append(1.0 - np.intersect1d(prev, sel).size / max(sel.size, 1))
        prev = sel
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    x = np.arange(len(churn))
    ax.plot(x, tr.batch_thresholds, "k-", label="Otsu threshold")
    ax.plot(x, churn, "g:", label="churn of the selected negatives")
    ax2 = ax.twinx()
    ax2.bar(x - 0.2, [a[0] for a in tr.batch_admitted], width=0.4, color="tab:blue", alpha=0.5, label="admitted ID")
    ax2.bar(x + 0.2, [a[1] for a in tr.batch_admitted], width=0.4, color="tab:red", alpha=0.5, label="admitted OOD")
    ax.set_xlabel("batch (16 images)")
    ax.set_ylabel("threshold / churn")
    ax2.set_ylabel("admitted per batch")
    ax.legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7, loc="upper right")
    ax.set_title("TANL over the real-image stream (text anchors, random order)", fontsize=9)
    from .common import add_footer

    fig.tight_layout(rect=(0, add_footer(fig, foot, 130), 1, 1))
    fig.savefig(FIGURES_DIR / f"real_stream_{slug}.png")
    plt.close(fig)


def build_parser(prog: str = COMMAND) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="surrogate", help="encoder spec: surrogate (default), biomedclip, "
                   "biomedclip:local-dir:PATH, open_clip:ARCH:PRETRAINED, open_clip:local-dir:PATH")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--corpus", default="wordnet", help="corpus spec, e.g. wordnet or wordnet+dicom")
    p.add_argument("--corpus-limit", type=int, default=None, help="random subset of the corpus (quick runs)")
    p.add_argument("--id-label", action="append", default=None, help="ID label for text anchors (repeatable; "
                   "default 'brain MRI')")
    p.add_argument("--id-dir", default=None, help="your ID images; sub-folders = volumes/patients (never split)")
    p.add_argument("--ood-dir", action="append", default=[], metavar="NAME=DIR", help="an OOD tier (repeatable)")
    p.add_argument("--slices-per-volume", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="corpus embedding cache (default ~/.cache/tanl_guard)")
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
        slices_per_volume=a.slices_per_volume, batch_size=a.batch_size, cache_dir=a.cache_dir,
        fetch=not a.no_fetch, figures=not a.no_figures, out=a.out, threads=a.threads,
    )


def main(argv: list[str] | None = None, prog: str = COMMAND) -> int:
    run_from_args(build_parser(prog).parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
