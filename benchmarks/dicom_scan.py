# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""DICOM ingest speed: header scan (files/s) against a bare ``dcmread(stop_before_pixels=True)`` loop over the
same files in the same run, and view decoding (views/s), over every real test file installed offline
(pydicom wheel test_files, pydicom-data, pynetdicom test data).

Run: ``python benchmarks/dicom_scan.py [--repeat N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

from tanl_guard.dicom.sample_data import installed_sample_roots

__all__ = ["real_roots", "bench"]


def real_roots() -> dict[str, Path]:
    """The installed folders of real DICOM test files (see :func:`installed_sample_roots`)."""
    return installed_sample_roots()


def _bare_loop(files: list[Path]) -> None:
    import pydicom

    for path in files:
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            pass


def bench(repeat: int = 11) -> dict[str, object]:
    """Time the bare loop, the scan and the view decoding; return the figures (best and median of ``repeat`` rounds).

    Args:
        repeat: rounds of the scan and the bare loop (interleaved, so both see the same cache and load).
    """
    from tanl_guard.dicom import DicomScanConfig, resolve_outcomes, scan_folder

    roots = real_roots()
    files = [p for root in roots.values() for p in sorted(root.rglob("*")) if p.is_file()]
    config = DicomScanConfig(salt="benchmark")
    bare: list[float] = []
    scan: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _bare_loop(files)  # warm the page cache and imports
        for root in roots.values():
            scan_folder(root, config)
        for _ in range(repeat):
            t = time.perf_counter()
            _bare_loop(files)
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            scans = [scan_folder(root, config) for root in roots.values()]
            scan.append(time.perf_counter() - t)
        t = time.perf_counter()
        series_views = []
        for s in scans:
            series_views.extend(resolve_outcomes(s, "slices:3", config)[1])
        decode = time.perf_counter() - t
    n_views = sum(len(sv.provenance) for sv in series_views)
    n_series = len(series_views)
    return {
        "files": len(files),
        "roots": {k: sum(1 for p in v.rglob("*") if p.is_file()) for k, v in roots.items()},
        "bare_loop_files_per_s": round(len(files) / min(bare), 1),
        "scan_files_per_s": round(len(files) / min(scan), 1),
        "scan_over_bare_best": round(min(scan) / min(bare), 3),
        # rounds are interleaved, so the per-round ratio is the figure least disturbed by other load
        "scan_over_bare_median_of_rounds": round(statistics.median(s / b for s, b in zip(scan, bare, strict=True)), 3),
        "bare_median_s": round(statistics.median(bare), 4),
        "scan_median_s": round(statistics.median(scan), 4),
        "series_decoded": n_series,
        "views": n_views,
        "decode_s": round(decode, 3),
        "views_per_s": round(n_views / decode, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="timing rounds (best is reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = bench(args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
