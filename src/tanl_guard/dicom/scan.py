# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Folder scan: walk, read headers only, group by study and series, order slices, give every file an outcome."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tanl_guard._optional import optional_import
from tanl_guard.dicom.config import DicomScanConfig
from tanl_guard.dicom.header import Header, native_frame_bytes, read_header
from tanl_guard.dicom.outcomes import FileOutcome, FileStatus, Reason, ReasonError
from tanl_guard.dicom.quiet import quiet_pydicom
from tanl_guard.dicom.records import InstanceRecord, ScanResult, SeriesRecord, StudyRecord
from tanl_guard.dicom.vocabulary import Term, detail, errno_name, modality_term, uid_name
from tanl_guard.privacy import Hasher, resolve_salt

__all__ = ["scan_folder", "scan_files"]

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# Encodings pydicom guesses for forced reads, as transfer syntaxes (for decoding later).
_ENCODING_TS = {
    (True, True): "1.2.840.10008.1.2",
    (False, True): "1.2.840.10008.1.2.1",
    (False, False): "1.2.840.10008.1.2.2",
}


@dataclass
class _Header:
    """What the grouping needs from one image file (raw UIDs are hashed before this is built)."""

    rel_path: str
    study_key: str
    series_key: str
    patient_key: str
    modality: str
    instance: InstanceRecord
    rejected: FileOutcome | None  # a header-level failure: kept out of the series' instances
    dataset_offset: int = 0  # where the dataset starts (after preamble and file meta)
    dataset_bytes: int = 0  # bytes from there to the end of the file


def _looks_like_raw_dicom(head: bytes) -> bool:
    """True if a file starts like a DICOM dataset without preamble (group 0x0002 or 0x0008, either endianness)."""
    if len(head) < 8:
        return False
    return head[:2] in (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02")


@lru_cache(maxsize=64)
def _decodable(ts: str) -> bool:
    """Whether pydicom has a usable decoder for a transfer syntax (used to pick which duplicate to keep)."""
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(ts)
    except Exception:
        return False
    return bool(dec.is_native or dec.available_plugins)


def _walk(root: Path, follow: bool) -> Iterator[tuple[str, Path | None, FileOutcome | None]]:
    """Yield ``(rel_path, abs_path, None)`` for regular files and ``(rel_path, None, outcome)`` for the rest."""
    visited: set[tuple[int, int]] = set()
    try:
        st = root.stat()
        visited.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    stack: list[tuple[Path, str]] = [(root, "")]

    def skip(rel: str, status: FileStatus, reason: Reason, detail: str) -> tuple[str, None, FileOutcome]:
        return rel, None, FileOutcome(rel, "", status, reason, detail)

    while stack:
        folder, rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:
            yield skip(rel_dir + "/", FileStatus.UNREADABLE, Reason.PERMISSION_DENIED, "folder cannot be listed")
            continue
        except OSError as exc:
            yield skip(rel_dir + "/", FileStatus.UNREADABLE, Reason.IO_ERROR,
                       detail("folder cannot be listed ({e})", e=errno_name(exc)))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_link = entry.is_symlink()
                if is_link and not follow:
                    yield skip(rel, FileStatus.SKIPPED, Reason.SYMLINK_NOT_FOLLOWED, "symbolic link (follow_symlinks off)")
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        yield skip(rel, FileStatus.SKIPPED, Reason.SYMLINK_LOOP, "symbolic link loop")
                    else:
                        yield skip(rel, *_stat_failure(exc))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in visited:
                        yield skip(rel + "/", FileStatus.SKIPPED, Reason.SYMLINK_LOOP, "folder already visited (link loop)")
                        continue
                    visited.add(key)
                    subdirs.append((Path(entry.path), rel))
                elif stat.S_ISREG(st.st_mode):
                    yield rel, Path(entry.path), None
                else:  # FIFO, socket, device: never opened (a FIFO would block)
                    yield skip(rel, FileStatus.NOT_DICOM, Reason.NOT_DICOM, "not a regular file")
            except OSError as exc:
                yield skip(rel, *_stat_failure(exc))
        stack.extend(reversed(subdirs))


def _stat_failure(exc: OSError) -> tuple[FileStatus, Reason, str]:
    """Outcome of a file that cannot be stat'ed: a folder without search (x) permission lists its entries but
    cannot stat them, which is a permission problem, not an I/O error."""
    if isinstance(exc, PermissionError):
        return FileStatus.UNREADABLE, Reason.PERMISSION_DENIED, "permission denied (cannot stat)"
    return FileStatus.UNREADABLE, Reason.IO_ERROR, detail("cannot stat ({e})", e=errno_name(exc))


# Tags read straight from the raw elements: pydicom's value conversion costs more than parsing the header.
_TAGS = {
    "SOPClassUID": 0x00080016, "SOPInstanceUID": 0x00080018, "Modality": 0x00080060, "PatientID": 0x00100020,
    "StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E, "InstanceNumber": 0x00200013,
    "ImagePositionPatient": 0x00200032, "ImageOrientationPatient": 0x00200037, "SamplesPerPixel": 0x00280002,
    "PhotometricInterpretation": 0x00280004, "NumberOfFrames": 0x00280008, "Rows": 0x00280010,
    "Columns": 0x00280011, "BitsAllocated": 0x00280100,
}
_US_TAGS = {0x00280002, 0x00280010, 0x00280011, 0x00280100}


def _raw(ds: Any, keyword: str) -> Any:
    """Value of a top-level element without pydicom's conversion: ``str`` for text VRs, ``int`` for US, or None."""
    tag = _TAGS[keyword]
    elements = getattr(ds, "_dict", None)  # the element store: skips get_item's key normalisation
    try:
        elem = elements.get(tag) if isinstance(elements, dict) else ds.get_item(tag)
    except Exception:
        return None
    if elem is None:
        return None
    value = elem.value
    if not isinstance(value, bytes):
        return value
    if tag in _US_TAGS:
        if len(value) < 2:
            return None
        little = ds.original_encoding[1] is not False
        return struct.unpack("<H" if little else ">H", value[:2])[0]
    return value.decode("latin-1").strip("\x00 ")


def _text(ds: Any, keyword: str) -> str:
    value = _raw(ds, keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Any, keyword: str, default: int | None = None) -> int | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return default
    return int(value)


def _floats(value: Any) -> list[float]:
    if value is None:
        return []
    if isinstance(value, str):
        return [float(v) for v in value.split("\\")]
    return [float(v) for v in value]


def _position(ds: Any) -> float | None:
    try:
        p = _floats(_raw(ds, "ImagePositionPatient"))
        iop = _floats(_raw(ds, "ImageOrientationPatient"))
    except (TypeError, ValueError):
        return None
    if len(p) != 3 or len(iop) != 6:
        return None
    r, c = iop[:3], iop[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return p[0] * n[0] + p[1] * n[1] + p[2] * n[2]


class _Scanner:
    """Reads headers of one tree; keeps counters for DICOMDIR cross-checks."""

    def __init__(self, root: Path, config: DicomScanConfig, hasher: Hasher) -> None:
        self.root = root
        self.config = config
        self.hash = hasher
        self.dicomdir_refs = 0
        self.dicomdir_missing = 0

    def outcome(self, rel: str, status: FileStatus, reason: Reason | None, detail: str = "", **keys: Any) -> FileOutcome:
        return FileOutcome(rel, self.hash("path", rel), status, reason, detail, **keys)

    def read(self, rel: str, path: Path) -> FileOutcome | _Header:
        """Read one file's header; return its final outcome or the header facts for grouping."""
        from pydicom.errors import InvalidDicomError

        try:
            fh = open(path, "rb")  # read-only; closed by the with-block below
        except PermissionError:
            return self.outcome(rel, FileStatus.UNREADABLE, Reason.PERMISSION_DENIED, "permission denied")
        except OSError as exc:
            return self.outcome(rel, FileStatus.UNREADABLE, Reason.IO_ERROR, detail("cannot open ({e})", e=errno_name(exc)))
        limits = {"max_bytes": self.config.max_header_bytes, "max_elements": self.config.max_header_elements}
        with fh:
            forced = False
            try:
                header = read_header(fh, **limits)
            except InvalidDicomError:
                fh.seek(0)
                head = fh.read(132)
                if not self.config.force:
                    if _looks_like_raw_dicom(head):
                        return self.outcome(
                            rel, FileStatus.UNREADABLE, Reason.INVALID_FILE,
                            "no DICOM preamble or file meta (legacy file; readable with force=True)",
                        )
                    return self.outcome(rel, FileStatus.NOT_DICOM, Reason.NOT_DICOM, "no DICM preamble")
                fh.seek(0)
                try:
                    header = read_header(fh, force=True, **limits)
                except ReasonError as exc:
                    if exc.reason is Reason.HEADER_TOO_LARGE:
                        return self.outcome(rel, FileStatus.UNREADABLE, exc.reason, exc.detail)
                    return self.outcome(rel, FileStatus.NOT_DICOM, Reason.NOT_DICOM, "forced read failed")
                except Exception:
                    return self.outcome(rel, FileStatus.NOT_DICOM, Reason.NOT_DICOM, "forced read failed")
                if "SOPClassUID" not in header.dataset and "Rows" not in header.dataset:
                    return self.outcome(rel, FileStatus.NOT_DICOM, Reason.NOT_DICOM, "forced read found no DICOM dataset")
                forced = True
            except PermissionError:
                return self.outcome(rel, FileStatus.UNREADABLE, Reason.PERMISSION_DENIED, "permission denied")
            except ReasonError as exc:  # truncated, or over the header limits
                return self.outcome(rel, FileStatus.UNREADABLE, exc.reason, exc.detail)
            except Exception:  # bad lengths, decoding errors in pydicom: the text may hold values, so it stays here
                return self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE, "header cannot be parsed")
            try:
                return self._classify(rel, path, header, forced)
            except Exception:  # a malformed value the checks did not anticipate
                return self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE, "header cannot be interpreted")

    def _classify(self, rel: str, path: Path, header: Header, forced: bool) -> FileOutcome | _Header:
        ds = header.dataset
        meta = getattr(ds, "file_meta", None)
        sop_class = _text(ds, "SOPClassUID") or _meta_text(meta, 0x00020002)
        if sop_class == _DICOMDIR_CLASS or 0x00041220 in ds:
            self._dicomdir(path, ds, header.reader is not None)
            return self.outcome(rel, FileStatus.SKIPPED_NON_IMAGE, Reason.DICOMDIR, "DICOMDIR (media directory)")

        ts = header.transfer_syntax
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        if not ts and (forced or self.config.force):
            ts = _ENCODING_TS.get((bool(implicit), bool(little)), "")
            forced = True
        has_pixels, length = header.has_pixels, header.pixel_length

        if not has_pixels and "Rows" not in ds and not _is_image_class(sop_class):
            if not sop_class:  # neither an image nor an identifiable object: a broken file, not a report to skip
                return self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE,
                                    "no SOP Class UID and no image: not a usable DICOM object")
            return self.outcome(rel, FileStatus.SKIPPED_NON_IMAGE, Reason.NO_PIXEL_DATA,
                                detail("no pixel data ({name})", name=_sop_name(sop_class)))

        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        study_key = self.hash("study", study_uid or f"missing:{parent}")
        series_key = self.hash("series", series_uid or f"missing:{study_uid}:{parent}")
        keys = {"study_key": study_key, "series_key": series_key}
        sop_uid = _text(ds, "SOPInstanceUID") or f"missing:{rel}"
        modality = modality_term(_text(ds, "Modality"))
        patient_key = self.hash("patient", _text(ds, "PatientID"))

        rejected: FileOutcome | None = None
        rows = columns = samples = frames = 0
        try:
            rows = _int(ds, "Rows", 0) or 0
            columns = _int(ds, "Columns", 0) or 0
            samples = _int(ds, "SamplesPerPixel", 1) or 1
        except (TypeError, ValueError):
            rejected = self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE,
                                    "invalid Rows, Columns or Samples per Pixel", **keys)
        try:
            frames = _int(ds, "NumberOfFrames", 1) or 1
        except (TypeError, ValueError):  # the value itself never goes into the detail
            rejected = rejected or self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE,
                                                "invalid Number of Frames (not an integer)", **keys)
        try:
            instance_number = _int(ds, "InstanceNumber", None)
        except (TypeError, ValueError):
            instance_number = None
        photometric = _text(ds, "PhotometricInterpretation")
        bits = _raw(ds, "BitsAllocated")
        limits = self.config

        if rejected is None and has_pixels:
            missing = [k for k, v in (("Rows", rows), ("Columns", columns), ("BitsAllocated", bits)) if not v]
            if not photometric:
                missing.append("PhotometricInterpretation")
            if missing:
                rejected = self.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE, detail(
                    "missing required element(s): {names}", names=Term(", ".join(missing))), **keys)
            elif not ts:
                rejected = self.outcome(
                    rel, FileStatus.UNREADABLE, Reason.INVALID_FILE,
                    "file meta has no Transfer Syntax UID (readable with force=True)", **keys,
                )
            elif rows * columns * samples > limits.max_pixels_per_frame:
                rejected = self.outcome(rel, FileStatus.UNREADABLE, Reason.IMAGE_TOO_LARGE, detail(
                    "{r}x{c}x{s} per frame exceeds max_pixels_per_frame={m}",
                    r=rows, c=columns, s=samples, m=limits.max_pixels_per_frame), **keys)
            elif rows * columns * samples * max(1, int(bits) // 8) > limits.max_frame_bytes:
                rejected = self.outcome(rel, FileStatus.UNREADABLE, Reason.IMAGE_TOO_LARGE, detail(
                    "{n} bytes per decoded frame exceed max_frame_bytes={m}",
                    n=rows * columns * samples * max(1, int(bits) // 8), m=limits.max_frame_bytes), **keys)
            elif frames > limits.max_frames:
                rejected = self.outcome(rel, FileStatus.UNREADABLE, Reason.IMAGE_TOO_LARGE, detail(
                    "{f} frames exceed max_frames={m}", f=frames, m=limits.max_frames), **keys)
            elif length is not None and length != 0xFFFFFFFF and not _is_encapsulated(ts):
                rejected = self._check_native_length(rel, int(bits), rows, columns, samples, frames, photometric,
                                                     length, header.available, keys)

        instance = InstanceRecord(
            rel_path=rel,
            path_key=self.hash("path", rel),
            sop_key=self.hash("sop", sop_uid),
            instance_number=instance_number,
            position=_position(ds),
            frames=frames,
            rows=rows,
            columns=columns,
            samples=samples,
            photometric=photometric,
            transfer_syntax=ts,
            has_pixels=has_pixels,
            forced=forced,
        )
        return _Header(rel, study_key, series_key, patient_key, modality, instance, rejected,
                       header.dataset_offset, header.file_size - header.dataset_offset)

    def _check_native_length(
        self, rel: str, bits: int, rows: int, columns: int, samples: int, frames: int, photometric: str,
        length: int, available: int | None, keys: dict[str, str],
    ) -> FileOutcome | None:
        """Compare the declared and available native pixel data with Rows x Columns x Frames x Samples
        (``available`` is ``None`` for a deflated file: its decoding finds out)."""
        expected = int(-(-native_frame_bytes(bits, rows, columns, samples, photometric) * frames // 1))
        if available is not None and available < min(length, expected):
            return self.outcome(rel, FileStatus.UNREADABLE, Reason.TRUNCATED_PIXEL_DATA, detail(
                "file ends {n} bytes into the pixel data", n=min(length, expected) - available), **keys)
        if length < expected:
            return self.outcome(rel, FileStatus.UNREADABLE, Reason.TRUNCATED_PIXEL_DATA, detail(
                "pixel data holds {n} of the {m} bytes the header declares", n=length, m=expected), **keys)
        return None

    def _dicomdir(self, path: Path, ds: Any, deflated: bool) -> None:
        """Count the files a DICOMDIR references and those missing from the tree.

        The Directory Record Sequence is searched as raw bytes for Referenced File ID (0004,1500) elements:
        converting the sequence with pydicom costs ten times the header read. A sequence over ``DEFER_BYTES``
        is read separately, up to ``max_header_bytes``.
        """
        if not self.config.read_dicomdir:
            return
        try:
            elem = ds._dict.get(0x00041220)  # not get_item: it would load a deferred value whole
            raw = elem.value if elem is not None else None
            length = getattr(elem, "length", 0) or 0
            if raw is None and not deflated and 0 < length <= self.config.max_header_bytes:
                with open(path, "rb") as fh:
                    fh.seek(elem.value_tell)
                    raw = fh.read(length)
            if not isinstance(raw, bytes):
                refs = [str(r.ReferencedFileID) for r in (raw or []) if "ReferencedFileID" in r]
                refs = [r.replace("['", "").replace("']", "").replace("', '", "\\") for r in refs]
            else:
                refs = _raw_file_ids(raw, ds.original_encoding)
        except Exception:  # a malformed DICOMDIR is still only skipped
            return
        base = str(path.parent)
        for ref in refs:
            self.dicomdir_refs += 1
            if not os.path.exists(os.path.join(base, *[p.strip() for p in ref.split("\\") if p.strip()])):
                self.dicomdir_missing += 1


@lru_cache(maxsize=256)
def _is_image_class(uid: str) -> bool:
    """Image storage SOP classes (their files are grouped even without Pixel Data, then reported unreadable)."""
    if not uid:
        return False
    from pydicom.uid import UID

    name = UID(uid).name
    return "Image" in name and "Storage" in name


@lru_cache(maxsize=64)
def _is_encapsulated(ts: str) -> bool:
    from pydicom.uid import UID

    try:
        return bool(UID(ts).is_encapsulated)
    except Exception:
        return False


def _meta_text(meta: Any, tag: int) -> str:
    """A file meta text value without pydicom's conversion."""
    if not meta:
        return ""
    try:
        elem = meta.get_item(tag)
    except Exception:
        return ""
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    return value.decode("latin-1").strip("\x00 ") if isinstance(value, bytes) else str(value).strip()


def _raw_file_ids(raw: bytes, encoding: tuple[bool | None, bool | None]) -> list[str]:
    """Referenced File ID values found in the raw bytes of a Directory Record Sequence."""
    implicit, little = encoding
    little = little is not False
    tag = b"\x04\x00\x00\x15" if little else b"\x00\x04\x15\x00"
    out: list[str] = []
    start = raw.find(tag)
    while start >= 0:
        pos = start + 4
        if raw[pos:pos + 2] == b"CS":
            length = struct.unpack("<H" if little else ">H", raw[pos + 2:pos + 4])[0]
            pos += 4
        else:
            length = struct.unpack("<L" if little else ">L", raw[pos:pos + 4])[0]
            pos += 4
        if length < 1024:
            out.append(raw[pos:pos + length].decode("latin-1").strip("\x00 "))
        start = raw.find(tag, pos)
    return out


def _sop_name(uid: str) -> Term:
    return uid_name(uid) if uid else Term("no SOP Class UID")


def _order_key(inst: InstanceRecord, use_position: bool) -> tuple[Any, ...]:
    number = inst.instance_number if inst.instance_number is not None else 1 << 40
    if use_position:
        return (inst.position, number, inst.rel_path)
    return (number, inst.rel_path)


def _content_digest(path: Path, offset: int) -> str:
    """Digest of a file's dataset (everything after the preamble and file meta): the same instance exported twice
    digests the same, whatever tool wrote the file meta. ``""`` when the file cannot be read again."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def _split_instances(scanner: _Scanner, items: list[_Header], keys: dict[str, str], outcomes: dict[str, FileOutcome],
                     ) -> tuple[list[InstanceRecord], list[InstanceRecord], FileOutcome | None]:
    """The instances of one series, and the files in conflict.

    Files sharing an SOP Instance UID with identical content (see :func:`_content_digest`) are duplicates: one is
    kept, the others get ``duplicate``. Files sharing it with other content are in conflict: dedupe would keep one
    and hide the others (an ultrasound frame saved under the UID of an MR slice), and which one survives would
    depend on file names. So every version leaves the series and is judged on its own.

    Returns:
        The series' instances, the conflicting files, and the first file rejected on its header.
    """
    first_reject: FileOutcome | None = None
    versions: dict[str, list[_Header]] = {}  # SOP key -> one file per distinct content
    digests: dict[str, str] = {}

    def same_content(a: _Header, b: _Header) -> bool:
        if a.dataset_bytes != b.dataset_bytes:  # cheap, and settles almost every pair
            return False
        for h in (a, b):
            if h.rel_path not in digests:
                digests[h.rel_path] = _content_digest(scanner.root / h.rel_path, h.dataset_offset) or h.rel_path
        return digests[a.rel_path] == digests[b.rel_path]

    # Keep, per SOP instance, a file with pixels and a usable decoder first, uncompressed (cheapest to decode)
    # before compressed, then by path.
    items.sort(key=lambda h: (h.rejected is not None, not h.instance.has_pixels,
                              not _decodable(h.instance.transfer_syntax),
                              _is_encapsulated(h.instance.transfer_syntax), h.rel_path))
    kept: list[InstanceRecord] = []
    for h in items:
        if h.rejected is not None:
            outcomes[h.rel_path] = h.rejected
            first_reject = first_reject or h.rejected
            continue
        sop = h.instance.sop_key
        if not scanner.config.dedupe or sop not in versions:
            versions[sop] = [h]
            kept.append(h.instance)
            continue
        same = next((v for v in versions[sop] if same_content(v, h)), None)
        if same is None:
            versions[sop].append(h)
            continue
        outcomes[h.rel_path] = scanner.outcome(
            h.rel_path, FileStatus.DUPLICATE, Reason.DUPLICATE_INSTANCE,
            detail("same SOP Instance UID and content as file {key}", key=Term(same.instance.path_key)), **keys,
        )
    conflicting = {sop for sop, vs in versions.items() if len(vs) > 1}
    series = [i for i in kept if i.sop_key not in conflicting]
    return series, [v.instance for sop in sorted(conflicting) for v in versions[sop]], first_reject


def _group(scanner: _Scanner, headers: list[_Header], outcomes: dict[str, FileOutcome]) -> tuple[StudyRecord, ...]:
    """Group image headers into studies and series, dedupe, split conflicts, order, set scan-time outcomes."""
    config = scanner.config
    by_series: dict[tuple[str, str], list[_Header]] = {}
    for h in headers:
        by_series.setdefault((h.study_key, h.series_key), []).append(h)

    studies: dict[str, tuple[str, list[SeriesRecord]]] = {}
    for (study_key, base_key), items in sorted(by_series.items()):
        kept, conflicting, first_reject = _split_instances(
            scanner, items, {"study_key": study_key, "series_key": base_key}, outcomes)
        # the series, then one series per conflicting file (each judged on its own views)
        groups: list[tuple[str, list[InstanceRecord], int]] = []
        if kept or first_reject is not None or not conflicting:
            groups.append((base_key, kept, 0))
        groups += [(scanner.hash("series", f"{base_key}\x00conflict:{i.path_key}"), [i], 1) for i in conflicting]
        moved = {i.rel_path for i in conflicting}
        for series_key, members, conflicts in groups:
            keys = {"study_key": study_key, "series_key": series_key}
            use_position = bool(members) and all(i.position is not None for i in members)
            members.sort(key=lambda i: _order_key(i, use_position))
            issue: Reason | None = None
            why = ""
            if not members:
                assert first_reject is not None
                issue, why = first_reject.reason, f"no usable file: {first_reject.detail}"
            elif not any(i.has_pixels for i in members):
                issue, why = Reason.NO_PIXEL_DATA, "image objects without Pixel Data"
            else:
                total = sum(i.frame_pixels * i.frames for i in members)
                if total > config.max_pixels_per_series:
                    issue = Reason.IMAGE_TOO_LARGE
                    why = detail("{n} declared pixels exceed max_pixels_per_series={m}",
                                 n=total, m=config.max_pixels_per_series)
            for inst in members:
                if issue is not None:
                    outcomes[inst.rel_path] = scanner.outcome(inst.rel_path, FileStatus.UNREADABLE, issue, why, **keys)
                elif not inst.has_pixels:
                    outcomes[inst.rel_path] = scanner.outcome(
                        inst.rel_path, FileStatus.UNREADABLE, Reason.NO_PIXEL_DATA, "image object without Pixel Data",
                        **keys)
                else:
                    outcomes[inst.rel_path] = scanner.outcome(inst.rel_path, FileStatus.PENDING, None, "", **keys)
            paths = {i.rel_path for i in members}
            if series_key == base_key:  # the series also owns its duplicates and rejected files
                paths |= {h.rel_path for h in items if h.rel_path not in moved}
            series = SeriesRecord(
                series_key=series_key,
                study_key=study_key,
                modality=next((h.modality for h in items if h.rel_path in paths and h.modality), ""),
                instances=tuple(members),
                issue=issue,
                issue_detail=why,
                rel_paths=tuple(sorted(paths)),
                root=scanner.root,
                conflicts=conflicts,
            )
            studies.setdefault(study_key, (items[0].patient_key, []))[1].append(series)
    return tuple(StudyRecord(k, p, tuple(s)) for k, (p, s) in sorted(studies.items()))


def scan_files(root: str | os.PathLike[str], paths: list[Path], config: DicomScanConfig | None = None) -> ScanResult:
    """Scan an explicit list of files below ``root`` (headers only).

    Args:
        root: the folder that relative paths are taken from.
        paths: files to scan (absolute, or relative to ``root``).
        config: scan settings (defaults if ``None``).
    """
    root_path = Path(root).absolute()
    entries = []
    for p in paths:
        ap = p if p.is_absolute() else root_path / p
        entries.append((ap.relative_to(root_path).as_posix(), ap, None))
    return _scan(root_path, iter(entries), config or DicomScanConfig())


def scan_folder(root: str | os.PathLike[str], config: DicomScanConfig | None = None) -> ScanResult:
    """Walk ``root`` recursively, read every file's header and group images into studies and series.

    No file is opened for writing and no exception from a single file escapes. Pixel data is not read; image
    files get the outcome ``pending`` until their series is decoded (:func:`load_series_views`,
    :func:`iter_study_views`, :meth:`ScanResult.resolve`).

    Args:
        root: the folder (as exported by a PACS or on a CD with a DICOMDIR).
        config: scan settings (defaults if ``None``).
    """
    config = config or DicomScanConfig()
    root_path = Path(root).absolute()
    if not root_path.is_dir():
        raise NotADirectoryError(f"not a folder: {root_path}")
    return _scan(root_path, _walk(root_path, config.follow_symlinks), config)


def _scan(root: Path, entries: Iterator[tuple[str, Path | None, FileOutcome | None]], config: DicomScanConfig) -> ScanResult:
    optional_import("pydicom", "dicom", "reading DICOM files")
    start = time.perf_counter()
    scanner = _Scanner(root, config, Hasher(resolve_salt(config.salt)))
    outcomes: dict[str, FileOutcome] = {}
    headers: list[_Header] = []
    with quiet_pydicom():  # pydicom warns and logs on every quirk, quoting values; outcomes carry what matters
        for rel, path, pre in entries:
            if pre is not None:
                outcomes[rel] = FileOutcome(rel, scanner.hash("path", rel), pre.status, pre.reason, pre.detail)
                continue
            assert path is not None
            try:
                res = scanner.read(rel, path)
            except Exception:  # last resort: one file never stops the scan
                res = scanner.outcome(rel, FileStatus.UNREADABLE, Reason.INVALID_FILE, "unexpected error while reading")
            if isinstance(res, FileOutcome):
                outcomes[rel] = res
            else:
                headers.append(res)
        studies = _group(scanner, headers, outcomes)
    ordered = tuple(outcomes[k] for k in sorted(outcomes))
    return ScanResult(
        root=root,
        studies=studies,
        outcomes=ordered,
        dicomdir_references=scanner.dicomdir_refs,
        dicomdir_missing=scanner.dicomdir_missing,
        seconds=time.perf_counter() - start,
    )
