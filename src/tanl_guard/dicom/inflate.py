# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Lazy, bounded inflation of a Deflated Explicit VR Little Endian dataset.

pydicom inflates the whole dataset in memory before reading it (``zlib.decompress`` of the file): 200 MB of
pixels in a 195 KB file peak at several GB. :class:`InflatingReader` is the file object pydicom reads instead: it
inflates on demand, keeps at most ``max_bytes`` of the header (so that pydicom can seek back within it), and once
the pixel data is reached, streams forward, keeping only the frames asked for.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from tanl_guard.dicom.outcomes import Reason, ReasonError
from tanl_guard.dicom.vocabulary import detail

__all__ = ["InflatingReader"]

_CHUNK = 1 << 16


class InflatingReader(io.RawIOBase):
    """A read-only, seekable view of the inflated dataset that follows the file meta of a deflated file.

    Args:
        fh: the file, positioned at the first byte of the deflate stream.
        max_bytes: the most inflated bytes kept in memory for the header; reading or seeking further before
            :meth:`stream` raises :class:`ReasonError` with ``header_too_large``.
    """

    def __init__(self, fh: BinaryIO, max_bytes: int) -> None:
        super().__init__()
        self._fh = fh
        self._max = max_bytes
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()  # inflated bytes [self._base, self._base + len(self._buf))
        self._base = 0
        self._pos = 0
        self._streaming = False
        self.exhausted = False  # no more inflated bytes will come
        self.complete = False  # the deflate stream ended properly (not cut short)

    # ---------------------------------------------------------------- io.RawIOBase
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self._streaming

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise OSError("an inflating reader seeks only from the start or the current position")
        if offset < self._base:
            raise OSError("cannot seek back past the bytes kept")
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise OSError("an inflating reader reads bounded amounts only")
        self._fill(self._pos + size)
        start = self._pos - self._base
        with memoryview(self._buf) as view:
            out = bytes(view[start:start + size])  # one copy, not a bytearray slice and then bytes
        self._pos += len(out)
        self._drop_to(self._pos)  # streaming: the bytes read are not kept twice
        return out

    # ---------------------------------------------------------------- streaming past the header
    @property
    def total(self) -> int:
        """Inflated bytes produced so far."""
        return self._base + len(self._buf)

    def stream(self) -> None:
        """From now on keep only what is read: no seeking back, no cap (the caller bounds what it reads)."""
        self._streaming = True
        drop = self._pos - self._base
        del self._buf[:drop]
        self._base = self._pos

    def skip(self, n: int) -> None:
        """Move ``n`` bytes forward, inflating and discarding (streaming mode)."""
        target = self._pos + n
        while self.total < target and not self.exhausted:
            self._drop_to(self.total)  # all inflated so far lies before the target
            self._more(min(_CHUNK * 16, target - self.total))
        self._pos = min(target, self.total)
        self._drop_to(self._pos)

    def _drop_to(self, pos: int) -> None:
        if self._streaming and pos > self._base:
            del self._buf[:pos - self._base]
            self._base = pos

    # ---------------------------------------------------------------- inflating
    def _fill(self, end: int) -> None:
        while self.total < end and not self.exhausted:
            if not self._streaming and end > self._max:
                # bytes beyond the cap are needed before the pixel data: refuse before inflating them
                raise ReasonError(Reason.HEADER_TOO_LARGE,
                                  detail("the deflated header inflates beyond max_header_bytes={n}", n=self._max))
            if self._streaming:
                self._drop_to(self._pos)
            self._more(end - self.total)

    def _more(self, want: int) -> None:
        """Inflate up to ``max(want, 1)`` more bytes (fewer at the end of the stream)."""
        want = max(1, min(want, _CHUNK * 16))
        while True:
            if self._inflater.eof:
                self.exhausted = self.complete = True
                return
            data = self._inflater.unconsumed_tail
            try:
                if not data:
                    out = self._inflater.decompress(b"", want)  # output zlib may still hold
                    if out:
                        self._buf += out
                        return
                    data = self._fh.read(_CHUNK)
                    if not data:
                        self.exhausted = True  # the file ends before the deflate stream does
                        return
                out = self._inflater.decompress(data, want)
            except zlib.error:
                self.exhausted = True  # a corrupt stream: what was inflated is all there is
                return
            if out:
                self._buf += out
                return
