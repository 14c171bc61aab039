# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Run a benchmark on demand: ``python -m benchmarks NAME [options]``.

Names: ``simulation`` (controlled mixture, engine only), ``real_images`` (the shipped guard on images shipped
inside installed packages, offline surrogate encoder by default), ``encoder`` (the same harness with a real
BiomedCLIP/CLIP and your own ID/OOD folders), ``controls`` (the same harness with seeded random-weight encoders);
``engine_speed`` (TANL at ImageNet scale), ``dicom_scan`` (header scan and decoding), ``screen_e2e`` (end-to-end
screening), ``ray_scale`` (the Ray engine: workers, gate memory), ``listener`` (the DICOM node: studies/s,
instances/s, added latency). ``python -m benchmarks NAME --help`` lists each one's options.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS = {
    "simulation": "benchmarks.simulation",
    "real_images": "benchmarks.real_images",
    "encoder": "benchmarks.encoder",
    "controls": "benchmarks.controls",
    "engine_speed": "benchmarks.engine_speed",
    "dicom_scan": "benchmarks.dicom_scan",
    "screen_e2e": "benchmarks.screen_e2e",
    "ray_scale": "benchmarks.ray_scale",
    "listener": "benchmarks.listener",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown benchmark {argv[0]!r}; choose one of: {', '.join(BENCHMARKS)}")
            return 2
        return 0
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
