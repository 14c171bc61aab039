# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The frame header of JPEG, JPEG-LS and JPEG 2000 codestreams, checked against the DICOM header before decoding.

A decoder allocates what the codestream declares, not what the DICOM header says: a 6 KB JPEG 2000 frame whose
SIZ marker declares 32768 x 32768 took 2.15 GB before it was reported corrupt, though the header's 64 x 64 passed
every limit. :func:`check_codestreams` reads the SIZ (JPEG 2000) or SOF (JPEG, JPEG-LS) marker of every frame of
the encapsulated pixel data, a few KB each, and refuses a file whose frames disagree with Rows, Columns and
Samples per Pixel.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tanl_guard.dicom.header import read_header
from tanl_guard.dicom.outcomes import Reason, ReasonError
from tanl_guard.dicom.vocabulary import detail

__all__ = ["CODESTREAM_SYNTAXES", "codestream_dims", "check_codestreams"]

# JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 and HTJ2K transfer syntaxes: frames carry SOF or SIZ markers.
CODESTREAM_SYNTAXES = frozenset((
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
))
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7))
_J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ
_JP2_START = b"\x00\x00\x00\x0cjP  "
_MORE = "more"  # the marker segment lies beyond the bytes given
_PREFIX = 4096
_MAX_PREFIX = 1 << 20
_MAX_FRAGMENTS = 100_000
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD


def _jpeg_dims(data: bytes) -> tuple[int, int, int] | str | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _SOF:
            if pos + 10 > len(data):
                return _MORE
            rows, columns = struct.unpack(">HH", data[pos + 5:pos + 9])
            return rows, columns, data[pos + 9]
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return _MORE


def codestream_dims(data: bytes) -> tuple[int, int, int] | str | None:
    """(rows, columns, components) declared by a frame's codestream.

    Args:
        data: the first bytes of the frame.

    Returns:
        The dimensions; ``"more"`` when the frame header lies beyond ``data``; ``None`` when ``data`` does not
        start a JPEG, JPEG-LS or JPEG 2000 codestream (or has no frame header before its scan data).
    """
    if data[:2] == b"\xff\xd8":
        return _jpeg_dims(data)
    if data.startswith(_J2K_START) or data.startswith(_JP2_START):
        at = data.find(_J2K_START)
        if at < 0 or at + 42 > len(data):
            return _MORE
        x, y, x0, y0 = struct.unpack(">IIII", data[at + 8:at + 24])
        components = struct.unpack(">H", data[at + 40:at + 42])[0]
        return max(0, y - y0), max(0, x - x0), components
    return None


def _starts_frame(prefix: bytes) -> bool:
    return prefix[:2] == b"\xff\xd8" or prefix.startswith(_J2K_START) or prefix.startswith(_JP2_START)


def check_codestreams(path: Path, expected: tuple[int, int, int], forced: bool = False) -> None:
    """Refuse a file whose encapsulated frames declare other dimensions than its DICOM header.

    Reads the pixel data's items: every fragment that starts a JPEG / JPEG 2000 codestream must declare
    ``expected`` (continuation fragments are skipped). Reads at most a few KB per frame.

    Args:
        path: the file.
        expected: ``(Rows, Columns, Samples per Pixel)`` from the header.
        forced: the file has no file meta (read with ``force=True``).

    Raises:
        ReasonError: ``corrupt_codestream`` on a mismatch or a frame without a frame header.
    """
    with open(path, "rb") as fh:
        header = read_header(fh, force=forced)
        if not header.has_pixels:
            return
        end = None if header.pixel_length in (None, 0xFFFFFFFF) else header.pixel_offset + header.pixel_length
        fh.seek(header.pixel_offset)
        fragments: list[tuple[int, int]] = []
        while end is None or fh.tell() < end:
            head = fh.read(8)
            if len(head) < 8:
                break
            group, elem, length = struct.unpack("<HHL", head)
            if group << 16 | elem != _ITEM or length == 0xFFFFFFFF:
                break  # the end of the items (or not items at all: the decoder will say so)
            fragments.append((fh.tell(), length))
            if len(fragments) > _MAX_FRAGMENTS:
                raise ReasonError(Reason.CORRUPT_CODESTREAM,
                                  detail("more than {n} fragments in the pixel data", n=_MAX_FRAGMENTS))
            fh.seek(fh.tell() + length)
        for i, (offset, length) in enumerate(fragments[1:], start=1):  # item 0 is the Basic Offset Table
            fh.seek(offset)
            prefix = fh.read(min(length, _PREFIX))
            if not _starts_frame(prefix):
                continue
            dims = codestream_dims(prefix)
            j = i
            while dims == _MORE and len(prefix) < _MAX_PREFIX:  # a long header, or a frame split early
                more = _MAX_PREFIX - len(prefix)
                if len(prefix) < length:
                    fh.seek(offset + len(prefix))
                    prefix += fh.read(min(length - len(prefix), more))
                elif j + 1 < len(fragments) and not _starts_frame(_peek(fh, fragments[j + 1])):
                    j += 1
                    fh.seek(fragments[j][0])
                    prefix += fh.read(min(fragments[j][1], more))
                else:
                    break
                dims = codestream_dims(prefix)
            if not isinstance(dims, tuple):
                raise ReasonError(Reason.CORRUPT_CODESTREAM, "a frame has no readable frame header")
            if dims != tuple(expected):
                raise ReasonError(Reason.CORRUPT_CODESTREAM, detail(
                    "a frame's codestream declares {r}x{c}x{s}, the header {er}x{ec}x{es} (rows x columns x samples)",
                    r=dims[0], c=dims[1], s=dims[2], er=expected[0], ec=expected[1], es=expected[2]))


def _peek(fh, fragment: tuple[int, int]) -> bytes:
    fh.seek(fragment[0])
    return fh.read(min(fragment[1], 8))
