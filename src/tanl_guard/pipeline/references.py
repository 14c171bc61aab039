# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Reference ID images from a folder: image files and/or DICOM studies, one subfolder per ID label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..dicom import DicomScanConfig, load_series_views, scan_folder

__all__ = ["IMAGE_SUFFIXES", "load_image_file", "load_reference_images"]

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


def _images_in(folder: Path, view: str, dicom_config: DicomScanConfig) -> list[np.ndarray]:
    images = [load_image_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    scan = scan_folder(folder, dicom_config)
    for series in scan.iter_series():
        views = load_series_views(series, view, dicom_config)
        if views.ok:
            images.extend(views.views)
    return images


def load_reference_images(
    folder: str | Path, labels: Sequence[str] = (), view: str = "slices:3", dicom_config: DicomScanConfig | None = None
) -> dict[str, list[np.ndarray]]:
    """Reference ID images per label.

    Subfolders named after ID labels (case-insensitive) hold that label's images; with a single ID label (or
    none) images anywhere under ``folder`` belong to it. Image files (PNG, JPEG, TIFF, BMP, .npy) and DICOM
    series (their views) are both read.

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
    by_label: dict[str, list[np.ndarray]] = {}
    wanted = list(labels) or [p.name for p in sorted(folder.iterdir()) if p.is_dir()]
    if wanted and all(label.lower() in subfolders for label in wanted) and (len(wanted) > 1 or not labels):
        for label in wanted:
            by_label[label] = _images_in(subfolders[label.lower()], view, dicom_config)
    elif len(labels) <= 1:
        by_label[labels[0] if labels else folder.name] = _images_in(folder, view, dicom_config)
    else:
        raise ValueError(
            f"{len(labels)} ID labels: put the reference images of each in a subfolder named after it "
            f"(found subfolders {sorted(subfolders)})"
        )
    empty = [label for label, images in by_label.items() if not images]
    if empty:
        raise ValueError(f"no reference images found for {empty} under {folder}")
    return by_label
