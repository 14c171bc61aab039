# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Configuration of the DICOM folder scan and of view decoding."""

from __future__ import annotations

from dataclasses import dataclass, field

from tanl_guard.view_spec import ViewSpec

__all__ = ["DicomScanConfig"]


@dataclass(frozen=True)
class DicomScanConfig:
    """Settings for :func:`scan_folder` and :func:`load_series_views`.

    Attributes:
        salt: salt for the hashed study/series/path keys; ``None`` uses ``$TANL_GUARD_SALT`` or the per-installation
            salt file (see :func:`tanl_guard.privacy.resolve_salt`).
        force: also read files without the DICOM preamble and file meta (legacy ACR-NEMA style) with
            ``dcmread(force=True)``. Off by default: forced reads accept almost anything. Forced datasets are kept
            only when they carry an SOP Class UID or image dimensions.
        follow_symlinks: follow symbolic links to files and folders (loops are detected and reported). Off by
            default so that a scan never leaves the exported tree.
        max_pixels_per_frame: largest Rows x Columns x Samples accepted for one frame (checked on the header).
        max_frames: largest Number of Frames accepted for one file (checked on the header).
        max_frame_bytes: largest decoded frame in bytes, Rows x Columns x Samples x Bits Allocated / 8 (at least
            1 byte per sample; checked on the header): what decoding one frame holds, whatever the encoding
            compresses it to.
        max_pixels_per_series: largest declared total (Rows x Columns x Frames x Samples over the instances) of one
            series; larger series are reported as ``image_too_large`` without decoding. A MIP decodes at most
            this many pixels (fewer frames, evenly spaced, if needed).
        view: the default view spec.
        decoding_plugins: restrict pydicom to these decoder plugins (e.g. ``("pillow", "pydicom")``); ``None`` uses
            every installed plugin. Plugins left out are reported as missing.
        dedupe: keep one file per SOP Instance UID within a series; the others get status ``duplicate``.
        max_failed_instances: files of one series that may fail to decode (each replaced by the nearest other
            slice) before the whole series is reported unreadable.
        read_dicomdir: read DICOMDIR files to count the files they reference and report missing ones.
        max_header_bytes: the most inflated bytes of a deflated dataset kept before its pixel data (larger:
            ``header_too_large``); also the largest DICOMDIR record sequence read. Non-pixel values over 1 MiB
            (``tanl_guard.dicom.header.DEFER_BYTES``) are never loaded, whatever the encoding.
        max_header_elements: the most data elements before the pixel data, nested ones included (pydicom holds
            about 0.7 KB per parsed item: a sequence of a million empty items is 8 MB on disk and 0.7 GB parsed);
            larger headers are ``header_too_large``.
        max_view_side: views whose longer side exceeds this are reduced by an integer factor (block means; every
            k-th pixel for palette colour) right after decoding. The encoder resizes to a few hundred pixels; this
            bounds each frame's float working set and the views held for a gate batch. ``0``: never reduce.
    """

    salt: str | None = None
    force: bool = False
    follow_symlinks: bool = False
    max_pixels_per_frame: int = 100_000_000
    max_frames: int = 10_000
    max_frame_bytes: int = 256 * 1024 * 1024
    max_pixels_per_series: int = 2_000_000_000
    view: ViewSpec = field(default_factory=ViewSpec)
    decoding_plugins: tuple[str, ...] | None = None
    dedupe: bool = True
    max_failed_instances: int = 3
    read_dicomdir: bool = True
    max_header_bytes: int = 32 * 1024 * 1024
    max_header_elements: int = 200_000
    max_view_side: int = 1024

    def __post_init__(self) -> None:
        if isinstance(self.view, str):
            object.__setattr__(self, "view", ViewSpec.parse(self.view))
        for name in ("max_pixels_per_frame", "max_frames", "max_frame_bytes", "max_pixels_per_series",
                     "max_header_bytes", "max_header_elements"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_view_side < 0:
            raise ValueError("max_view_side must be >= 0")
        if self.decoding_plugins is not None:
            object.__setattr__(self, "decoding_plugins", tuple(self.decoding_plugins))
