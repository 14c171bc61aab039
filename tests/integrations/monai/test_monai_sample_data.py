# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The sample data of the MONAI example and bundle: written from packaged images, never over the user's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tanl_guard.integrations.monai.sample_data import write_sample_images


def test_sample_images_fill_empty_folders_only(tmp_path: Path):
    own = tmp_path / "data" / "my_scan.npy"
    own.parent.mkdir()
    np.save(own, np.zeros((4, 4), np.float32))
    sample = write_sample_images(tmp_path)
    assert sample.files == (own,), "a data folder that holds .npy files is the user's: nothing is added to it"
    assert len(sample.references) == 16 and sample.kinds == {}
    names = {p.name for p in sample.references}
    assert all(sample.sources[n] for n in names)
    # references come from two volumes, neither of which is screened
    assert {n.split("_")[1] for n in names} == {"mni152", "anatomical"}

    again = write_sample_images(tmp_path, overwrite=True)
    assert len(again.files) == 11 and sum(k == "brain" for k in again.kinds.values()) == 5
    assert sum(k == "photo" for k in again.kinds.values()) == 5
    assert not any("mni152" in s or "anatomical" in s for n, s in again.sources.items() if n in again.kinds)
    brain = np.load(tmp_path / "data" / "brain_epi_z10.npy")
    assert brain.dtype == np.float32 and brain.max() > 1.0, "raw scanner intensities: the transforms scale them"
