# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Helpers for the DICOM ingest tests: real file folders (never downloaded) and a synthetic file writer.

A uniquely named module rather than conftest.py, so that other test folders' conftest files cannot shadow it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tanl_guard.dicom.sample_data import installed_sample_roots

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

__all__ = ["SALT", "PATIENT_NAME", "PATIENT_ID", "BIRTH_DATE", "real_roots", "tree_digest", "write_image"]

SALT = "test-salt"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-0042-SECRET"
BIRTH_DATE = "19700101"


def real_roots() -> dict[str, Path]:
    """The installed folders of real DICOM test files (see :func:`installed_sample_roots`)."""
    return installed_sample_roots()


def tree_digest(root: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, size and mtime of every regular file below ``root`` (symlinks not followed)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            try:
                data = p.read_bytes()
            except PermissionError:
                data = b""
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


def write_image(
    path: Path,
    *,
    study: str,
    series: str,
    sop: str | None = None,
    z: float | None = 0.0,
    number: int | None = 1,
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
    frames: int | None = None,
    extra: dict | None = None,
) -> str:
    """Write a small uncompressed CT-like image with identifying tags set; return its SOP Instance UID."""
    sop = sop or generate_uid()
    if pixels is None:
        pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 10).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.Modality = modality
    if number is not None:
        ds.InstanceNumber = number
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop
