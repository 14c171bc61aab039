# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Small sample data for the MONAI example and bundle, written from images that ship inside installed packages.

Nothing is downloaded: the brain MRI slices come from nibabel's test volumes and matplotlib's sample data, the
reference slices from the MNI152 template bundled with nilearn and nibabel's small T1 volume, and the photos from
scikit-image. The images to
screen and the reference images come from different volumes, so the example never scores an image against
anchors made from the same scan. Brain slices keep their raw scanner intensities (the loading transforms scale
them); photos are greyscale in [0, 1]. Needs ``nilearn``, ``nibabel``, ``matplotlib`` and ``scikit-image``.
"""

from __future__ import annotations

import importlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SampleImages", "write_sample_images", "SAMPLE_PACKAGES"]

#: The packages whose shipped images make the sample data (import name -> PyPI name).
SAMPLE_PACKAGES = {"nilearn": "nilearn", "nibabel": "nibabel", "matplotlib": "matplotlib", "skimage": "scikit-image"}


def _require_packages() -> None:
    missing = []
    for module, dist in SAMPLE_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ImportError(
            "the sample data are written from images that ship inside nilearn, nibabel, matplotlib and scikit-image; "
            f"missing: {', '.join(missing)} (pip install {' '.join(missing)})"
        )


@dataclass(frozen=True)
class SampleImages:
    """Where the sample images were written and what they are.

    Attributes:
        files: the images to screen (``<root>/data/*.npy``), sorted by name.
        references: the reference ID images (``<root>/reference/*.npy``), sorted by name.
        kinds: per sample file name of ``files``: ``"brain"`` (in distribution) or ``"photo"`` (out of distribution).
        sources: per file name written by this call, where its pixels come from.
    """

    files: tuple[Path, ...]
    references: tuple[Path, ...]
    kinds: dict[str, str]
    sources: dict[str, str]


def _axial(volume: np.ndarray, positions: list[int]) -> list[np.ndarray]:
    return [np.rot90(volume[:, :, z]).astype(np.float32) for z in positions]


def _nibabel_volume(name: str) -> np.ndarray:
    import nibabel

    path = importlib.resources.files("nibabel") / "tests" / "data" / name
    return np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32)


def _brain_slices() -> list[tuple[str, np.ndarray, str]]:
    """Brain MRI slices to screen: an EPI run (nibabel) and a sagittal T1 slice (matplotlib)."""
    import matplotlib.cbook

    epi = _nibabel_volume("example4d.nii.gz")[..., 0]
    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as handle:
        sagittal = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(np.float32)
    positions = [6, 10, 14, 18]
    out = [(f"brain_epi_z{z:02d}", s, "nibabel example4d.nii.gz (EPI, volume 0), axial")
           for z, s in zip(positions, _axial(epi, positions), strict=True)]
    out.append(("brain_s1045", sagittal, "matplotlib s1045.ima.gz (T1), sagittal"))
    return out


def _photos() -> list[tuple[str, np.ndarray, str]]:
    from skimage import data as skdata
    from skimage.color import rgb2gray

    out = []
    for name in ("astronaut", "camera", "chelsea", "coffee", "rocket"):
        image = getattr(skdata, name)()
        grey = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64) / 255.0
        out.append((f"photo_{name}", grey.astype(np.float32), f"scikit-image data.{name}(), greyscale"))
    return out


def _references() -> list[tuple[str, np.ndarray, str]]:
    """Reference slices from two other volumes: the MNI152 template (nilearn) and nibabel's small T1 volume."""
    from nilearn.datasets import load_mni152_template

    mni = np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float32)
    anatomical = _nibabel_volume("anatomical.nii")
    mni_z = [int(z) for z in np.linspace(25, 70, 12)]
    anat_z = [8, 11, 14, 17]
    return [(f"ref_mni152_z{z:02d}", s, "nilearn MNI152 template (T1, 2 mm), axial")
            for z, s in zip(mni_z, _axial(mni, mni_z), strict=True)] + [
            (f"ref_anatomical_z{z:02d}", s, "nibabel anatomical.nii (T1), axial")
            for z, s in zip(anat_z, _axial(anatomical, anat_z), strict=True)]


def write_sample_images(root: str | Path, overwrite: bool = False) -> SampleImages:
    """Write the sample images under ``root`` as float32 ``.npy`` files: ``data/`` (5 brain MRI slices, 5 photos) and
    ``reference/`` (16 axial T1 slices from two other volumes).

    A folder that already holds ``.npy`` files is left as it is unless ``overwrite``, so a bundle can call this on
    every run and still screen the user's own data.

    Args:
        root: the folder to write into (created when missing).
        overwrite: rewrite the sample files even where ``.npy`` files exist.

    Returns:
        the :class:`SampleImages`.

    Raises:
        ImportError: when a package the images come from is missing (see :data:`SAMPLE_PACKAGES`).
    """
    root = Path(root)
    data, reference = root / "data", root / "reference"
    if overwrite or not all(any(folder.glob("*.npy")) for folder in (data, reference)):
        _require_packages()
    sources: dict[str, str] = {}
    for folder, make in ((data, lambda: _brain_slices() + _photos()), (reference, _references)):
        folder.mkdir(parents=True, exist_ok=True)
        if not overwrite and any(folder.glob("*.npy")):
            continue
        for name, image, source in make():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(image))
            sources[f"{name}.npy"] = source
    files = tuple(sorted(data.glob("*.npy")))
    kinds = {f.name: f.name.split("_")[0] for f in files if f.name.split("_")[0] in ("brain", "photo")}
    return SampleImages(files=files, references=tuple(sorted(reference.glob("*.npy"))), kinds=kinds, sources=sources)
