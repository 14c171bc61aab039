# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""End-to-end pipelines built on the guard: screening a folder of DICOM studies."""

from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .screen import ScreenConfig, Screener, ScreenReport

__all__ = ["ScreenConfig", "Screener", "ScreenReport", "save_checkpoint", "load_checkpoint"]
