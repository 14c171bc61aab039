"""Opt-in checks with real BiomedCLIP weights (set TANL_GUARD_BIOMEDCLIP to a local copy's folder).

Nothing here runs in CI, which has no weights; on a machine that has them:

    TANL_GUARD_BIOMEDCLIP=/models/biomedclip .venv/bin/python -m pytest -m weights tests/encoders
"""

from __future__ import annotations

import os

import pytest

pytestmark = [
    pytest.mark.weights,
    pytest.mark.skipif(not os.environ.get("TANL_GUARD_BIOMEDCLIP"), reason="set TANL_GUARD_BIOMEDCLIP=<local dir>"),
]


@pytest.fixture(scope="module")
def biomedclip():
    from tanl_guard.encoders import resolve

    device = "cuda" if os.environ.get("TANL_GUARD_DEVICE") == "cuda" else "cpu"
    return resolve("biomedclip:local-dir:" + os.environ["TANL_GUARD_BIOMEDCLIP"], device=device)


def test_chest_radiograph_reads_as_a_chest_xray(biomedclip):
    from pydicom.data import get_testdata_file

    from tanl_guard.dicom import DicomScanConfig, load_series_views, scan_files

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    from pathlib import Path

    scan = scan_files(Path(path).parent, [Path(path)], DicomScanConfig(salt="weights"))
    views = load_series_views(next(scan.iter_series()), "mid").views
    image = biomedclip.encode_images(list(views))
    texts = biomedclip.encode_texts(["a chest X-ray", "a brain MRI", "an abdominal CT scan", "a photo of a cat"])
    similarities = (image @ texts.T)[0]
    assert int(similarities.argmax()) == 0, similarities.tolist()
    assert biomedclip.embed_dim == image.shape[1] and abs(float(image.norm()) - 1.0) < 1e-5
