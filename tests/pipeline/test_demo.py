"""`make demo`'s own path: the folder it builds, and ``python -m tanl_guard.demo`` end to end (on a small corpus)."""

import json

import numpy as np
import pytest

from tanl_guard.dicom import DicomScanConfig, load_series_views, scan_folder
from tanl_guard.pipeline.references import load_references


def _thumbnail(image: np.ndarray, size: int = 32) -> np.ndarray:
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image.mean(axis=-1)
    small = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float64)
    small -= small.mean()
    return small.ravel() / max(float(np.linalg.norm(small)), 1e-12)


def test_demo_references_come_from_volumes_that_are_never_screened(demo_folder):
    references = load_references(demo_folder.references, ["brain MRI"])
    images, sources = references.images["brain MRI"], references.sources["brain MRI"]
    assert references.n_sources() >= 5  # one calibration fold per volume, held out in turn
    config = DicomScanConfig()
    screened = [view for series in scan_folder(demo_folder.studies, config).iter_series()
                for view in load_series_views(series, "slices:3", config).views]
    assert len(screened) >= 20
    # a reference cut from a screened volume would be a near-copy of one of its views; slices of different
    # brains at 32 x 32 correlate far less
    similarity = np.stack([_thumbnail(r) for r in images]) @ np.stack([_thumbnail(s) for s in screened]).T
    assert similarity.max() < 0.95, f"reference {int(similarity.max(axis=1).argmax())} copies a screened view"
    assert len(images) == len(sources)


@pytest.mark.slow
def test_make_demo_runs_end_to_end(tmp_path, corpus_file, capsys, monkeypatch):
    from tanl_guard.demo.__main__ import main

    monkeypatch.delenv("TANL_GUARD_SALT", raising=False)
    code = main(["--out", str(tmp_path / "demo_out"), "--corpus", str(corpus_file)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "What each input is, and what the guard said" in out
    assert "of 17 readable studies judged as their kind by tanl+knn" in out
    lines = [json.loads(line) for line in (tmp_path / "demo_out" / "verdicts.jsonl").read_text().splitlines()]
    assert sum(line["study"] is not None for line in lines) == 18  # every study gets its verdict
    assert {line["verdict"] for line in lines} == {"accept", "reject", "unreadable"}
    fused = [line for line in lines if line.get("feature_threshold") is not None]
    assert fused, "the demo's first run is the fused guard (references given)"
    assert (tmp_path / "demo_out" / "mlflow.db").stat().st_size > 0
    # 17 readable studies are too few views for the label gate to refuse any: the summary says so, with the count
    # of feature-accepted views its saved state holds
    from tanl_guard.guard.state_file import load_guard_state

    seen = len(load_guard_state(tmp_path / "demo_out" / "state.pt")["cross"])
    assert f"refuses nothing until 21 feature-accepted views set its threshold ({seen} so far" in out
    tanl_alone = (tmp_path / "demo_out" / "verdicts_tanl_alone.jsonl").read_text().splitlines()
    assert all(json.loads(line).get("feature_threshold") is None for line in tanl_alone)
