# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Bounded reads of a DICOM header: what pydicom may load before the pixel data, whatever the file holds.

pydicom loads every value of the header, parses nested sequences into objects as it reads them, and inflates a
deflated dataset whole before parsing. Each is a memory bomb in a small file: an 800 MB private element, a
sequence of a million empty items (8 MB on disk, 0.7 GB parsed), a deflate stream of 1 MB that inflates to 1 GB.
:func:`read_header` reads up to the pixel data with three bounds:

- values over :data:`DEFER_BYTES` are skipped, never loaded (pydicom's ``defer_size``);
- the elements pydicom would create (top level, and nested in sequences, counted by a walk over the raw bytes
  before pydicom parses them) are capped at ``max_elements``;
- a deflated dataset is inflated lazily, with at most ``max_bytes`` kept before the pixel data.

It also tells a header that ends early (a value or an element cut by the end of the file) from a complete one.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from tanl_guard.dicom.inflate import InflatingReader
from tanl_guard.dicom.outcomes import Reason, ReasonError
from tanl_guard.dicom.vocabulary import detail

__all__ = ["DEFER_BYTES", "DEFLATED", "Header", "read_header", "pixel_element", "native_frame_bytes"]

DEFER_BYTES = 1 << 20  # non-pixel values larger than this are never loaded
DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"))
_IMPLICIT_LE, _EXPLICIT_LE, _EXPLICIT_BE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"


@dataclass
class Header:
    """The header of one file, read up to its pixel data.

    Attributes:
        dataset: the pydicom ``FileDataset`` (values over :data:`DEFER_BYTES` are deferred: ``None``).
        transfer_syntax: the Transfer Syntax UID of the file meta (``""`` when absent).
        has_pixels: the read stopped at a Pixel Data (or Float / Double Float Pixel Data) element.
        pixel_length: the value length of that element (``0xFFFFFFFF`` when encapsulated with undefined length).
        pixel_offset: where its value starts: a file offset, or an offset in the inflated stream when deflated.
        available: bytes of the file from ``pixel_offset`` on (``None`` for a deflated file).
        reader: the inflating reader of a deflated file, positioned at ``pixel_offset`` (else ``None``).
        dataset_offset: where the dataset starts in the file (after the preamble and file meta).
        file_size: the file's size in bytes.
    """

    dataset: Any
    transfer_syntax: str
    has_pixels: bool
    pixel_length: int | None
    pixel_offset: int
    available: int | None
    reader: InflatingReader | None = None
    dataset_offset: int = 0
    file_size: int = 0


def pixel_element(head: bytes, implicit: bool, little: bool) -> tuple[bool, int | None, int]:
    """Parse the element a header read stopped at: ``(is_pixel_data, value_length_or_None, header_size)``.

    Args:
        head: the (up to 12) bytes at the stop position.
        implicit: implicit VR encoding.
        little: little endian encoding.
    """
    if len(head) < 8:
        return False, None, 0
    e = "<" if little else ">"
    group, elem = struct.unpack(f"{e}HH", head[:4])
    if (group << 16 | elem) not in _PIXEL_TAGS:
        return False, None, 0
    if implicit:
        return True, struct.unpack(f"{e}L", head[4:8])[0], 8
    if head[4:6] in _LONG_VRS and len(head) >= 12:
        return True, struct.unpack(f"{e}L", head[8:12])[0], 12
    return True, struct.unpack(f"{e}H", head[6:8])[0], 8


def native_frame_bytes(bits: int, rows: int, columns: int, samples: int, photometric: str) -> float:
    """Bytes of one frame of native (uncompressed) pixel data; fractional for 1-bit data.

    Args:
        bits: Bits Allocated.
        rows: Rows.
        columns: Columns.
        samples: Samples per Pixel.
        photometric: Photometric Interpretation (``YBR_FULL_422`` stores 2 samples per pixel).
    """
    if bits == 1:
        return rows * columns * samples / 8
    per_pixel = 2 if photometric.strip().upper() == "YBR_FULL_422" else samples
    return rows * columns * per_pixel * (bits // 8)


class _Budget:
    """pydicom ``stop_when`` callback: stops at the pixel data, counts the elements pydicom is about to create
    (walking each sequence's raw bytes before pydicom parses it) and records where each top-level value ends."""

    def __init__(self, fh: BinaryIO, little: bool, max_elements: int, size: int | None) -> None:
        self.fh = fh
        self.little = little
        self.max_elements = max_elements
        self.size = size  # bytes in the file (None for an inflated stream: unknown)
        self.count = 0
        # Every element or item takes 8 bytes at least: a file that small cannot exceed the budget, so nothing
        # needs walking (most files; pydicom itself still fails on a sequence cut by the end of the file).
        self.small = size is not None and size // 8 <= max_elements
        self.walked: dict[int, int] = {}  # value start -> value end, for the undefined-length values walked
        self._e = "<" if little else ">"

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        if tag in _PIXEL_TAGS:
            return True
        if self.small:
            return False
        self._tick()
        start = self.fh.tell()
        implicit = vr is None
        raw_vr = vr.encode("ascii", "replace") if vr else None
        if length == _UNDEFINED:  # pydicom parses (or scans) it now: it must be well formed
            self._value(tag, raw_vr, implicit, length)
            self.walked[start] = self.fh.tell()
            self.fh.seek(start)
            return False
        if self._is_sequence(tag, raw_vr, implicit, length):
            # pydicom keeps a defined-length sequence raw and parses it when it is accessed: count its elements,
            # but leave a malformed one to fail there (a quirky sequence nobody reads must not reject the file)
            try:
                self._value(tag, raw_vr, implicit, length)
            except (ReasonError, struct.error) as exc:
                if isinstance(exc, ReasonError) and exc.reason is Reason.HEADER_TOO_LARGE:
                    raise
            self.fh.seek(start)
        return False

    # ---------------------------------------------------------------- walking raw bytes
    def _tick(self, n: int = 1) -> None:
        self.count += n
        if self.count > self.max_elements:
            raise ReasonError(Reason.HEADER_TOO_LARGE,
                              detail("more than max_header_elements={n} elements before the pixel data",
                                     n=self.max_elements))

    def _read(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) < n:
            raise ReasonError(Reason.TRUNCATED_HEADER, "the file ends inside a sequence of the header")
        return data

    def _is_sequence(self, tag: int, raw_vr: bytes | None, implicit: bool, length: int) -> bool:
        if not implicit:
            return raw_vr == b"SQ"
        if tag >> 16 & 1:  # private: raw bytes (UN), or a sequence found by looking ahead (see _value)
            return False
        from pydicom.datadict import dictionary_VR

        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            return False

    def _value(self, tag: int, raw_vr: bytes | None, implicit: bool, length: int) -> None:
        """Walk one value that pydicom parses (a sequence) or scans (an undefined-length value)."""
        sequence = self._is_sequence(tag, raw_vr, implicit, length) or raw_vr == b"UN"
        if length == _UNDEFINED and not sequence and implicit:
            # pydicom looks ahead: an unknown tag whose value starts with an item is a sequence
            here = self.fh.tell()
            sequence = self.fh.read(4) == struct.pack(f"{self._e}HH", 0xFFFE, 0xE000)
            self.fh.seek(here)
        if sequence:
            self._sequence(length, implicit)
        elif length == _UNDEFINED:
            self._fragments()
        else:
            self.fh.seek(self.fh.tell() + length)

    def _sequence(self, length: int, implicit: bool) -> None:
        end = None if length == _UNDEFINED else self.fh.tell() + length
        while end is None or self.fh.tell() < end:
            group, elem, item_length = struct.unpack(f"{self._e}HHL", self._read(8))
            tag = group << 16 | elem
            if tag == _SEQ_END:
                return
            self._tick()  # pydicom reads any other tag as an item
            if item_length == _UNDEFINED:
                self._dataset(None, implicit)
            else:
                self._dataset(self.fh.tell() + item_length, implicit)

    def _fragments(self) -> None:
        """Skip an undefined-length value as pydicom does: items (encapsulated data), else up to the delimiter."""
        start = self.fh.tell()
        while True:
            head = self.fh.read(8)
            if len(head) < 8:
                break
            group, elem, item_length = struct.unpack(f"{self._e}HHL", head)
            if group << 16 | elem == _SEQ_END:
                return
            if group << 16 | elem != _ITEM or item_length == _UNDEFINED:
                break
            self.fh.seek(self.fh.tell() + item_length)
        self.fh.seek(start)
        delimiter = struct.pack(f"{self._e}HH", 0xFFFE, 0xE0DD)
        tail = b""
        while True:  # pydicom's fallback: a byte scan for the sequence delimiter
            chunk = self.fh.read(1 << 16)
            if not chunk:
                raise ReasonError(Reason.TRUNCATED_HEADER, "the file ends inside a value of the header")
            found = (tail + chunk).find(delimiter)
            if found >= 0:
                self.fh.seek(self.fh.tell() - len(chunk) - len(tail) + found + 8)
                return
            tail = chunk[-3:]

    def _dataset(self, end: int | None, implicit: bool) -> None:
        first = True
        while end is None or self.fh.tell() < end:
            head = self._read(8)
            group, elem = struct.unpack(f"{self._e}HH", head[:4])
            tag = group << 16 | elem
            if tag == _ITEM_END:
                return
            raw_vr = head[4:6]
            if first and not implicit and not (0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B):
                implicit = True  # items of an explicit-VR sequence may be encoded implicitly (PS3.5 6.2.2)
            first = False
            self._tick()
            if implicit:
                length = struct.unpack(f"{self._e}L", head[4:8])[0]
                vr = None
            elif raw_vr in _LONG_VRS:
                length = struct.unpack(f"{self._e}L", self._read(4))[0]
                vr = raw_vr
            elif not (b"AA" <= raw_vr <= b"ZZ"):  # pydicom switches to implicit for this element
                length = struct.unpack(f"{self._e}L", head[4:8])[0]
                vr = None
            else:
                length = struct.unpack(f"{self._e}H", head[6:8])[0]
                vr = raw_vr
            if length == _UNDEFINED or self._is_sequence(tag, vr, vr is None, length):
                self._value(tag, vr, vr is None, length)
            else:
                self.fh.seek(self.fh.tell() + length)


def _value_ends(dataset: Any, walked: dict[int, int], start: int) -> tuple[int, int | None]:
    """(the furthest end of a top-level value, the end of the last one) from the raw elements' positions; the
    end of an undefined-length value is known only when it was walked (else ``None`` when it is the last)."""
    furthest, last, last_tell = start, start, -1
    for elem in dataset._dict.values():
        tell = getattr(elem, "value_tell", None)
        if tell is None:
            tell = getattr(elem, "file_tell", None)
        if tell is None:
            continue
        length = getattr(elem, "length", _UNDEFINED)
        if getattr(elem, "is_undefined_length", False):
            length = _UNDEFINED
        end = walked.get(tell) if length == _UNDEFINED else tell + length
        if end is not None:
            furthest = max(furthest, end)
        if tell > last_tell:
            last_tell, last = tell, end
    return furthest, last


def _has_standard_tag(dataset: Any) -> bool:
    """Whether a parsed dataset holds any element of the DICOM dictionary (random bytes almost never do)."""
    from pydicom.datadict import dictionary_has_tag

    return any(dictionary_has_tag(tag) for tag in dataset.keys())


def _encoding(fh: BinaryIO, ts: str) -> tuple[bool, bool]:
    """(implicit, little) as pydicom's ``read_partial`` decides them; ``fh`` at the dataset start."""
    if ts == _IMPLICIT_LE:
        return True, True
    if ts == _EXPLICIT_BE:
        return False, False
    if ts:
        return False, True
    here = fh.tell()
    peek = fh.read(6)
    fh.seek(here)
    if len(peek) < 6:
        return True, True
    from pydicom.values import converters

    group = struct.unpack("<H", peek[:2])[0]
    if peek[4:6].decode("latin-1") in converters:
        return False, group < 1024
    return True, True


def read_header(fh: BinaryIO, *, force: bool = False, max_bytes: int = 32 << 20,
                max_elements: int = 200_000) -> Header:
    """Read a header up to the pixel data within the bounds of this module.

    Args:
        fh: the file, opened for reading in binary mode, at its start.
        force: read files without a preamble or file meta (``dcmread(force=True)``).
        max_bytes: for a deflated dataset, the most inflated bytes kept before the pixel data.
        max_elements: the most elements (top level and nested) before the pixel data.

    Raises:
        pydicom.errors.InvalidDicomError: no DICOM preamble and ``force`` is off.
        ReasonError: ``truncated_header`` or ``header_too_large``.
    """
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_dataset, read_preamble

    size = os.fstat(fh.fileno()).st_size
    preamble = read_preamble(fh, force)
    meta = _read_file_meta_info(fh)
    ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    offset = fh.tell()
    reader: InflatingReader | None = None
    source: BinaryIO = fh
    if ts == DEFLATED:
        reader = InflatingReader(fh, max_bytes)
        source = reader  # type: ignore[assignment]
        implicit, little = False, True
        command_set = None
    else:
        command_set = _read_command_set_elements(fh)
        implicit, little = _encoding(fh, ts)
    start = source.tell()
    budget = _Budget(source, little, max_elements, None if reader is not None else size)
    try:
        dataset = read_dataset(source, implicit, little, stop_when=budget, defer_size=DEFER_BYTES)
    except ReasonError:
        raise
    except Exception:  # pydicom fails on short reads at the end of the file: a header cut short
        at_end = reader.exhausted if reader is not None else source.tell() >= size
        if at_end and ts:
            raise ReasonError(Reason.TRUNCATED_HEADER, "the file ends inside the header") from None
        raise
    if command_set:
        dataset.update(command_set)
    ds = FileDataset(fh, dataset, preamble, meta, implicit, little)
    ds.set_original_encoding(implicit, little, dataset._character_set)

    pos = source.tell()
    head = source.read(12)
    has_pixels, length, hdr = pixel_element(head, implicit, little)
    if has_pixels:
        source.seek(pos + hdr)
        available = None if reader is not None else size - (pos + hdr)
        return Header(ds, ts, True, length, pos + hdr, available, reader, offset, size)
    # No pixel data: the header is all there is, so it must end exactly where its last value ends.
    end_of_data = reader.total if reader is not None else size
    furthest, last = _value_ends(dataset, budget.walked, start)
    trailing = end_of_data - last if last is not None else 0  # bytes after the last value
    if furthest > end_of_data or 0 < trailing < 8 or (reader is not None and not reader.complete):
        if not (ts or _has_standard_tag(dataset)):  # noise after a preamble, not a DICOM header cut short
            raise ReasonError(Reason.INVALID_FILE, "header cannot be parsed")
        raise ReasonError(Reason.TRUNCATED_HEADER, "the file ends inside the header")
    return Header(ds, ts, False, None, pos, None if reader is not None else 0, reader, offset, size)
