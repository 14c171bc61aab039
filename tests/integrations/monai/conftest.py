# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Fixtures for the MONAI integration tests: real images (brain-MRI slices and photos), one real surrogate guard.

In distribution: axial slices of the MNI152 brain template bundled with nilearn (offline). Out of distribution:
scikit-image's sample photos (the cat, the astronaut), greyscale. The guard runs the real surrogate encoder
with "brain MRI" reference slices as image anchors (the surrogate cannot read medical text) against a small
everyday/medical noun corpus, with a fixed threshold (set halfway between the two groups' scores, see ``guard``)
so every test is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monai_testing import CORPUS_WORDS, EVAL_KINDS, MIN_GAP, SIZE, GuardSpy

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    """Out-of-distribution photos as greyscale SIZE x SIZE images in [0, 1]: the cat, the astronaut."""
    import skimage.data
    from skimage.color import rgb2gray

    return [_resize(rgb2gray(skimage.data.chelsea())), _resize(rgb2gray(skimage.data.astronaut()))]


@pytest.fixture(scope="session")
def guard(brain_slices: list[np.ndarray], photos: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real guard for the whole folder (the surrogate encoder takes seconds to load).

    Its fixed threshold is set halfway between the photos' and the test brain slices' id_scores, measured once
    here (two passes from the fresh state, which is then restored), so the tests do not hang on the exact score
    scale of the surrogate; the gap itself is checked, so a guard that stops separating them fails loudly here.
    """
    from tanl_guard.corpora import Corpus
    from tanl_guard.guard import Guard, GuardPolicy, ThresholdPolicy

    guard = Guard.build(
        encoder="surrogate",
        labels=["brain MRI"],
        reference_images={"brain MRI": brain_slices[0::2]},
        corpus=Corpus.from_labels(CORPUS_WORDS, kind="noun"),
        policy=GuardPolicy(threshold=ThresholdPolicy("fixed", 0.5)),
        cache_dir=str(tmp_path_factory.mktemp("corpus_cache")),
    )
    fresh = guard.state_dict()
    brains, ood = [], []
    for _ in range(2):
        scores = guard.score_images(brain_slices[1::2] + photos).scores
        brains += scores[:5].tolist()
        ood += scores[5:].tolist()
    guard.load_state_dict(fresh)
    gap = min(brains) - max(ood)
    assert gap >= MIN_GAP, f"the surrogate guard no longer separates brain slices {brains} from photos {ood}"
    threshold = round((min(brains) + max(ood)) / 2, 3)
    guard.policy = GuardPolicy(threshold=ThresholdPolicy("fixed", threshold))
    return guard


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
