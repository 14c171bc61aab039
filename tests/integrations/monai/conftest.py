# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Fixtures for the MONAI integration tests: real images (brain-MRI slices and photos), one real surrogate guard.

In distribution: axial slices of the MNI152 brain template bundled with nilearn (offline). Out of distribution:
scikit-image's sample photos (a book page, a horse silhouette), greyscale. The guard runs the real surrogate encoder
with "brain MRI" reference slices as image anchors (the surrogate cannot read medical text) against a small
everyday/medical noun corpus, with a fixed threshold of 0.5 so every test is deterministic: the brain slices
score about 0.99-1.0, the photos about 0.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monai_testing import EVAL_KINDS, SIZE, THRESHOLD, GuardSpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")


CORPUS_WORDS = (
    "cat dog car tree house chair table cup bottle phone book lamp bicycle bird fish flower apple banana pizza "
    "shoe hat shirt clock window door road mountain river beach boat airplane train bus truck horse cow sheep "
    "elephant guitar piano camera computer keyboard television sofa bed toilet sink refrigerator oven knife "
    "spoon fork bowl chest skull bone lung heart kidney liver ultrasound mammogram"
).split()


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    a = a - a.min()
    return a / max(float(a.max()), 1e-8)


def _resize(a: np.ndarray, size: int = SIZE) -> np.ndarray:
    from skimage.transform import resize

    return _unit(resize(a, (size, size), anti_aliasing=True, preserve_range=True))


@pytest.fixture(scope="session")
def mni_volume() -> np.ndarray:
    """The MNI152 template at 2 mm, (99, 117, 95), scaled to [0, 1] (axial slices along the last axis)."""
    from nilearn.datasets import load_mni152_template

    return _unit(np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float32))


@pytest.fixture(scope="session")
def brain_slices(mni_volume: np.ndarray) -> list[np.ndarray]:
    """Ten axial brain slices (SIZE x SIZE, [0, 1]): even ones are the guard's references, odd ones test data."""
    return [_resize(mni_volume[:, :, z]) for z in np.linspace(28, 62, 10).astype(int)]


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Out-of-distribution photos as greyscale SIZE x SIZE images in [0, 1]: a book page, a horse silhouette.

    (At 64 x 64 the surrogate's verdicts on these two are far from the threshold on both sides; the cat and the
    coffee cup of scikit-image score much closer to brain slices once downsampled.)
    """
    import skimage.data

    return [_resize(skimage.data.page().astype(np.float32)), _resize(skimage.data.horse().astype(np.float32))]


@pytest.fixture(scope="session")
def guard(brain_slices: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real guard for the whole folder (the surrogate encoder takes seconds to load)."""
    from tanl_guard.corpora import Corpus
    from tanl_guard.guard import Guard, GuardPolicy, ThresholdPolicy

    return Guard.build(
        encoder="surrogate",
        labels=["brain MRI"],
        reference_images={"brain MRI": brain_slices[0::2]},
        corpus=Corpus.from_labels(CORPUS_WORDS, kind="noun"),
        policy=GuardPolicy(threshold=ThresholdPolicy("fixed", THRESHOLD)),
        cache_dir=str(tmp_path_factory.mktemp("corpus_cache")),
    )


@pytest.fixture(scope="session")
def guard_state0(guard: Any) -> dict[str, Any]:
    """The guard's state right after it was built."""
    return guard.state_dict()


@pytest.fixture
def fresh_guard(guard: Any, guard_state0: dict[str, Any]) -> Iterator[Any]:
    """The session guard, reset to its freshly built state (cheap: no re-encoding)."""
    guard.load_state_dict(guard_state0)
    yield guard


@pytest.fixture
def guard_spy(fresh_guard: Any, monkeypatch: pytest.MonkeyPatch) -> GuardSpy:
    """A call counter on the fresh guard's ``score_images``."""
    return GuardSpy(fresh_guard, monkeypatch)


@pytest.fixture(scope="session")
def eval_files(brain_slices: list[np.ndarray], photos: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    """The evaluation set on disk as .npy files with patient-like names (which must never reach the audit)."""
    root = tmp_path_factory.mktemp("eval_data")
    tests, ood = iter(brain_slices[1::2]), iter(photos)
    items = []
    for i, kind in enumerate(EVAL_KINDS):
        image = next(tests) if kind == "brain" else next(ood)
        path = root / f"DOE_JOHN_1970-01-01_{i:02d}_{kind}.npy"
        np.save(path, image.astype(np.float32))
        items.append({"image": str(path), "label": 0 if kind == "brain" else 1, "kind": kind})
    return items


@pytest.fixture
def bundle_dir() -> Path:
    """The example bundle shipped in examples/bundle."""
    return Path(__file__).resolve().parents[3] / "examples" / "bundle"
