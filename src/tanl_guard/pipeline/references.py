# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Reference ID images from a folder: image files and/or DICOM studies, one subfolder per ID label.

Every image carries the id of its **source**, for the feature gate's leave-one-source-out calibration: a DICOM
image's study (its salted hash), an image file's first subfolder under the label's folder (hashed: folder names
may carry patient names); files lying directly in the label's folder share one source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dicom import DicomScanConfig, load_series_views, scan_folder
from ..view_spec import ViewSpec

__all__ = ["IMAGE_SUFFIXES", "ReferenceSet", "load_image_file", "load_references", "load_reference_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


def load_image_file(path: Path) -> np.ndarray:
    """An image file as float32 in [0, 1]: (H, W) for grayscale, (H, W, 3) for colour (.npy: min-max scaled)."""
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = np.moveaxis(array, 0, -1)
        array = np.squeeze(array)
        lo, hi = float(array.min()), float(array.max())
        return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB") if image.mode not in ("L", "I", "I;16", "F") else image
        array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        hi = 255.0 if array.max() <= 255 else float(array.max())
        return np.clip(array / max(hi, 1.0), 0.0, 1.0)
    return np.clip(array / 255.0, 0.0, 1.0)


@dataclass
class ReferenceSet:
    """Reference ID images per label, with the source of each image.

    Attributes:
        images: label -> images (float32 in [0, 1]).
        sources: label -> one source id per image (``study:<hash>`` or ``folder:<hash>``).
    """

    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def n_sources(self) -> int:
        """How many distinct sources the references come from."""
        return len({s for ids in self.sources.values() for s in ids})


def _folder_source(folder: Path, path: Path) -> str:
    parts = path.relative_to(folder).parts
    name = parts[0] if len(parts) > 1 else "."
    return "folder:" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _images_in(folder: Path, view: ViewSpec | str, dicom_config: DicomScanConfig) -> tuple[list[np.ndarray], list[str]]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    images = [load_image_file(p) for p in files]
    sources = [_folder_source(folder, p) for p in files]
    scan = scan_folder(folder, dicom_config)
    for series in scan.iter_series():
        views = load_series_views(series, view, dicom_config)
        if views.ok:
            images.extend(views.views)
            sources.extend([f"study:{views.study_key}"] * len(views.views))
    return images, sources


def load_reference_images(
    folder: str | Path,
    labels: Sequence[str] = (),
    view: ViewSpec | str = "slices:3",
    dicom_config: DicomScanConfig | None = None,
) -> dict[str, list[np.ndarray]]:
    """Reference ID images per label (:func:`load_references` without the sources).

    Args:
        folder: the reference folder.
        labels: the ID labels; with none, the subfolder names become the labels.
        view: how DICOM series become views.
        dicom_config: scan settings for DICOM references.
    """
    return load_references(folder, labels, view, dicom_config).images


def load_references(
    folder: str | Path,
    labels: Sequence[str] = (),
    view: ViewSpec | str = "slices:3",
    dicom_config: DicomScanConfig | None = None,
) -> ReferenceSet:
    """Reference ID images per label, with the source of each.

    Subfolders named after ID labels (case-insensitive) hold that label's images; with a single ID label (or
    none) images anywhere under ``folder`` belong to it. Within a label's folder, each first-level subfolder is one
    source (a volume, scanner or site), and each DICOM study is one source. Image files (PNG, JPEG, TIFF, BMP,
    .npy) and DICOM series (their views) are both read.

    Args:
        folder: the reference folder.
        labels: the ID labels; with none, the subfolder names become the labels.
        view: how DICOM series become views.
        dicom_config: scan settings for DICOM references.

    Raises:
        ValueError: no images found, or several labels but no subfolder per label.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"reference folder {folder} does not exist")
    dicom_config = dicom_config or DicomScanConfig(view=view)
    subfolders = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    out = ReferenceSet()
    wanted = list(labels) or [p.name for p in sorted(folder.iterdir()) if p.is_dir()]
    if wanted and all(label.lower() in subfolders for label in wanted) and (len(wanted) > 1 or not labels):
        for label in wanted:
            out.images[label], out.sources[label] = _images_in(subfolders[label.lower()], view, dicom_config)
    elif len(labels) <= 1:
        label = labels[0] if labels else folder.name
        out.images[label], out.sources[label] = _images_in(folder, view, dicom_config)
    else:
        raise ValueError(
            f"{len(labels)} ID labels: put the reference images of each in a subfolder named after it "
            f"(found subfolders {sorted(subfolders)})"
        )
    empty = [label for label, images in out.images.items() if not images]
    if empty:
        raise ValueError(f"no reference images found for {empty} under {folder}")
    return out
