# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest

from tanl_guard.dicom import DicomScanConfig, ViewSpec


def test_parse() -> None:
    assert ViewSpec.parse("slices:3") == ViewSpec("slices", 3)
    assert ViewSpec.parse("slices") == ViewSpec("slices", 3)
    assert ViewSpec.parse(" MID ") == ViewSpec("mid", 1)
    assert ViewSpec.parse("mip").kind == "mip"
    assert str(ViewSpec.parse("slices:5")) == "slices:5"
    spec = ViewSpec.parse("mid")
    assert ViewSpec.parse(spec) is spec
    for bad in ("slices:x", "slices:0", "max", ""):
        with pytest.raises(ValueError):
            ViewSpec.parse(bad)


def test_positions() -> None:
    assert ViewSpec().positions(1) == [0]
    assert ViewSpec().positions(2) == [0, 1]
    assert ViewSpec().positions(5) == [1, 2, 3]  # 25/50/75 % of 0..4
    assert ViewSpec().positions(120) == [30, 60, 89]
    assert ViewSpec().positions(0) == []
    assert ViewSpec.parse("mid").positions(10) == [5]
    assert ViewSpec.parse("slices:1").positions(9) == [4]
    assert len(ViewSpec.parse("slices:7").positions(100)) == 7


def test_config_accepts_spec_string() -> None:
    cfg = DicomScanConfig(salt="s", view="mid")  # type: ignore[arg-type]
    assert cfg.view == ViewSpec("mid", 1)
    with pytest.raises(ValueError):
        DicomScanConfig(max_frames=0)
