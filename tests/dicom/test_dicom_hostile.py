# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Hostile inputs (issue 11): canaries in paths, header values and exception texts never reach an output;
compressed and header bombs are refused or decoded within a memory bound; a duplicate SOP Instance UID with other
content is a conflict, judged, not a hidden duplicate; truncated headers and permission problems get their own
reasons; a seeded fuzz corpus of mutated real files and bombs never crashes the scan."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import SALT, real_roots, write_image
from dicom_hostile import build_bombs, measure, write_codestream_bomb, write_deflated, write_header_bomb
from pydicom.uid import generate_uid

import tanl_guard.dicom.scan as scan_module
from tanl_guard.dicom import DicomScanConfig, FileStatus, Reason, resolve_outcomes, scan_files, scan_folder
from tanl_guard.dicom.vocabulary import Term, detail

CONFIG = DicomScanConfig(salt=SALT)
CANARIES = ("CANARYPATH", "CANARYNF", "CANARYPI", "CANARYMOD", "CANARYTS", "CANARYSOP", "CANARYEXC", "CANARYPN",
            "CANARYDIR")


def _patch(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def build_canary_tree(root: Path) -> dict[str, Path]:
    """A folder whose paths and header values carry canaries, plus a conflicting and an identical duplicate."""
    study, series = generate_uid(), generate_uid()
    files: dict[str, Path] = {}
    # a five-slice MR series under a folder named like a patient; one slice vanishes before decoding
    folder = root / "Doe^CANARYPATH John"
    sops = [write_image(folder / f"IM{i:04d}", study=study, series=series, z=float(i), number=i + 1, modality="MR",
                        extra={"PatientName": "CANARYPN^Jane"}) for i in range(5)]
    files["vanish"] = folder / "IM0002"  # a slice: replaced by its neighbour, the file reported
    write_image(folder / "single" / "IM0001", study=generate_uid(), series=generate_uid(), modality="MR")
    files["vanish_single"] = folder / "single" / "IM0001"  # a whole study: unreadable, with the reason
    # an "ultrasound frame" saved with the SOP Instance UID of slice 3, and an identical copy of slice 1
    rgb = np.full((8, 8), 60000, dtype=np.uint16)
    write_image(root / "CANARYDIR" / "US0001", study=study, series=series, sop=sops[3], z=3.0, number=4,
                modality="US", pixels=rgb)
    shutil.copyfile(folder / "IM0001", root / "CANARYDIR" / "IM0001-copy")
    files["conflict"] = root / "CANARYDIR" / "US0001"
    # header values: an invalid Number of Frames, a made-up photometric, modality, transfer syntax and SOP class
    nf = root / "values" / "nf.dcm"
    write_image(nf, study=generate_uid(), series=generate_uid(), extra={"NumberOfFrames": 12345678})
    _patch(nf, b"12345678", b"CANARYNF")
    pi = root / "values" / "pi.dcm"
    write_image(pi, study=generate_uid(), series=generate_uid(), photometric="CANARYPI")
    mod = root / "values" / "mod.dcm"
    write_image(mod, study=generate_uid(), series=generate_uid(), modality="CANARYMOD")
    ts = root / "values" / "ts.dcm"
    write_image(ts, study=generate_uid(), series=generate_uid())
    _patch(ts, b"1.2.840.10008.1.2.1\x00", b"1.2.840.77.CANARYTS\x00")
    sop = root / "values" / "sop.dcm"
    _write_non_image(sop, "1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR, then an unregistered class
    _patch(sop, b"1.2.840.10008.5.1.4.1.1.88.11\x00", b"1.2.840.10008.777.CANARYSOP.1\x00")
    files.update(nf=nf, pi=pi, mod=mod, ts=ts, sop=sop)
    return files


def _write_non_image(path: Path, sop_class: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SR"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    # the SOP Class UID only in the file meta: one occurrence to patch
    data = path.read_bytes()
    assert data.count(sop_class.encode()) == 1


def _outputs_of(scan_result, series_views) -> str:
    parts = [json.dumps(scan_result.summary())]
    parts += [o.detail for o in scan_result.outcomes]
    parts += [f"{sv.reason} {sv.detail} {sv.modality}" for sv in series_views]
    return "\n".join(parts)


def test_canaries_never_reach_outcomes(tmp_path: Path) -> None:
    files = build_canary_tree(tmp_path / "in")
    scan = scan_folder(tmp_path / "in", CONFIG)
    files["vanish"].unlink()  # gone between the scan and the decoding
    files["vanish_single"].unlink()
    resolved, svs = resolve_outcomes(scan, None, CONFIG)
    text = _outputs_of(resolved, svs)
    for canary in CANARIES:
        assert canary not in text, canary
    assert str(tmp_path) not in text and "Doe^" not in text
    by = {o.rel_path: o for o in resolved.outcomes}
    gone = by["Doe^CANARYPATH John/IM0002"]
    assert (gone.status, gone.reason) == (FileStatus.UNREADABLE, Reason.IO_ERROR)
    assert "disappeared" in gone.detail and "rel_path" not in gone.to_dict()
    (single,) = [sv for sv in svs if not sv.ok and sv.reason is Reason.IO_ERROR]
    assert "disappeared" in single.detail
    assert by["values/nf.dcm"].reason is Reason.INVALID_FILE and "Number of Frames" in by["values/nf.dcm"].detail
    assert by["values/ts.dcm"].reason is Reason.MISSING_DECODER and "unregistered UID" in by["values/ts.dcm"].detail
    assert by["values/sop.dcm"].status is FileStatus.SKIPPED_NON_IMAGE
    assert {sv.modality for sv in svs} <= {"MR", "US", "CT", ""}  # CANARYMOD is not a defined term


def test_exception_texts_never_reach_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    for name in ("a.dcm", "b.dcm"):
        write_image(tmp_path / name, study=generate_uid(), series=generate_uid())
    real_read = scan_module.read_header

    def failing_read(fh, **kwargs):
        if fh.name.endswith("a.dcm"):
            raise ValueError(f"CANARYEXC at {fh.name}")
        return real_read(fh, **kwargs)

    monkeypatch.setattr(scan_module, "read_header", failing_read)

    def failing_decode(*args, **kwargs):
        raise RuntimeError(f"CANARYEXC decoding {args[0]}")

    monkeypatch.setattr(pydicom.pixels, "iter_pixels", failing_decode)
    resolved, svs = resolve_outcomes(scan_folder(tmp_path, CONFIG), None, CONFIG)
    assert [o.reason for o in resolved.outcomes] == [Reason.INVALID_FILE, Reason.DECODE_ERROR]
    text = _outputs_of(resolved, svs)
    assert "CANARYEXC" not in text and str(tmp_path) not in text


def test_detail_accepts_numbers_and_terms_only() -> None:
    assert detail("{n} of {m} ({t})", n=1, m=2.5, t=Term("EIO")) == "1 of 2.5 (EIO)"
    with pytest.raises(TypeError):
        detail("cannot open {p}", p="/data/Doe^John/IM0001")


def test_conflicting_duplicate_is_judged_identical_one_deduplicated(tmp_path: Path) -> None:
    build_canary_tree(tmp_path)
    scan = scan_folder(tmp_path, CONFIG)
    (main,) = [se for se in scan.iter_series() if len(se.instances) > 1]
    kept = [i.rel_path.rsplit("/", 1)[1].replace("-copy", "") for i in main.instances]
    assert kept == ["IM0000", "IM0001", "IM0002", "IM0004"]  # IM0001 or its identical copy
    assert main.conflicts == 0
    # both versions of the slice's UID leave the series and are judged alone, whatever their file names
    split = sorted((se for se in scan.iter_series() if se.study_key == main.study_key and se is not main),
                   key=lambda se: se.modality)
    assert [(se.modality, se.conflicts, len(se.instances)) for se in split] == [("MR", 1, 1), ("US", 1, 1)]
    assert {se.instances[0].rel_path for se in split} == {"CANARYDIR/US0001", "Doe^CANARYPATH John/IM0003"}
    resolved, svs = resolve_outcomes(scan, None, CONFIG)
    by = {o.rel_path: o for o in resolved.outcomes}
    assert by["CANARYDIR/US0001"].status is FileStatus.VIEWED  # judged, not hidden as a duplicate
    assert by["Doe^CANARYPATH John/IM0003"].status is FileStatus.VIEWED
    copies = [by["CANARYDIR/IM0001-copy"], by["Doe^CANARYPATH John/IM0001"]]
    assert sorted(o.status.value for o in copies) == ["duplicate", "viewed"]  # same content: still de-duplicated
    assert sum(sv.conflicts for sv in svs if sv.study_key == main.study_key) == 2
    # without dedupe, everything stays in one series
    nodedupe = DicomScanConfig(salt=SALT, dedupe=False)
    assert max(se.conflicts for se in scan_folder(tmp_path, nodedupe).iter_series()) == 0


def test_truncated_header_is_not_no_pixel_data(tmp_path: Path) -> None:
    write_image(tmp_path / "full.dcm", study=generate_uid(), series=generate_uid(),
                extra={"ImageComments": "x" * 200})
    data = (tmp_path / "full.dcm").read_bytes()
    cut = data.index(b"x" * 200) + 100  # inside a value of the header, before the pixel data
    (tmp_path / "cut.dcm").write_bytes(data[:cut])
    (tmp_path / "full.dcm").unlink()
    (o,) = resolve_outcomes(scan_folder(tmp_path, CONFIG), None, CONFIG)[0].outcomes
    assert (o.status, o.reason) == (FileStatus.UNREADABLE, Reason.TRUNCATED_HEADER)


def test_folder_without_search_permission_is_permission_denied(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    write_image(locked / "a.dcm", study=generate_uid(), series=generate_uid())
    write_image(tmp_path / "ok.dcm", study=generate_uid(), series=generate_uid())
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        os.chmod(locked, stat.S_IRUSR | stat.S_IWUSR)  # listable, but its entries cannot be stat'ed
    else:  # root passes permission checks: make stat fail the way it fails for others
        real_scandir = os.scandir

        class _Entry:
            def __init__(self, entry):
                self._entry, self.name, self.path = entry, entry.name, entry.path

            def is_symlink(self):
                return False

            def stat(self, follow_symlinks=True):
                raise PermissionError(13, "Permission denied", self.path)

        def scandir(path):
            entries = list(real_scandir(path))
            return [_Entry(e) for e in entries] if str(path).endswith("locked") else entries

        monkeypatch.setattr(scan_module.os, "scandir", scandir)
    try:
        scan = scan_folder(tmp_path, CONFIG)
    finally:
        os.chmod(locked, stat.S_IRWXU)
    by = {o.rel_path: o for o in scan.outcomes}
    assert (by["locked/a.dcm"].status, by["locked/a.dcm"].reason) == (FileStatus.UNREADABLE,
                                                                       Reason.PERMISSION_DENIED)
    assert by["ok.dcm"].status is FileStatus.PENDING


@pytest.mark.parametrize("kind,declared", [("j2k", 32768), ("jpeg", 13000), ("jpegls", 30000)])
def test_codestream_bomb_is_refused_before_decoding(tmp_path: Path, kind: str, declared: int) -> None:
    write_codestream_bomb(tmp_path / "bomb.dcm", kind, declared)
    assert (tmp_path / "bomb.dcm").stat().st_size < 8000
    (o,) = resolve_outcomes(scan_folder(tmp_path, CONFIG), None, CONFIG)[0].outcomes
    assert (o.status, o.reason) == (FileStatus.UNREADABLE, Reason.CORRUPT_CODESTREAM)
    assert f"{declared}x{declared}" in o.detail and "64x64" in o.detail


def test_deflated_private_element_and_item_bombs_are_refused(tmp_path: Path) -> None:
    write_deflated(tmp_path / "private.dcm", 64, 64, private_bytes=40 << 20)
    write_header_bomb(tmp_path / "items.dcm", 1000)
    tight = DicomScanConfig(salt=SALT, max_header_elements=500)
    by = {o.rel_path: o for o in scan_folder(tmp_path, tight).outcomes}
    assert (by["private.dcm"].status, by["private.dcm"].reason) == (FileStatus.UNREADABLE, Reason.HEADER_TOO_LARGE)
    assert (by["items.dcm"].status, by["items.dcm"].reason) == (FileStatus.UNREADABLE, Reason.HEADER_TOO_LARGE)
    assert "max_header_elements=500" in by["items.dcm"].detail
    # under generous limits the same files are read: the limits are what refuses them
    loose = DicomScanConfig(salt=SALT, max_header_bytes=64 << 20)
    resolved, svs = resolve_outcomes(scan_folder(tmp_path, loose), None, loose)
    assert {o.status for o in resolved.outcomes} == {FileStatus.VIEWED}


def test_deflated_frames_are_streamed(tmp_path: Path) -> None:
    write_deflated(tmp_path / "cine.dcm", 256, 256, frames=40)  # 5 MB inflated, a few KB on disk
    assert (tmp_path / "cine.dcm").stat().st_size < 20_000
    resolved, (sv,) = resolve_outcomes(scan_folder(tmp_path, CONFIG), None, CONFIG)
    assert sv.ok and [p.frame for p in sv.provenance] == [10, 20, 29]
    cut = tmp_path / "cut" / "cine.dcm"
    cut.parent.mkdir()
    data = (tmp_path / "cine.dcm").read_bytes()
    cut.write_bytes(data[: len(data) // 3])  # the deflate stream ends before the frames
    (o,) = resolve_outcomes(scan_folder(cut.parent, CONFIG), None, CONFIG)[0].outcomes
    assert (o.status, o.reason) == (FileStatus.UNREADABLE, Reason.TRUNCATED_PIXEL_DATA)


def test_large_frames_are_reduced_to_max_view_side(tmp_path: Path) -> None:
    write_image(tmp_path / "big.dcm", study=generate_uid(), series=generate_uid(),
                pixels=np.arange(2050 * 1500, dtype=np.uint16).reshape(2050, 1500) % 4096)
    from tanl_guard.dicom import load_series_views

    series = next(scan_folder(tmp_path, CONFIG).iter_series())
    view = load_series_views(series, "mid", CONFIG).views[0]
    assert view.shape == (683, 500)  # k = ceil(2050 / 1024) = 3
    full = load_series_views(series, "mid", DicomScanConfig(salt=SALT, max_view_side=0)).views[0]
    assert full.shape == (2050, 1500)


def test_bombs_stay_under_the_memory_bound(tmp_path: Path) -> None:
    """Scan and decode every bomb of issue 11 in a fresh process and bound its peak resident memory.

    Before the fix these peaked at 1.2 to 4 GB each (up to 6.3 GB in the issue's runs). Bound: 512 MiB above the
    process's baseline after imports, 1 GiB in all. ``python tests/dicom/dicom_hostile.py DIR`` prints the figures
    per bomb (docs/performance.md)."""
    expected = build_bombs(tmp_path / "bombs")
    assert sum(p.stat().st_size for p in (tmp_path / "bombs").iterdir()) < 12 << 20
    result = measure(tmp_path / "bombs")
    assert {k: tuple(v) for k, v in result["outcomes"].items()} == expected
    above = (result["peak_kib"] - result["base_kib"]) / 1024
    assert above < 512, f"peak {above:.0f} MiB above the baseline"
    assert result["peak_kib"] / 1024 < 1024


def _fuzz_corpus(root: Path) -> int:
    """Seeded mutations of real files (byte flips, truncations, length corruptions), the small bombs, and
    deflated and codestream variants: about 120 files, each scanned and decoded on its own."""
    rng = random.Random(11)
    sources = real_roots()
    seeds = [sources["pydicom"] / name for name in ("MR_small.dcm", "CT_small.dcm", "JPEG2000.dcm", "image_dfl.dcm",
                                                     "SC_rgb_jpeg_dcmtk.dcm", "rtplan.dcm", "emri_small_RLE.dcm")
             if (sources["pydicom"] / name).is_file()]
    n = 0
    for seed in seeds:
        data = seed.read_bytes()
        for i in range(16):
            mutated = bytearray(data)
            kind = i % 4
            if kind == 0:  # flip a few bytes anywhere
                for _ in range(rng.randint(1, 8)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            elif kind == 1:  # cut anywhere
                mutated = mutated[: rng.randrange(132, len(mutated))]
            elif kind == 2:  # corrupt a 4-byte length in the header
                at = rng.randrange(132, min(len(mutated) - 4, 4000))
                mutated[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x10\x00"])
            else:  # flip bytes inside the first kilobytes (header, codestream markers)
                for _ in range(rng.randint(1, 4)):
                    mutated[rng.randrange(132, min(len(mutated), 3000))] ^= 1 << rng.randrange(8)
            path = root / seed.stem / f"{i:02d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(mutated))
            n += 1
    for kind, declared in (("j2k", 16), ("j2k", 65535), ("jpeg", 1), ("jpeg", 65535), ("jpegls", 64)):
        write_codestream_bomb(root / "codestream" / f"{kind}_{declared}.dcm", kind, declared)
        n += 1
    write_deflated(root / "deflate" / "small_private.dcm", 64, 64, private_bytes=40 << 20)
    write_deflated(root / "deflate" / "short_pixels.dcm", 64, 64, pixel_bytes=100)
    write_header_bomb(root / "items" / "items.dcm", 1000)
    return n + 3


def test_fuzz_corpus_never_crashes(tmp_path: Path) -> None:
    n = _fuzz_corpus(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == n >= 100
    for path in files:  # each file alone: one outcome, a known reason, a detail from the vocabulary
        resolved, _ = resolve_outcomes(scan_files(path.parent, [path], CONFIG), None, CONFIG)
        (o,) = resolved.outcomes
        assert o.status in (FileStatus.VIEWED, FileStatus.NOT_DICOM, FileStatus.UNREADABLE,
                            FileStatus.SKIPPED_NON_IMAGE), (path, o)
        assert o.status is FileStatus.VIEWED or isinstance(o.reason, Reason)
        assert o.detail.isascii() and str(tmp_path) not in o.detail and path.name not in o.detail
    # the codestream bombs declaring other sizes are refused; the one that matches decodes
    by = {p.name: resolve_outcomes(scan_files(p.parent, [p], CONFIG), None, CONFIG)[0].outcomes[0]
          for p in (tmp_path / "codestream").iterdir()}
    assert by["j2k_65535.dcm"].reason is Reason.CORRUPT_CODESTREAM
    assert by["jpeg_65535.dcm"].reason is Reason.CORRUPT_CODESTREAM
    assert "declares" not in by["jpegls_64.dcm"].detail  # 64 x 64 as declared: the decoder's job


_SMALL_CORPUS = "teapot\ncat\ndog\nbicycle\nbuilding\nmountain\nflower\ndocument\nkeyboard\nclock\nchair\nguitar\n"


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_screen_outputs_hold_no_canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tanl-guard screen --json --report --strict``, end to end: no canary of the paths, the header values or the
    vanished file reaches stdout, stderr, the report, the checkpoint, MLflow's store or the journal; the conflicting
    copy is judged and counted (exit 4)."""
    from click.testing import CliRunner

    import tanl_guard.pipeline.screen as screen_module
    from tanl_guard.cli.main import cli

    files = build_canary_tree(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "corpus.txt").write_text(_SMALL_CORPUS)
    real_scan = screen_module.scan_folder

    def scan_then_vanish(root, config=None):
        result = real_scan(root, config)
        files["vanish"].unlink()  # the files disappear between the scan and their decoding
        files["vanish_single"].unlink()
        return result

    monkeypatch.setattr(screen_module, "scan_folder", scan_then_vanish)
    monkeypatch.chdir(out)  # MLflow's default artifact root is relative to the working folder
    monkeypatch.setenv("TANL_GUARD_SALT", "canary-test")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(out / "config"))
    args = ["screen", str(tmp_path / "in"), "--encoder", "surrogate", "--id-label", "brain MRI",
            "--corpus", str(out / "corpus.txt"), "--cache-dir", str(out / "cache"), "--state", str(out / "state.pt"),
            "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--json", "--report", str(out / "report.jsonl"),
            "--strict", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and (out / "report.jsonl").read_text().splitlines() == result.stdout.splitlines()
    assert sorted(line["conflicts"] for line in lines if line["conflicts"]) == [2]  # the slice and the US frame
    (conflicted,) = [line for line in lines if line["conflicts"]]
    assert sorted(s["conflicts"] for s in conflicted["series"]) == [0, 1, 1]
    assert "share an SOP Instance UID" in conflicted["reason"]
    (gone,) = [line for line in lines if "disappeared" in (line["reason"] or "")]
    assert gone["verdict"] == "unreadable" and "io_error" in gone["series"][0]["reason"]

    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "corpus.txt"}
    assert out / "state.pt" in written and out / "mlflow.db" in written
    assert any("journal" in str(p) for p in written)
    for canary in (*CANARIES, "Doe^", str(tmp_path / "in")):
        assert canary not in result.stdout and canary not in result.stderr, canary
        for path, data in written.items():
            assert canary.encode() not in data, (canary, path.relative_to(out))
