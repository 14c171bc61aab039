# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""End-to-end pipelines built on the guard: screening a folder of DICOM studies.

The ingest pipeline (one for ``screen``, the DICOM node and the Ray engine): :mod:`.manifest` (studies, order,
fixed batches), :mod:`.ingest` (decoding in worker processes), :mod:`.gating` (encode, then judge),
:mod:`.segments` (append-only verdicts) and :mod:`.checkpoint` (signed O(1) state). Names are imported on first
use, so a decode worker that imports :mod:`.ingest` does not load torch or the guard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ScreenConfig": "screen",
    "Screener": "screen",
    "ScreenReport": "screen",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "Manifest": "manifest",
    "ManifestRow": "manifest",
    "ManifestSettings": "manifest",
    "build_manifest": "manifest",
    "manifest_from_scan": "manifest",
    "DecodedStudy": "ingest",
    "DecodedBatch": "ingest",
    "decode_study": "ingest",
    "decode_batch": "ingest",
    "iter_decoded_batches": "ingest",
    "encode_batch": "gating",
    "judge_batch": "gating",
    "SegmentWriter": "segments",
    "read_verdicts": "segments",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .checkpoint import load_checkpoint, save_checkpoint
    from .gating import encode_batch, judge_batch
    from .ingest import DecodedBatch, DecodedStudy, decode_batch, decode_study, iter_decoded_batches
    from .manifest import Manifest, ManifestRow, ManifestSettings, build_manifest, manifest_from_scan
    from .screen import ScreenConfig, Screener, ScreenReport
    from .segments import SegmentWriter, read_verdicts


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "ScreenConfig",
    "Screener",
    "ScreenReport",
    "save_checkpoint",
    "load_checkpoint",
    "Manifest",
    "ManifestRow",
    "ManifestSettings",
    "build_manifest",
    "manifest_from_scan",
    "DecodedStudy",
    "DecodedBatch",
    "decode_study",
    "decode_batch",
    "iter_decoded_batches",
    "encode_batch",
    "judge_batch",
    "SegmentWriter",
    "read_verdicts",
]
