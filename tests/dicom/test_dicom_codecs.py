# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Decoder plugins: a missing codec is reported by name (emulated with pydicom's per-call plugin choice), and the
optional codecs decode what the defaults cannot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from dicom_helpers import SALT, real_roots

from tanl_guard.dicom import DicomScanConfig, FileStatus, Reason, SeriesViews, load_series_views, scan_files

ROOTS = real_roots()
HAS_LIBJPEG = importlib.util.find_spec("libjpeg") is not None
HAS_GDCM = importlib.util.find_spec("gdcm") is not None
HAS_JPEGLS = importlib.util.find_spec("jpeg_ls") is not None


def _load(source: str, name: str, plugins: tuple[str, ...] | None = None) -> SeriesViews:
    root = ROOTS.get(source)
    if root is None:
        pytest.skip(f"{source} not installed")
    path: Path = root / name
    config = DicomScanConfig(salt=SALT, decoding_plugins=plugins)
    return load_series_views(next(scan_files(path.parent, [path], config).iter_series()), None, config)


@pytest.mark.parametrize(
    "source,name,plugins,package",
    [
        ("pydicom-data", "MR2_J2KR.dcm", ("pydicom",), "pylibjpeg-openjpeg"),  # JPEG 2000 with no J2K plugin
        ("pydicom", "693_J2KI.dcm", ("pydicom",), "pylibjpeg-openjpeg"),
        ("pydicom", "MR_small_RLE.dcm", ("pillow",), "pylibjpeg-rle"),  # RLE without pydicom's own decoder
        pytest.param("pydicom", "SC_rgb_jpeg_dcmtk.dcm", ("pylibjpeg",), "pillow",  # JPEG baseline without Pillow
                     marks=pytest.mark.skipif(HAS_LIBJPEG, reason="pylibjpeg-libjpeg decodes JPEG baseline")),
    ],
)
def test_missing_plugin_is_named(source: str, name: str, plugins: tuple[str, ...], package: str) -> None:
    sv = _load(source, name, plugins)
    assert sv.status is FileStatus.UNREADABLE and sv.reason is Reason.MISSING_DECODER
    assert package in sv.detail
    (o,) = sv.outcomes
    assert o.reason is Reason.MISSING_DECODER and package in o.detail


@pytest.mark.parametrize("plugins", [("pillow",), ("pylibjpeg",), None])
def test_each_default_plugin_decodes_jpeg2000(plugins: tuple[str, ...] | None) -> None:
    sv = _load("pydicom-data", "MR2_J2KR.dcm", plugins)
    assert sv.ok and sv.views[0].shape == (1024, 1024)


def test_rle_with_pydicom_plugin_only() -> None:
    sv = _load("pydicom", "MR_small_RLE.dcm", ("pydicom",))
    assert sv.ok


@pytest.mark.skipif(HAS_LIBJPEG or HAS_GDCM, reason="an optional JPEG lossless codec is installed")
@pytest.mark.parametrize(
    "source,name,packages",
    [
        ("pydicom-data", "JPEG-LL.dcm", ["pylibjpeg-libjpeg", "python-gdcm"]),
        ("pydicom", "JPGExtended.dcm", ["pylibjpeg-libjpeg"]),  # Pillow is there but cannot do 12-bit JPEG
        ("pydicom", "SC_rgb_jpeg_gdcm.dcm", ["pylibjpeg-libjpeg", "python-gdcm"]),
    ],
)
def test_without_optional_codecs_jpeg(source: str, name: str, packages: list[str]) -> None:
    sv = _load(source, name)
    assert sv.reason is Reason.MISSING_DECODER
    for p in packages:
        assert p in sv.detail
    assert "tanl-guard[codecs]" in sv.detail


def test_jpeg_extended_names_libjpeg_first() -> None:
    if HAS_LIBJPEG:
        pytest.skip("pylibjpeg-libjpeg installed")
    sv = _load("pydicom", "JPGExtended.dcm")
    hint = sv.detail.split("install one of:", 1)[1]
    assert hint.strip().startswith("pylibjpeg-libjpeg")


@pytest.mark.skipif(HAS_LIBJPEG or HAS_GDCM or HAS_JPEGLS, reason="an optional JPEG-LS codec is installed")
def test_without_optional_codecs_jpeg_ls() -> None:
    sv = _load("pydicom", "MR_small_jpeg_ls_lossless.dcm")
    assert sv.reason is Reason.MISSING_DECODER
    for p in ("pyjpegls", "pylibjpeg-libjpeg", "python-gdcm"):
        assert p in sv.detail


@pytest.mark.skipif(not (HAS_LIBJPEG or HAS_GDCM), reason="needs pylibjpeg-libjpeg or python-gdcm ([codecs] extra)")
def test_with_optional_codecs_jpeg_lossless() -> None:
    sv = _load("pydicom-data", "JPEG-LL.dcm")
    assert sv.ok


@pytest.mark.skipif(not (HAS_LIBJPEG or HAS_GDCM or HAS_JPEGLS), reason="needs a JPEG-LS codec ([codecs] extra)")
def test_with_optional_codecs_jpeg_ls() -> None:
    sv = _load("pydicom", "MR_small_jpeg_ls_lossless.dcm")
    assert sv.ok


def test_corrupt_codestream_is_not_a_missing_decoder() -> None:
    sv = _load("pydicom", "JPEG2000-embedded-sequence-delimiter.dcm")
    assert sv.reason is Reason.CORRUPT_CODESTREAM


@pytest.mark.skipif(not HAS_LIBJPEG, reason="needs pylibjpeg-libjpeg ([codecs] extra)")
def test_with_libjpeg_corrupt_12bit_jpeg_is_corrupt() -> None:
    # Pillow declines 12-bit JPEG and libjpeg fails on the data: corrupt, not a missing decoder
    assert _load("pydicom", "JPEG-lossy.dcm").reason is Reason.CORRUPT_CODESTREAM
    assert _load("pydicom", "JPGExtended.dcm").ok


def test_forced_read_decodes_legacy_file() -> None:
    root = ROOTS.get("pydicom-data")
    if root is None:
        pytest.skip("pydicom-data not installed")
    path = root / "OT-PAL-8-face.dcm"  # no preamble, no file meta
    default = scan_files(root, [path], DicomScanConfig(salt=SALT))
    assert default.outcomes[0].reason is Reason.INVALID_FILE and "force=True" in default.outcomes[0].detail
    config = DicomScanConfig(salt=SALT, force=True)
    sv = load_series_views(next(scan_files(root, [path], config).iter_series()), None, config)
    assert sv.ok and sv.views[0].ndim == 3  # palette colour -> RGB
