# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The demo's folder of studies, assembled from real images that ship inside installed packages.

In distribution (brain MR): pydicom's ``MR_small`` and pydicom-data's ``emri_small`` (packaged DICOM), plus
series written here from real brain MRI volumes that ship with nilearn (the MNI152 template), nibabel (an EPI
run) and matplotlib (a sagittal slice). Out of distribution: packaged CT, X-ray (CR), ultrasound and NM files,
and photos from scikit-image stored as DICOM secondary captures. Broken inputs: two truncated copies, a JPEG
file whose decoder is not installed, a structured report without pixels, and a text file.
Reference ID images, from volumes that are never screened: dipy's four brain volumes (b0, DWI, PIESNO, T1 coronal)
and nibabel's small anatomical volume, its NIfTI-2 example and its functional run (one subfolder, that is one
source, per volume).

All patient fields of the generated files are fictitious; the packaged files carry test-data names, which the
product never writes out (studies are named by salted hashes).
"""

from __future__ import annotations

import importlib.resources
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoFolder", "build_demo_folder", "write_dicom_series", "ID_LABELS"]

ID_LABELS = ("brain MRI",)

_PACKAGED_ID = ("MR_small.dcm", "emri_small.dcm")
_PACKAGED_OOD = ("CT_small.dcm", "693_J2KI.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm",
                 "JPEG2000.dcm")
_PACKAGED_BROKEN = ("JPGExtended.dcm", "test-SR.dcm")


@dataclass(frozen=True)
class DemoFolder:
    """Where the demo data were written and what they are (counts only)."""

    studies: Path
    references: Path
    expected: dict[str, str]  # file or folder name -> "id", "ood" or "broken"
    sources: dict[str, str]  # file or folder name -> where its images come from


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["tanl-guard-demo", *map(str, parts)])


def write_dicom_series(
    folder: Path, name: str, slices: np.ndarray, modality: str = "MR", rgb: bool = False, description: str = ""
) -> list[Path]:
    """Write a (S, H, W) or (S, H, W, 3) array as one DICOM study with one series, a file per slice.

    Monochrome slices are stored as 16-bit MR (or ``modality``) images with their geometry; colour ones as 8-bit
    RGB secondary captures. Patient fields are fictitious.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_class = "1.2.840.10008.5.1.4.1.1.7" if rgb else "1.2.840.10008.5.1.4.1.1.4"
    study_uid, series_uid = _uid(name, "study"), _uid(name, "series")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = _uid(name, i)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Demo^Volunteer", f"DEMO-{name}", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.Modality, ds.SeriesDescription = "20260101", modality, description or name
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
        if rgb:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit, ds.PixelRepresentation = 7, 0
            ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        else:
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0.0, 0.0, float(i) * 2.0]
            ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
            scaled = _min_max(image.astype(np.float64)) * 4095.0
            ds.PixelData = scaled.round().astype(np.uint16).tobytes()
        path = folder / f"IM{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _min_max(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to [0, 1] in its own float dtype (a constant image to 0)."""
    return (image - image.min()) / max(float(np.ptp(image)), 1e-9)


def _axial(volume: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.stack([np.rot90(volume[:, :, int(z)]) for z in positions])


def _packaged(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)  # pydicom's test files or pydicom-data: never a download
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (pydicom / pydicom-data)")
    return Path(path)


def _package_folder(name: str) -> Path:
    """An installed package's folder, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the demo needs the package {name!r} (pip install -r requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def _reference_slices(image: Any, views: Sequence[tuple[int, int, float, float]]) -> list[np.ndarray]:
    """Slices of a NIfTI volume resampled to isotropic voxels: per view, ``(axis, count, start, stop)`` with
    ``count`` slices evenly spaced between the fractions ``start`` and ``stop`` of that axis."""
    from scipy.ndimage import zoom

    volume = np.asarray(image.dataobj, dtype=np.float32)
    while volume.ndim > 3:  # the first volume of a time series
        volume = volume[..., 0]
    voxel = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    if np.ptp(voxel) > 0:
        volume = zoom(volume, voxel / voxel.min(), order=1)
    slices = []
    for axis, count, start, stop in views:
        size = volume.shape[axis]
        for index in np.unique(np.linspace(int(size * start), int(np.ceil(size * stop)) - 1, count).astype(int)):
            slices.append(np.rot90(np.take(volume, index, axis=axis)))
    return slices


def _save_references(folder: Path, slices: Sequence[np.ndarray]) -> None:
    folder.mkdir()
    for i, image in enumerate(slices):
        scaled = _min_max(np.asarray(image, dtype=np.float32))
        np.save(folder / f"brain_{i:02d}.npy", scaled.astype(np.float32))


def build_demo_folder(root: str | Path) -> DemoFolder:
    """Write the demo studies and reference images under ``root`` (``studies/`` and ``references/``)."""
    import nibabel
    from nilearn.datasets import load_mni152_template
    from skimage import data as skdata

    root = Path(root)
    studies, references = root / "studies", root / "references"
    for folder in (studies, references):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    expected: dict[str, str] = {}
    sources: dict[str, str] = {}

    # In distribution: packaged brain MR, and series written from real brain volumes.
    for i, name in enumerate(_PACKAGED_ID):
        shutil.copy(_packaged(name), studies / f"export_{i:02d}.dcm")
        expected[f"export_{i:02d}.dcm"] = "id"
        sources[f"export_{i:02d}.dcm"] = f"pydicom {name}"
    mni = np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float32)
    write_dicom_series(studies / "mr_head_a", "mni-axial", _axial(mni, np.linspace(25, 65, 8)), description="T1 axial")
    nib_data = importlib.resources.files("nibabel") / "tests" / "data"
    epi = np.asarray(nibabel.load(str(nib_data / "example4d.nii.gz")).get_fdata()[..., 0], dtype=np.float32)
    write_dicom_series(studies / "mr_head_b", "epi", _axial(epi, np.linspace(4, 19, 6)), description="EPI")
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as handle:
        sagittal = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(np.float32)
    write_dicom_series(studies / "mr_head_c", "s1045", sagittal[None], description="T1 sagittal")
    # Most of what a deployed guard sees is in distribution: a few more brain MR series (other slabs, volumes).
    write_dicom_series(studies / "mr_head_d", "mni-axial-upper", _axial(mni, np.linspace(50, 75, 6)))
    write_dicom_series(studies / "mr_head_e", "epi-lower", _axial(epi, np.linspace(2, 10, 5)), description="EPI")
    epi_late = np.asarray(nibabel.load(str(nib_data / "example4d.nii.gz")).get_fdata()[..., 1], dtype=np.float32)
    write_dicom_series(studies / "mr_head_f", "epi-second-volume", _axial(epi_late, np.linspace(8, 20, 5)))
    expected.update({f"mr_head_{c}": "id" for c in "abcdef"})
    sources.update(mr_head_a="nilearn MNI152 axial", mr_head_b="nibabel EPI axial", mr_head_c="matplotlib s1045 sagittal",
                   mr_head_d="nilearn MNI152 axial (upper)", mr_head_e="nibabel EPI axial (lower)",
                   mr_head_f="nibabel EPI, 2nd volume")

    # Out of distribution: other modalities, and photos stored as DICOM secondary captures.
    for i, name in enumerate(_PACKAGED_OOD):
        shutil.copy(_packaged(name), studies / f"export_{i + 10:02d}.dcm")
        expected[f"export_{i + 10:02d}.dcm"] = "ood"
        sources[f"export_{i + 10:02d}.dcm"] = f"pydicom {name}"
    for name, image in (("photo_astronaut", skdata.astronaut()), ("photo_coffee", skdata.coffee())):
        write_dicom_series(studies / name, name, image[None], modality="OT", rgb=True, description="photo")
        expected[name] = "ood"
        sources[name] = f"scikit-image {name[6:]} as DICOM"

    # Broken inputs: each must come out as unreadable (or skipped), with a reason, never crash the run.
    for i, name in enumerate(_PACKAGED_BROKEN):
        shutil.copy(_packaged(name), studies / f"export_{i + 30:02d}.dcm")
        expected[f"export_{i + 30:02d}.dcm"] = "broken"
        sources[f"export_{i + 30:02d}.dcm"] = f"pydicom {name}"
    data = _packaged("MR2_UNCR.dcm").read_bytes()
    (studies / "export_40.dcm").write_bytes(data[: len(data) * 2 // 3])  # pixel data cut short
    garbage = np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes()
    (studies / "export_41.dcm").write_bytes(b"\0" * 128 + b"DICM" + garbage)  # a DICOM preamble, then noise
    (studies / "notes.txt").write_text("exported by the PACS on request\n")
    expected.update({"export_40.dcm": "broken", "export_41.dcm": "broken", "notes.txt": "broken"})
    sources.update({"export_40.dcm": "MR2_UNCR cut short", "export_41.dcm": "noise after a preamble",
                    "notes.txt": "a text file"})

    # Reference ID images: every brain-MR volume that ships in an installed package and is never screened, one
    # subfolder per volume (a source that the feature gate's calibration holds out in turn): dipy's b0 volume, its
    # anisotropic DWI volume (axial, coronal and sagittal: the studies screened include a sagittal series, and a
    # site's references should cover the orientations it screens), its PIESNO test volume and its T1 coronal
    # slice; nibabel's small anatomical volume, its NIfTI-2 example and its low-resolution functional run.
    dipy_data = _package_folder("dipy") / "data" / "files"
    for volume, path, views in (
        ("dipy_b0", dipy_data / "S0_10slices.nii.gz", ((2, 8, 0.1, 0.9),)),
        ("dipy_dwi", dipy_data / "aniso_vox.nii.gz", ((2, 6, 0.2, 0.8), (0, 3, 0.35, 0.65), (1, 3, 0.35, 0.65))),
        ("dipy_piesno", dipy_data / "test_piesno.nii.gz", ((2, 6, 0.2, 0.8),)),
        ("nibabel_anatomical", nib_data / "anatomical.nii", ((2, 6, 0.2, 0.8),)),
        ("nibabel_nifti2", nib_data / "example_nifti2.nii.gz", ((2, 5, 0.2, 0.8),)),
        ("nibabel_functional", nib_data / "functional.nii", ((2, 3, 0.0, 1.0),)),
    ):
        _save_references(references / volume, _reference_slices(nibabel.load(str(path)), views))
    _save_references(references / "dipy_t1_coronal", [np.load(dipy_data / "t1_coronal_slice.npy")])
    return DemoFolder(studies=studies, references=references, expected=expected, sources=sources)
