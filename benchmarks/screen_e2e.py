# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""End-to-end screening speed: decode alone, encode alone and the whole screen, with 0, 1, 2 decode workers.

Two folders: the demo folder (real packaged DICOM and series written from packaged brain MR volumes), and a
generated folder of a few hundred studies (brain MR series cut from the MNI152 template at random positions,
and photos from scikit-image stored as secondary captures), both written as DICOM files. Encoder: the offline
surrogate unless ``--encoder`` says otherwise.

Per folder, on the same manifest (same batches): **decode** alone (``iter_decoded_batches`` with W workers, views
discarded), **encode** alone (``encode_batch`` on each decoded batch, timed alone) and **screen**
(``Screener.run`` with W workers: decode overlapped with encode and gate, verdict segments, checkpoints every 50
studies, no audit; its throughput excludes the folder scan, which the manifest does before any batch). The
target: screen >= 0.9 x min(decode, encode). One run with the audit (a real MLflow SQLite store) shows where the
time goes, as before.

    python benchmarks/screen_e2e.py                     # demo folder + 300 generated studies, workers 0 1 2
    python benchmarks/screen_e2e.py --studies 100 --workers 0 2 --corpus wordnet
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def generate_folder(root: Path, n_studies: int, seed: int = 0) -> Path:
    """Write ``n_studies`` single-series studies: two thirds brain MR slabs, one third photos."""
    from nilearn.datasets import load_mni152_template
    from skimage import data as skdata

    from tanl_guard.demo import write_dicom_series

    rng = np.random.default_rng(seed)
    mni = np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float32)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), np.stack([skdata.camera()] * 3, -1)]
    for i in range(n_studies):
        if i % 3 < 2:
            start = int(rng.integers(20, 55))
            slab = np.stack([np.rot90(mni[:, :, z]) for z in range(start, start + 12, 2)])
            write_dicom_series(root / f"s{i:04d}", f"gen-mr-{seed}-{i}", slab, description="T1 axial")
        else:
            photo = photos[i % len(photos)]
            y, x = rng.integers(0, 40, 2)
            write_dicom_series(root / f"s{i:04d}", f"gen-photo-{seed}-{i}", photo[None, y:, x:], modality="OT",
                               rgb=True, description="photo")
    return root


def screen_once(folder: Path, guard_factory, work: Path, batch_size: int, workers: int = 1) -> dict:
    """One screen with a real MLflow SQLite audit: where the time goes."""
    from tanl_guard.integrations.mlflow import AuditConfig, AuditLogger
    from tanl_guard.pipeline import ScreenConfig, Screener

    guard = guard_factory()
    audit = AuditLogger(AuditConfig(tracking_uri=f"sqlite:///{work / 'mlflow.db'}", run_name=folder.name))
    audit.start(params={"folder": folder.name}, tags={"benchmark": "screen_e2e"})
    start = time.perf_counter()
    report = Screener(guard, ScreenConfig(batch_size=batch_size, state_path=str(work / f"{folder.name}.pt"),
                                          workers=workers), audit=audit).run(folder)
    t = time.perf_counter()
    audit.finish()
    report.seconds["audit"] += time.perf_counter() - t
    wall = time.perf_counter() - start
    s = report.seconds
    overhead = (s["ingest"] + s["gate"] + s["audit"]) / max(s["encode"], 1e-9)
    return {
        "folder": folder.name, "workers": workers, "studies": len(report.studies), "views": report.views,
        "wall_s": wall, "studies_per_s": len(report.studies) / wall, **{f"{k}_s": v for k, v in s.items()},
        "overhead_vs_encoder": overhead, "verdicts": report.counts(),
    }


def throughput(folder: Path, guard_factory, work: Path, batch_size: int, workers_list: list[int]) -> list[dict]:
    """Views/s of decoding alone, encoding alone and the whole screen on one folder, per number of workers."""
    from tanl_guard.dicom import DicomScanConfig
    from tanl_guard.pipeline import ScreenConfig, Screener, build_manifest
    from tanl_guard.pipeline.gating import encode_batch
    from tanl_guard.pipeline.ingest import iter_decoded_batches

    t = time.perf_counter()
    manifest = build_manifest(folder, DicomScanConfig(), seed=0, batch_size=batch_size)
    scan_s = time.perf_counter() - t
    guard = guard_factory()
    encode_s, views = 0.0, 0
    for batch in iter_decoded_batches(manifest, workers=0):  # nothing else runs while a batch is encoded
        t = time.perf_counter()
        encode_batch(guard, batch)
        encode_s += time.perf_counter() - t
        views += batch.n_views

    rows = []
    for workers in workers_list:
        t = time.perf_counter()
        decoded = sum(b.n_views for b in iter_decoded_batches(manifest, workers=workers))
        decode_s = time.perf_counter() - t
        state = work / f"{folder.name}-w{workers}.pt"
        screener = Screener(guard_factory(), ScreenConfig(batch_size=batch_size, state_path=str(state),
                                                          workers=workers))
        t = time.perf_counter()
        report = screener.run(folder)
        screen_s = time.perf_counter() - t - scan_s  # its own scan, measured above on the same folder
        assert report.views == decoded == views, (report.views, decoded, views)
        rates = {"decode": views / decode_s, "encode": views / encode_s, "screen": views / max(screen_s, 1e-9)}
        inside = report.seconds  # same run, so immune to the load drifting between the measurements above
        rows.append({"folder": folder.name, "workers": workers, "studies": len(manifest), "views": views,
                     "scan_s": scan_s, "decode_s": decode_s, "encode_s": encode_s, "screen_s": screen_s,
                     **{f"{k}_views_per_s": v for k, v in rates.items()},
                     "screen_vs_slower": rates["screen"] / min(rates["decode"], rates["encode"]),
                     "screen_encode_s": inside["encode"], "screen_wait_s": inside["ingest"] - scan_s,
                     "encoder_busy": inside["encode"] / max(screen_s, 1e-9)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="surrogate")
    parser.add_argument("--corpus", default="wordnet", help="the corpus embedding is cached after the first run")
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-audit-run", action="store_true", help="skip the run with the MLflow audit")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TANL_GUARD_SALT", "benchmark")

    from tanl_guard.demo import ID_LABELS, build_demo_folder
    from tanl_guard.encoders import resolve
    from tanl_guard.guard import Guard
    from tanl_guard.pipeline.references import load_reference_images

    encoder = resolve(args.encoder, device=args.device)
    rows, audited = [], []
    with tempfile.TemporaryDirectory(prefix="tanl_guard_e2e_") as tmp:
        work = Path(tmp)
        demo = build_demo_folder(work / "demo")
        references = load_reference_images(demo.references, list(ID_LABELS))
        Guard.build(encoder=encoder, labels=ID_LABELS, reference_images=references, corpus=args.corpus,
                    progress=True)  # fills the corpus cache outside the timings

        def factory():
            return Guard.build(encoder=encoder, labels=ID_LABELS, reference_images=references, corpus=args.corpus)

        generated = generate_folder(work / "generated", args.studies)
        for folder in (demo.studies, generated):
            rows += throughput(folder, factory, work, args.batch_size, args.workers)
            if not args.no_audit_run:
                audited.append(screen_once(folder, factory, work, args.batch_size, max(args.workers)))
    print(f"Screening with {encoder.id} on {args.device}, corpus {args.corpus!r}, batch {args.batch_size} views, "
          f"{os.cpu_count()} CPUs")
    print("| folder | studies | views | workers | scan | decode views/s | encode views/s | screen views/s "
          "| screen / min(decode, encode) | screen: waiting for decode | screen: encoder busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['folder']} | {r['studies']} | {r['views']} | {r['workers']} | {r['scan_s']:.1f} s "
              f"| {r['decode_views_per_s']:.1f} | {r['encode_views_per_s']:.1f} | {r['screen_views_per_s']:.1f} "
              f"| {r['screen_vs_slower']:.2f} | {r['screen_wait_s']:.1f} s | {r['encoder_busy'] * 100:.0f} % |")
    if audited:
        print()
        print("| folder | workers | studies | views | wall | studies/s | ingest wait | encode | gate | audit "
              "| (ingest + gate + audit) / encode |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in audited:
            print(f"| {r['folder']} | {r['workers']} | {r['studies']} | {r['views']} | {r['wall_s']:.1f} s "
                  f"| {r['studies_per_s']:.2f} | {r['ingest_s']:.1f} s | {r['encode_s']:.1f} s | {r['gate_s']:.2f} s "
                  f"| {r['audit_s']:.2f} s | {r['overhead_vs_encoder'] * 100:.0f} % |")
    if args.json:
        args.json.write_text(json.dumps({"throughput": rows, "audited": audited}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
