# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Synthetic trees written with pydicom: grouping, ordering, duplicates, broken files, links, limits, privacy."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import BIRTH_DATE, PATIENT_ID, PATIENT_NAME, SALT, tree_digest, write_image
from pydicom.uid import generate_uid

import tanl_guard.dicom.scan as scan_module
import tanl_guard.dicom.series_views as views_module
from tanl_guard.dicom import (
    DicomScanConfig,
    FileStatus,
    Reason,
    iter_study_views,
    load_series_views,
    resolve_outcomes,
    scan_folder,
)
from tanl_guard.privacy import resolve_salt


def _build_tree(root: Path) -> dict[str, object]:
    """Two studies (series of 8 and 4 slices, and a single image), shuffled names, plus broken and extra files."""
    rng = random.Random(7)
    names = [f"f{i:03d}" for i in range(100)]
    rng.shuffle(names)
    uids = {"s1": generate_uid(), "s2": generate_uid(), "a": generate_uid(), "b": generate_uid(), "c": generate_uid()}
    z_order: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    plan = [("s1", "a", 8), ("s1", "b", 4), ("s2", "c", 1)]
    files: dict[str, str] = {}
    for study, series, n in plan:
        zs = list(range(n))
        rng.shuffle(zs)
        for z in zs:
            name = names.pop()
            # Instance Numbers run against the positions: the projection on the slice normal must win.
            rel = f"{'sub/' if z % 2 else ''}{name}.dcm"
            sop = write_image(root / rel, study=uids[study], series=uids[series], z=float(z) * 2.5, number=100 - z)
            files[rel] = sop
            z_order[series].append((z, rel))  # type: ignore[arg-type]
    for k in z_order:
        z_order[k] = [rel for _, rel in sorted(z_order[k])]  # type: ignore[misc]
    (root / "README.txt").write_text("exported by a PACS\n")
    (root / "empty.dcm").write_bytes(b"")
    (root / "garbage.dcm").write_bytes(os.urandom(2000))
    first_a = z_order["a"][0]
    shutil.copyfile(root / first_a, root / "dup_copy.dcm")  # same SOP Instance UID
    data = (root / z_order["a"][3]).read_bytes()
    (root / "truncated.dcm").write_bytes(data[: len(data) - 40])  # same SOP UID, pixel data cut short
    return {"uids": uids, "z_order": z_order, "first_a": first_a}


def test_grouping_ordering_and_outcomes(tmp_path: Path) -> None:
    info = _build_tree(tmp_path)
    config = DicomScanConfig(salt=SALT)
    scan = scan_folder(tmp_path, config)
    s = scan.summary(include_files=False)
    assert (s["patients"], s["studies"], s["series"], s["instances"]) == (1, 2, 3, 13)
    all_files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [o.rel_path for o in scan.outcomes] == all_files  # exactly one outcome per file

    resolved, svs = resolve_outcomes(scan, None, config)
    by = {o.rel_path: o for o in resolved.outcomes}
    assert by["README.txt"].status is FileStatus.NOT_DICOM
    assert by["empty.dcm"].status is FileStatus.NOT_DICOM
    assert by["garbage.dcm"].status is FileStatus.NOT_DICOM
    assert (by["truncated.dcm"].status, by["truncated.dcm"].reason) == (FileStatus.UNREADABLE, Reason.TRUNCATED_PIXEL_DATA)
    dup = [by["dup_copy.dcm"], by[info["first_a"]]]  # type: ignore[index]
    assert sorted(o.status.value for o in dup) == ["duplicate", "viewed"]
    assert resolved.status_counts() == {"duplicate": 1, "not_dicom": 3, "unreadable": 1, "viewed": 13}

    # order by position: the 25/50/75 % views of the 8-slice series are slices 2, 4, 5 (0-based, by z)
    keys = {o.path_key: o.rel_path for o in resolved.outcomes}
    series_a = next(sv for sv in svs if len(sv.provenance) == 3 and sv.provenance[0].total == 8)
    z_a = info["z_order"]["a"]  # type: ignore[index]
    picked = [keys[p.path_key] for p in series_a.provenance]
    assert [z_a.index(rel) if rel in z_a else z_a.index(info["first_a"]) for rel in picked] == [2, 4, 5]
    assert [p.index for p in series_a.provenance] == [2, 4, 5]
    single = next(sv for sv in svs if sv.provenance[0].total == 1)
    assert len(single.provenance) == 1 and single.provenance[0].fraction == 0.5


def test_instance_number_fallback(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    for n in (3, 1, 2, 5, 4):
        write_image(tmp_path / f"x{n * 7 % 5}.dcm", study=study, series=series, z=None, number=n)
    scan = scan_folder(tmp_path, DicomScanConfig(salt=SALT))
    (series_rec,) = list(scan.iter_series())
    assert [i.instance_number for i in series_rec.instances] == [1, 2, 3, 4, 5]


def test_views_are_unit_range_and_luts_apply(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 40  # 0 .. 2520
    # CT: rescale to HU and a window centred at 40 HU, 400 wide: pixel 1064 -> 40 HU -> about 0.5
    ramp[0, 0] = 1064
    write_image(tmp_path / "ct.dcm", study=study, series=series, pixels=ramp,
                extra={"RescaleIntercept": -1024, "RescaleSlope": 1, "WindowCenter": 40, "WindowWidth": 400})
    write_image(tmp_path / "m1.dcm", study=study, series=generate_uid(), pixels=ramp, photometric="MONOCHROME1")
    write_image(tmp_path / "m2.dcm", study=study, series=generate_uid(), pixels=ramp, photometric="MONOCHROME2")
    config = DicomScanConfig(salt=SALT)
    scan = scan_folder(tmp_path, config)
    views = {}
    for sv in next(iter_study_views(scan, "mid", config)).series:
        views[next(o.rel_path for o in sv.outcomes)] = sv.views[0]
    ct = views["ct.dcm"]
    assert ct.dtype == np.float32 and ct.shape == (8, 8)
    assert abs(float(ct[0, 0]) - 0.5) < 0.01
    assert float(ct[0, 1]) == 0.0 and float(ct[7, 7]) == 1.0  # below and above the window
    m1, m2 = views["m1.dcm"], views["m2.dcm"]
    assert np.allclose(m1, 1.0 - m2)  # MONOCHROME1 is inverted
    assert float(m2.min()) == 0.0 and float(m2.max()) == 1.0


def test_multiframe_mip_and_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = generate_uid()
    frames = np.zeros((6, 4, 4), dtype=np.uint16)
    for i in range(6):
        frames[i, i % 4, i % 4] = 1000
    write_image(tmp_path / "cine.dcm", study=study, series=generate_uid(), pixels=frames, frames=6, z=None)
    config = DicomScanConfig(salt=SALT)
    scan = scan_folder(tmp_path, config)
    (series,) = list(scan.iter_series())
    assert series.frame_count == 6
    sv = load_series_views(series, "slices:3", config)
    assert [p.frame for p in sv.provenance] == [1, 3, 4] and {p.kind for p in sv.provenance} == {"frame"}
    mip = load_series_views(series, "mip", config)
    assert mip.provenance[0].frames_used == 6
    assert float(np.trace(mip.views[0])) == 4.0  # every frame's bright pixel survives the projection

    # limits are checked on the header, before decoding anything
    def boom(*args, **kwargs):
        raise AssertionError("decoded despite the limit")

    monkeypatch.setattr(views_module, "decode_frames", boom)
    for cfg, reason_text in (
        (DicomScanConfig(salt=SALT, max_frames=5), "max_frames"),
        (DicomScanConfig(salt=SALT, max_pixels_per_frame=15), "max_pixels_per_frame"),
        (DicomScanConfig(salt=SALT, max_pixels_per_series=95), "max_pixels_per_series"),
    ):
        res, svs = resolve_outcomes(scan_folder(tmp_path, cfg), None, cfg)
        (o,) = res.outcomes
        assert (o.status, o.reason) == (FileStatus.UNREADABLE, Reason.IMAGE_TOO_LARGE)
        assert reason_text in o.detail
        assert all(sv.status is FileStatus.UNREADABLE for sv in svs)


def test_huge_declared_image_is_not_decoded(tmp_path: Path) -> None:
    # header says 60000 x 60000 x 1000 frames; the file holds 128 bytes of pixels
    write_image(tmp_path / "huge.dcm", study=generate_uid(), series=generate_uid(), frames=1000,
                pixels=np.zeros((8, 8), dtype=np.uint16), extra={"Rows": 60000, "Columns": 60000})
    res, _ = resolve_outcomes(scan_folder(tmp_path, DicomScanConfig(salt=SALT)))
    (o,) = res.outcomes
    assert (o.status, o.reason) == (FileStatus.UNREADABLE, Reason.IMAGE_TOO_LARGE)


def test_corrupt_slice_is_replaced_by_its_neighbour(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    study, series = generate_uid(), generate_uid()
    for z in range(5):
        write_image(tmp_path / f"s{z}.dcm", study=study, series=series, z=float(z), number=z + 1)
    ds = dcmread(tmp_path / "s2.dcm")  # the middle slice, picked for the 50 % view
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + os.urandom(60)])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "s2.dcm", enforce_file_format=True)
    config = DicomScanConfig(salt=SALT)
    res, svs = resolve_outcomes(scan_folder(tmp_path, config), None, config)
    by = {o.rel_path: o for o in res.outcomes}
    assert by["s2.dcm"].status is FileStatus.UNREADABLE
    assert by["s2.dcm"].reason in (Reason.CORRUPT_CODESTREAM, Reason.TRUNCATED_PIXEL_DATA)
    assert [by[f"s{z}.dcm"].status for z in (0, 1, 3, 4)] == [FileStatus.VIEWED] * 4
    (sv,) = svs
    assert sv.ok and len(sv.provenance) == 3 and 2 not in [p.index for p in sv.provenance]


def test_links_loops_and_special_files(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    write_image(tmp_path / "a" / "img.dcm", study=study, series=series)
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a link to an ancestor
    os.symlink(tmp_path / "a" / "img.dcm", tmp_path / "link.dcm")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken.dcm")
    os.mkfifo(tmp_path / "pipe.dcm")  # must never be opened (it would block)

    no_follow = scan_folder(tmp_path, DicomScanConfig(salt=SALT))
    by = {o.rel_path: o for o in no_follow.outcomes}
    assert by["a/loop"].reason is Reason.SYMLINK_NOT_FOLLOWED
    assert by["link.dcm"].status is FileStatus.SKIPPED
    assert by["pipe.dcm"].status is FileStatus.NOT_DICOM
    assert by["a/img.dcm"].status is FileStatus.PENDING

    follow_cfg = DicomScanConfig(salt=SALT, follow_symlinks=True)
    follow, _ = resolve_outcomes(scan_folder(tmp_path, follow_cfg), None, follow_cfg)
    by = {o.rel_path: o for o in follow.outcomes}
    assert by["a/loop/"].reason is Reason.SYMLINK_LOOP
    assert by["broken.dcm"].status is FileStatus.UNREADABLE
    assert sorted(o.status.value for o in (by["a/img.dcm"], by["link.dcm"])) == ["duplicate", "viewed"]


def test_unreadable_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "ok.dcm", study=generate_uid(), series=generate_uid())
    write_image(tmp_path / "locked.dcm", study=generate_uid(), series=generate_uid())
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        os.chmod(tmp_path / "locked.dcm", 0)
    else:  # root reads anything: simulate the denial at open()
        real_open = open

        def guarded(file, *args, **kwargs):
            if str(file).endswith("locked.dcm"):
                raise PermissionError(13, "Permission denied")
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(scan_module, "open", guarded, raising=False)
    try:
        res, _ = resolve_outcomes(scan_folder(tmp_path, DicomScanConfig(salt=SALT)))
    finally:
        os.chmod(tmp_path / "locked.dcm", stat.S_IRUSR | stat.S_IWUSR)
    by = {o.rel_path: o for o in res.outcomes}
    assert (by["locked.dcm"].status, by["locked.dcm"].reason) == (FileStatus.UNREADABLE, Reason.PERMISSION_DENIED)
    assert by["ok.dcm"].status is FileStatus.VIEWED


def test_no_exception_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = generate_uid()
    write_image(tmp_path / "a.dcm", study=study, series=generate_uid())
    write_image(tmp_path / "b.dcm", study=study, series=generate_uid())
    original = scan_module._Scanner._classify

    def flaky(self, rel, *args):
        if rel == "a.dcm":
            raise RuntimeError("unexpected")
        return original(self, rel, *args)

    monkeypatch.setattr(scan_module._Scanner, "_classify", flaky)
    scan = scan_folder(tmp_path, DicomScanConfig(salt=SALT))
    assert (scan.outcome("a.dcm").status, scan.outcome("a.dcm").reason) == (FileStatus.UNREADABLE, Reason.INVALID_FILE)

    def broken(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr(views_module, "decode_frames", broken)
    res, svs = resolve_outcomes(scan)
    assert res.outcome("b.dcm").reason is Reason.DECODE_ERROR and not svs[0].ok


def test_source_files_unchanged_and_identifiers_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _build_tree(tmp_path)
    before = tree_digest(tmp_path)
    res1, _ = resolve_outcomes(scan_folder(tmp_path, DicomScanConfig(salt=SALT)))
    assert tree_digest(tmp_path) == before

    text = json.dumps(res1.summary())
    uids = set()
    import pydicom

    for p in tmp_path.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        uids |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    for secret in [PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "Doe", *uids]:
        assert secret not in text
    assert "README.txt" not in text and "README.txt" in json.dumps(res1.summary(include_paths=True))

    # other salt, other keys; the same salt, the same keys
    res2 = scan_folder(tmp_path, DicomScanConfig(salt="another"))
    res3 = scan_folder(tmp_path, DicomScanConfig(salt=SALT))
    assert {s.study_key for s in res1.studies} != {s.study_key for s in res2.studies}
    assert [s.study_key for s in res1.studies] == [s.study_key for s in res3.studies]


def test_salt_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANL_GUARD_SALT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    first = resolve_salt(None)
    path = tmp_path / "cfg" / "tanl_guard" / "salt"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_salt(None) == first and len(first) == 64
    monkeypatch.setenv("TANL_GUARD_SALT", "from-env")
    assert resolve_salt(None) == "from-env"
    assert resolve_salt("explicit") == "explicit"


def test_iter_study_views_is_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(3):
        write_image(tmp_path / f"{generate_uid()}.dcm", study=generate_uid(), series=generate_uid())
    config = DicomScanConfig(salt=SALT)
    scan = scan_folder(tmp_path, config)
    calls = []
    original = views_module.load_series_views
    monkeypatch.setattr(views_module, "load_series_views", lambda *a, **k: calls.append(1) or original(*a, **k))
    it = iter_study_views(scan, None, config)
    first = next(it)
    assert len(calls) == 1 and len(first.series) == 1
    assert len(list(it)) == 2 and len(calls) == 3


def test_records_do_not_import_series_views() -> None:
    """records.py sits below series_views.py: no import back, not even for type checking (issue 10)."""
    import ast

    import tanl_guard.dicom.records as records

    tree = ast.parse(Path(records.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("series_views" in (m or "") for m in imported)
