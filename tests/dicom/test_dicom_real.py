# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Every real DICOM test file installed offline (pydicom wheel, pydicom-data, pynetdicom) against its expected
outcome, plus whole-folder counts, grouping checks, read-only access and privacy on real data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from dicom_expected_real import EXPECTED
from dicom_helpers import SALT, real_roots, tree_digest

from tanl_guard.dicom import (
    DicomScanConfig,
    FileStatus,
    Reason,
    iter_study_views,
    load_series_views,
    resolve_outcomes,
    scan_files,
    scan_folder,
)

ROOTS = real_roots()
CONFIG = DicomScanConfig(salt=SALT)
# Optional codecs (the [codecs] extra or python-gdcm) turn some "missing decoder" files into viewed ones.
EXTRA_CODECS = any(importlib.util.find_spec(m) for m in ("libjpeg", "gdcm", "jpeg_ls"))


def _real_files() -> list[tuple[str, Path, Path]]:
    out = []
    for name, root in ROOTS.items():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out.append((f"{name}:{p.relative_to(root).as_posix()}", root, p))
    return out


REAL_FILES = _real_files()


def test_table_covers_every_installed_file() -> None:
    found = {key for key, _, _ in REAL_FILES}
    assert found == set(EXPECTED), (sorted(found - set(EXPECTED)), sorted(set(EXPECTED) - found))
    assert len(found) >= 250


@pytest.mark.parametrize("key,root,path", REAL_FILES, ids=[k for k, _, _ in REAL_FILES])
def test_real_file_outcome(key: str, root: Path, path: Path) -> None:
    scan = scan_files(path.parent, [path], CONFIG)
    resolved, series_views = resolve_outcomes(scan, None, CONFIG)
    (outcome,) = resolved.outcomes
    expected = EXPECTED[key]
    if expected[0] == "viewed":
        _, modality, n_views = expected
        assert outcome.status is FileStatus.VIEWED, outcome
        assert outcome.reason is None
        (sv,) = series_views
        assert sv.modality == modality
        assert len(sv.provenance) == n_views
        # the arrays themselves: decode again with views kept
        views = load_series_views(next(scan.iter_series()), None, CONFIG).views
        assert len(views) == n_views
        for v in views:
            assert v.dtype == np.float32
            assert v.ndim == 2 or (v.ndim == 3 and v.shape[-1] == 3)
            assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
            assert np.isfinite(v).all()
    else:
        status, reason = expected
        if EXTRA_CODECS and reason == "missing_decoder" and (
            outcome.status is FileStatus.VIEWED or outcome.reason is Reason.CORRUPT_CODESTREAM  # JPEG-lossy.dcm
        ):
            return
        assert (outcome.status.value, outcome.reason.value if outcome.reason else None) == (status, reason), outcome
        assert outcome.detail
        if reason == "missing_decoder":
            assert "install one of" in outcome.detail


# Status counts of each whole folder. The test sets store one instance in several encodings under one SOP Instance
# UID: different bytes, so each encoding is a conflicting copy, judged as a series of its own (none is hidden).
# The one true duplicate per folder has the same dataset under another file meta.
FOLDER_COUNTS = {
    "pydicom": {"duplicate": 1, "not_dicom": 10, "skipped_non_image": 13, "unreadable": 71, "viewed": 81},
    "pydicom-data": {"unreadable": 5, "viewed": 63},
    "pynetdicom": {"duplicate": 1, "viewed": 5},
}


@pytest.mark.parametrize("name", sorted(ROOTS))
def test_whole_folder(name: str) -> None:
    root = ROOTS[name]
    scan = scan_folder(root, CONFIG)
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(scan.outcomes) == n_files
    resolved, _ = resolve_outcomes(scan, None, CONFIG)
    assert not [o for o in resolved.outcomes if o.status is FileStatus.PENDING]
    counts = resolved.status_counts()
    if EXTRA_CODECS:
        assert sum(counts.values()) == n_files
    else:
        assert counts == FOLDER_COUNTS[name]


def test_dicomdir_trees_group_by_tags() -> None:
    tree = ROOTS["pydicom"] / "dicomdirtests"
    main = [p for p in sorted(tree.rglob("*")) if p.is_file() and "TINY_ALPHA" not in p.parts]
    s = scan_files(tree, main, CONFIG).summary(include_files=False)
    assert (s["patients"], s["studies"], s["series"], s["instances"]) == (2, 6, 13, 31)
    assert s["dicomdir_references"] > 0 and s["dicomdir_missing"] == 0

    tiny = scan_folder(tree / "TINY_ALPHA", CONFIG)
    t = tiny.summary(include_files=False)
    assert (t["patients"], t["studies"], t["series"], t["instances"]) == (1, 1, 1, 50)
    (series,) = list(tiny.iter_series())
    assert series.issue is Reason.NO_PIXEL_DATA
    sv = load_series_views(series, None, CONFIG)
    assert sv.status is FileStatus.UNREADABLE and sv.reason is Reason.NO_PIXEL_DATA and not sv.views
    assert (t["dicomdir_references"], t["dicomdir_missing"]) == (50, 0)  # one IMAGE record per file


def test_series_views_order_and_frames() -> None:
    data = ROOTS.get("pydicom-data")
    if data is None:
        pytest.skip("pydicom-data not installed")
    path = data / "color3d_jpeg_baseline.dcm"  # US cine, 120 frames, YBR_FULL_422 JPEG
    scan = scan_files(data, [path], CONFIG)
    series = next(scan.iter_series())
    sv = load_series_views(series, "slices:3", CONFIG)
    assert [p.frame for p in sv.provenance] == [30, 60, 89]
    assert all(v.shape == (480, 640, 3) for v in sv.views)
    mid = load_series_views(series, "mid", CONFIG)
    assert [p.frame for p in mid.provenance] == [60]
    small = DicomScanConfig(salt=SALT, max_pixels_per_series=480 * 640 * 3 * 10)
    mip = load_series_views(series, "mip", small)
    assert mip.provenance[0].kind == "mip" and mip.provenance[0].frames_used == 10
    assert mip.views[0].shape == (480, 640, 3)


def test_only_requested_frames_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    seen: list[list[int]] = []
    original = pydicom.pixels.iter_pixels

    def spy(src, *args, indices=None, **kwargs):
        seen.append(list(indices) if indices is not None else [-1])
        return original(src, *args, indices=indices, **kwargs)

    monkeypatch.setattr(pydicom.pixels, "iter_pixels", spy)
    path = ROOTS["pydicom"] / "examples_ybr_color.dcm"  # 30 frames
    sv = load_series_views(next(scan_files(path.parent, [path], CONFIG).iter_series()), None, CONFIG)
    assert len(sv.views) == 3
    assert sorted(i for s in seen for i in s) == [7, 15, 22]


def test_real_trees_are_never_modified() -> None:
    before = {name: tree_digest(root) for name, root in ROOTS.items()}
    for root in ROOTS.values():
        scan = scan_folder(root, CONFIG)
        for _ in iter_study_views(scan, "slices:3", CONFIG):
            pass
    after = {name: tree_digest(root) for name, root in ROOTS.items()}
    assert before == after


def test_no_identifiers_in_summary() -> None:
    import pydicom

    root = ROOTS["pydicom"]
    identifiers = set()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        ds = pydicom.dcmread(root / name, stop_before_pixels=True)
        identifiers |= {str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                        str(ds.SOPInstanceUID)}
        if ds.get("PatientBirthDate"):
            identifiers.add(str(ds.PatientBirthDate))
    identifiers.discard("")
    scan, _ = resolve_outcomes(scan_folder(root, CONFIG), None, CONFIG)
    text = json.dumps(scan.summary())
    for ident in identifiers:
        assert ident not in text, ident
    assert "CT_small.dcm" not in text  # relative paths only when asked for
    assert "CT_small.dcm" in json.dumps(scan.summary(include_paths=True))
