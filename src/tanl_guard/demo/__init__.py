# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``make demo``: screen a small folder of real packaged studies with the offline surrogate encoder."""

from __future__ import annotations

from .data import ID_LABELS, DemoFolder, build_demo_folder, write_dicom_series

__all__ = ["ID_LABELS", "DemoFolder", "build_demo_folder", "write_dicom_series"]
