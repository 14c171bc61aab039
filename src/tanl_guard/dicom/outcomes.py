# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Per-file outcomes of a folder scan: one status and, where it failed, one reason category."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["FileStatus", "Reason", "ReasonError", "FileOutcome"]


class FileStatus(str, Enum):
    """What finally happened to one file found under the scanned folder."""

    VIEWED = "viewed"  # part of a series that produced views
    NOT_DICOM = "not_dicom"  # not a DICOM file (README, JSON, gzip, ...)
    UNREADABLE = "unreadable"  # DICOM (or DICOM-like), but no usable image: see the reason
    SKIPPED_NON_IMAGE = "skipped_non_image"  # DICOM without images by design: SR, RTPLAN, ECG, DICOMDIR, ...
    DUPLICATE = "duplicate"  # same SOP Instance UID as a file kept in the same series
    SKIPPED = "skipped"  # deliberately not read: symlink not followed, symlink loop
    PENDING = "pending"  # header scanned, image series not decoded yet (see ``ScanResult.resolve``)


class Reason(str, Enum):
    """Reason categories for every status other than ``viewed`` and ``pending``."""

    NOT_DICOM = "not_dicom"
    INVALID_FILE = "invalid_file"
    TRUNCATED_HEADER = "truncated_header"  # the file ends inside the header (before any pixel data)
    HEADER_TOO_LARGE = "header_too_large"  # non-pixel data over max_header_bytes / max_header_elements
    TRUNCATED_PIXEL_DATA = "truncated_pixel_data"
    NO_PIXEL_DATA = "no_pixel_data"
    MISSING_DECODER = "missing_decoder"
    CORRUPT_CODESTREAM = "corrupt_codestream"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_IMAGE = "unsupported_image"
    PERMISSION_DENIED = "permission_denied"
    IO_ERROR = "io_error"
    DICOMDIR = "dicomdir"
    DUPLICATE_INSTANCE = "duplicate_instance"
    SYMLINK_LOOP = "symlink_loop"
    SYMLINK_NOT_FOLLOWED = "symlink_not_followed"
    DECODE_ERROR = "decode_error"


class ReasonError(Exception):
    """A file cannot be used; carries the reason category and a detail from the closed vocabulary.

    Args:
        reason: the reason category.
        detail: a fixed phrase, possibly filled by :func:`tanl_guard.dicom.vocabulary.detail`.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FileOutcome:
    """The outcome of one file.

    Attributes:
        rel_path: path relative to the scanned root, POSIX separators. Real exports may put patient names in
            folder or file names: log ``path_key`` instead wherever output leaves the machine.
        path_key: salted hash of ``rel_path``.
        status: what happened to the file.
        reason: reason category, ``None`` for ``viewed`` and ``pending``.
        detail: a short explanation from the closed vocabulary of :mod:`tanl_guard.dicom.vocabulary` (fixed
            phrases, numbers, standard names and hashed keys; never a path, a header value or an exception text).
        study_key: salted hash of the Study Instance UID when the file joined a series, else ``None``.
        series_key: salted hash of the Series Instance UID when the file joined a series, else ``None``.
    """

    rel_path: str
    path_key: str
    status: FileStatus
    reason: Reason | None = None
    detail: str = ""
    study_key: str | None = None
    series_key: str | None = None

    def to_dict(self, include_path: bool = False) -> dict[str, str | None]:
        """JSON-safe form.

        Args:
            include_path: include ``rel_path`` (may contain names in real exports); ``path_key`` is always there.
        """
        out: dict[str, str | None] = {
            "path_key": self.path_key,
            "status": self.status.value,
            "reason": self.reason.value if self.reason is not None else None,
            "detail": self.detail,
            "study_key": self.study_key,
            "series_key": self.series_key,
        }
        if include_path:
            out["rel_path"] = self.rel_path
        return out
