# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Hostile DICOM files for the tests, written small on disk whatever they expand to (issue 11).

Compressed bombs: deflated datasets of hundreds of MB of pixels or of one huge private element, JPEG / JPEG-LS /
JPEG 2000 frames whose codestream declares far more pixels than the DICOM header. Canary files: header values and
paths holding marker strings that must never reach an output. A uniquely named module (not conftest.py), like
``dicom_helpers``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
    generate_uid,
)

__all__ = ["write_deflated", "write_codestream_bomb", "write_header_bomb", "BOMBS", "build_bombs", "measure"]

_CHUNK = 1 << 20


def _encode(ds: Dataset) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


def _image_header(rows: int, columns: int, frames: int, bits: int, modality: str = "MR") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Bomb^Test", "BOMB-1", modality
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def _meta(ds: Dataset, ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta)
    return b"\x00" * 128 + b"DICM" + buf.getvalue()


def write_deflated(path: Path, rows: int, columns: int, frames: int = 1, bits: int = 16, private_bytes: int = 0,
                   pixel_bytes: int | None = None) -> int:
    """A Deflated Explicit VR Little Endian image whose zero pixels (and optional zero private element) are
    deflated as a stream: about 1 KB on disk per MB inflated. Returns the inflated size."""
    ds = _image_header(rows, columns, frames, bits)
    before = Dataset()
    before.update({e.tag: e for e in ds if e.tag.group < 0x0011})
    after = Dataset()
    after.update({e.tag: e for e in ds if e.tag.group > 0x0011})
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    total = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(_meta(ds, DeflatedExplicitVRLittleEndian))

        def put(data: bytes) -> None:
            nonlocal total
            total += len(data)
            fh.write(z.compress(data))

        def zeros(n: int) -> None:
            # After a full flush a raw deflate stream restarts from scratch (and has no checksum), so one
            # compressed block of zeros stands for every other: gigabytes are written in a fraction of a second.
            nonlocal total
            total += n
            fh.write(z.flush(zlib.Z_FULL_FLUSH))
            full, rest = divmod(n, _CHUNK)
            if full:
                block = z.compress(bytes(_CHUNK)) + z.flush(zlib.Z_FULL_FLUSH)
                for _ in range(full):
                    fh.write(block)
            if rest:
                fh.write(z.compress(bytes(rest)) + z.flush(zlib.Z_FULL_FLUSH))

        put(_encode(before))
        if private_bytes:
            creator = b"BOMB"
            put(struct.pack("<HH2sH", 0x0011, 0x0010, b"LO", len(creator)) + creator)
            put(struct.pack("<HH2sHL", 0x0011, 0x1010, b"OB", 0, private_bytes))
            zeros(private_bytes)
        put(_encode(after))
        size = pixel_bytes if pixel_bytes is not None else rows * columns * frames * bits // 8
        put(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW" if bits > 8 else b"OB", 0, size))
        zeros(size)
        fh.write(z.flush())
    return total


def _j2k_frame() -> bytes:
    """A real 64 x 64 JPEG 2000 codestream (pydicom's MR_small_jp2klossless)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    ds = dcmread(get_testdata_file("MR_small_jp2klossless.dcm", download=False))
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def _jpeg_frame() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(out, format="JPEG")
    return out.getvalue()


def write_codestream_bomb(path: Path, kind: str, declared: int) -> None:
    """A 64 x 64 image whose single frame's codestream declares ``declared`` x ``declared`` pixels.

    Args:
        path: where to write it.
        kind: ``"j2k"`` (SIZ rewritten in a real codestream, one tile), ``"jpeg"`` (SOF0 of a Pillow JPEG) or
            ``"jpegls"`` (a minimal SOF55 header; no JPEG-LS decoder needs to be installed).
        declared: rows and columns the codestream declares.
    """
    if kind == "j2k":
        frame = bytearray(_j2k_frame())
        at = frame.find(b"\xff\x4f\xff\x51")
        struct.pack_into(">IIIIIIII", frame, at + 8, declared, declared, 0, 0, declared, declared, 0, 0)
        ts, bits = JPEG2000Lossless, 16
    elif kind == "jpeg":
        frame = bytearray(_jpeg_frame())
        at = frame.find(b"\xff\xc0")
        struct.pack_into(">HH", frame, at + 5, declared, declared)
        ts, bits = JPEGBaseline8Bit, 8
    elif kind == "jpegls":
        frame = bytearray(b"\xff\xd8\xff\xf7\x00\x0b\x08" + struct.pack(">HH", declared, declared)
                          + b"\x01\x01\x11\x00\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00" + bytes(64) + b"\xff\xd9")
        ts, bits = JPEGLSLossless, 8
    else:
        raise ValueError(kind)
    ds = _image_header(64, 64, 1, bits)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(_meta(ds, ts))
        fh.write(_encode(ds))


def write_header_bomb(path: Path, items: int) -> None:
    """A 64 x 64 image whose header holds a sequence of ``items`` empty items (8 bytes each on disk; pydicom
    spends about 0.7 KB on each parsed item)."""
    ds = _image_header(64, 64, 1, 16)
    head = _encode(ds)
    sequence = (struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
                + struct.pack("<HHL", 0xFFFE, 0xE000, 0) * items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    pixels = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 64 * 64 * 2) + bytes(64 * 64 * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(_meta(ds, "1.2.840.10008.1.2.1"))
        fh.write(sequence + head + pixels)  # the sequence first: pydicom reads elements in file order


# name -> (builder, expected status/reason after the fix). The measured attacks of issue 11, scaled as filed.
BOMBS = {
    "deflate_200mb_pixels.dcm": (lambda p: write_deflated(p, 10000, 10000), ("viewed", None)),
    "deflate_1gb_frames.dcm": (lambda p: write_deflated(p, 4096, 4096, frames=32), ("viewed", None)),
    "deflate_800mb_private.dcm": (lambda p: write_deflated(p, 64, 64, private_bytes=800 << 20),
                                  ("unreadable", "header_too_large")),
    "deflate_lying_length.dcm": (lambda p: write_deflated(p, 64, 64, pixel_bytes=1 << 30), ("viewed", None)),
    "j2k_32768.dcm": (lambda p: write_codestream_bomb(p, "j2k", 32768), ("unreadable", "corrupt_codestream")),
    "jpeg_13000.dcm": (lambda p: write_codestream_bomb(p, "jpeg", 13000), ("unreadable", "corrupt_codestream")),
    "jpegls_30000.dcm": (lambda p: write_codestream_bomb(p, "jpegls", 30000), ("unreadable", "corrupt_codestream")),
    "items_1m.dcm": (lambda p: write_header_bomb(p, 1_000_000), ("unreadable", "header_too_large")),
}


def build_bombs(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Write every bomb of :data:`BOMBS` into ``folder``; return name -> expected (status, reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (build, _) in BOMBS.items():
        build(folder / name)
    return {name: expected for name, (_, expected) in BOMBS.items()}


_MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    limit = int(sys.argv[2]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a regression fails here, not the machine

    def high_water_kib():
        # VmHWM belongs to this process's memory map; ru_maxrss would keep the parent's peak across fork + exec
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    from tanl_guard.dicom import DicomScanConfig, resolve_outcomes, scan_files, scan_folder
    import pydicom.pixels  # everything imported: the baseline
    base = high_water_kib()
    config = DicomScanConfig(salt="memory-probe")
    path = Path(sys.argv[1])
    scan = scan_folder(path, config) if path.is_dir() else scan_files(path.parent, [path], config)
    resolved, _ = resolve_outcomes(scan, None, config)
    peak = high_water_kib()
    out = {o.rel_path: [o.status.value, o.reason.value if o.reason else None] for o in resolved.outcomes}
    print(json.dumps({"base_kib": base, "peak_kib": peak, "outcomes": out}))
""")


def measure(path: Path, address_space_mib: int = 6144, timeout: float = 900) -> dict:
    """Scan and decode ``path`` (a file or a folder) in a fresh Python process; return its peak resident memory
    (``peak_kib``, the process's own high-water mark ``VmHWM``), the baseline after imports (``base_kib``) and
    the outcomes.

    Args:
        path: what to screen.
        address_space_mib: the child's address-space limit (a regression raises MemoryError there).
        timeout: seconds before the child is killed.
    """
    import tanl_guard

    # Only the package on the path: test folders on sys.path could shadow modules (benchmarks/datasets.py).
    env = dict(os.environ, PYTHONPATH=str(Path(tanl_guard.__file__).resolve().parents[1]))
    run = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(address_space_mib)],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # python dicom_hostile.py OUT_DIR: build the bombs, print each one's peak memory
    folder = Path(sys.argv[1])
    build_bombs(folder)
    print(f"{'file':<28} {'on disk':>10} {'peak MiB':>9} {'above base':>11}  outcome")
    for name in BOMBS:
        result = measure(folder / name)
        peak, base = result["peak_kib"] >> 10, result["base_kib"] >> 10
        status, reason = result["outcomes"][name]
        print(f"{name:<28} {(folder / name).stat().st_size:>10,} {peak:>9} {peak - base:>11}  {status} {reason or ''}")
