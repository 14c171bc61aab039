# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Covariate shifts of in-distribution slices: MR acquisition artefacts, blur and lossy compression.

A guard that refuses every slightly noisy scan is as useless as one that accepts a photo, so the evaluation also
streams ID slices with one artefact each and reports how many the guard still accepts. Severities are moderate: the
anatomy stays readable.

* ``bias_field``: MONAI ``RandBiasField`` (degree 3, coefficients 0.15-0.3), clipped to [0, 1];
* ``rician_noise``: MONAI ``RandRicianNoise`` (std 0.03-0.06 of the [0, 1] range);
* ``ghosting``: every n-th k-space line along the phase axis (n = 3-6) scaled by 1 - (0.4-0.7), the central 4 %
  of k-space kept (after TorchIO's ``RandomGhosting``; MONAI has no ghosting transform);
* ``motion``: the k-space lines after a random time taken from a rigidly moved copy (rotation up to 4 degrees,
  shift up to 4 % of the side; after TorchIO's ``RandomMotion``; MONAI has no motion transform);
* ``blur``: MONAI ``GaussianSmooth``, sigma 0.6-1.0 % of the image side;
* ``jpeg``: Pillow JPEG at quality 10-25.

Every artefact is seeded by the image's pixels and the artefact name, so the same slice always gets the same copy.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

__all__ = ["ARTEFACTS", "apply_artefact", "shifted_copies"]

ARTEFACTS = ("bias_field", "rician_noise", "ghosting", "motion", "blur", "jpeg")


def _rng(image: np.ndarray, name: str) -> np.random.Generator:
    h = hashlib.sha256(np.ascontiguousarray(image).tobytes() + name.encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    return img.mean(axis=-1) if img.ndim == 3 else img


def _kspace(img: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(img))


def _image(k: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.ifft2(np.fft.ifftshift(k)))


def _bias_field(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import RandBiasField

    t = RandBiasField(degree=3, coeff_range=(0.15, 0.3), prob=1.0)
    t.set_random_state(seed=int(rng.integers(2**31)))
    return np.asarray(t(img[None]))[0]


def _rician(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import RandRicianNoise

    t = RandRicianNoise(prob=1.0, mean=0.0, std=float(rng.uniform(0.03, 0.06)), sample_std=False)
    t.set_random_state(seed=int(rng.integers(2**31)))
    return np.asarray(t(img[None]))[0]


def _ghosting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = _kspace(img)
    rows = np.arange(k.shape[0])
    every = int(rng.integers(3, 7))
    mask = rows % every == 0
    centre = k.shape[0] // 2
    keep = max(1, int(round(0.02 * k.shape[0])))
    mask[centre - keep : centre + keep + 1] = False
    k[mask] *= 1.0 - float(rng.uniform(0.4, 0.7))
    return _image(k)


def _motion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import affine_transform

    h, w = img.shape
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    shift = rng.uniform(-0.04, 0.04, size=2) * np.array([h, w])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([h, w]) / 2.0
    moved = affine_transform(img, rot, offset=centre - rot @ centre - shift, order=1, mode="constant")
    k, k_moved = _kspace(img), _kspace(moved)
    start = int(rng.uniform(0.55, 0.8) * h)  # the patient moved after this fraction of the acquisition
    k[start:] = k_moved[start:]
    return _image(k)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from monai.transforms import GaussianSmooth

    sigma = float(rng.uniform(0.006, 0.010)) * float(np.mean(img.shape))
    return np.asarray(GaussianSmooth(sigma=sigma)(img[None]))[0]


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=int(rng.integers(10, 26))
    )
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im, dtype=np.float32) / 255.0


_FUNCS = {"bias_field": _bias_field, "rician_noise": _rician, "ghosting": _ghosting, "motion": _motion,
          "blur": _blur, "jpeg": _jpeg}


def apply_artefact(image: np.ndarray, name: str) -> np.ndarray:
    """One artefact applied to a grey (H, W) or colour (H, W, 3) image in [0, 1]; returns a grey float32 image.

    Args:
        image: the clean image.
        name: one of :data:`ARTEFACTS`.
    """
    if name not in _FUNCS:
        raise ValueError(f"unknown artefact {name!r}; choose one of {ARTEFACTS}")
    img = _grey(image).astype(np.float64)
    out = _FUNCS[name](img, _rng(img, name))
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def shifted_copies(images: list[np.ndarray], artefacts: tuple[str, ...] = ARTEFACTS,
                   cache_dir: str | Path | None = None) -> list[tuple[int, str, np.ndarray]]:
    """One shifted copy of every image, the artefacts taken in turn: ``(index of the image, artefact, copy)``.

    Args:
        images: the clean ID images.
        artefacts: the artefacts to cycle through.
        cache_dir: keep the copies in this folder, keyed by the images, the artefacts and this module's source
            (they take minutes to make on a loaded machine); None makes them every time.
    """
    names = [artefacts[i % len(artefacts)] for i in range(len(images))]
    path = None
    if cache_dir is not None:
        h = hashlib.sha256(Path(__file__).read_bytes() + "|".join(names).encode())
        for img in images:
            h.update(np.ascontiguousarray(img).tobytes())
        path = Path(cache_dir) / f"shifted_{h.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as z:
                return [(i, names[i], z[f"img{i}"]) for i in range(len(images))]
    out = [(i, names[i], apply_artefact(img, names[i])) for i, img in enumerate(images)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **{f"img{i}": copy for i, _, copy in out})
        tmp.replace(path)
    return out
