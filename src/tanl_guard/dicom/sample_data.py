# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Where real DICOM sample files are installed (pydicom, pydicom-data, pynetdicom), for tests and benchmarks."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["installed_sample_roots"]


def installed_sample_roots() -> dict[str, Path]:
    """The installed folders of real DICOM sample files, by package.

    The folders are enumerated directly, never through ``pydicom.data.get_testdata_files``, which would try to
    download the files that are not installed.
    """
    import pydicom.data

    roots = {"pydicom": Path(pydicom.data.__file__).parent / "test_files"}
    try:
        import data_store

        roots["pydicom-data"] = Path(data_store.__file__).parent / "data"
    except ImportError:
        pass
    try:
        roots["pynetdicom"] = Path(str(importlib.resources.files("pynetdicom") / "tests" / "dicom_files"))
    except ModuleNotFoundError:
        pass
    return {name: path for name, path in roots.items() if path.is_dir()}
