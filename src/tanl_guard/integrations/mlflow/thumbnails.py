# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Thumbnails of rejected studies for the audit run: any 2D/3D array to an 8-bit PNG in the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tanl_guard._optional import optional_import

__all__ = ["THUMBNAIL_FOLDER", "to_uint8_image", "write_thumbnail"]

THUMBNAIL_FOLDER = "audit/rejected"


def to_uint8_image(image: Any) -> Any:
    """A (H, W) or (H, W, C) ``uint8`` numpy array from a numpy or torch image, min-max scaled when not 8-bit.

    Args:
        image: 2D grey or 3D colour array, channel-first (C, H, W) or channel-last (H, W, C).

    Raises:
        ValueError: for arrays that are not 2D or 3D.
    """
    np = optional_import("numpy", "numpy")
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first (MONAI/torch) -> channel-last (PIL)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"a thumbnail must be a 2D grey or 3D colour image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 1.0)
        arr = np.where(finite, arr, lo)
        arr = ((arr - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(arr)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def write_thumbnail(image: Any, target: Path) -> None:
    """Write ``image`` as a PNG at ``target`` (see :func:`to_uint8_image`).

    Args:
        image: the image.
        target: the PNG file to write.
    """
    pil = optional_import("PIL.Image", "dicom", "thumbnails")
    pil.fromarray(to_uint8_image(image)).save(target, format="PNG")
