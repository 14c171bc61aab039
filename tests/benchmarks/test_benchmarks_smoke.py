# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Smoke versions of the detection-quality benchmarks (the full runs are on demand: ``python -m benchmarks``).

The simulation runs at its tiny size and must show the paper's qualitative claims there; the real-image harness
runs on a handful of package-shipped images with the real offline surrogate encoder and a 1,500-label slice of
WordNet, so it checks the wiring and the result format, not detection quality.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

simulation = pytest.importorskip("benchmarks.simulation")


@pytest.fixture(scope="module")
def tiny_result():
    return simulation.run("tiny", figures=False, threads=1, quiet=True)


def test_tanl_beats_static_baselines(tiny_result):
    main = tiny_result["a_b_main"]
    tanl = main["tanl"]["mean"]["auroc"]
    for baseline in ("neglabel", "mcm", "adaneg"):
        assert tanl > main[baseline]["mean"]["auroc"], baseline
    # the near-ID tier is where NegLabel's distance rule cannot reach
    assert main["tanl"]["per_seed"][0]["near"]["auroc"] > main["neglabel"]["per_seed"][0]["near"]["auroc"]


def test_selected_negatives_hit_the_stream_ood_concepts(tiny_result):
    sel = tiny_result["a_b_main"]["tanl"]["per_seed"][0]["selection_final"]
    base = tiny_result["stream"]["base_rate"]
    assert sel["p@20"] >= 0.5
    assert sel["p@100"] > 5 * base
    # NegLabel's static farthest set carries no knowledge of the stream
    assert tiny_result["a_b_main"]["neglabel"]["static_selection"]["p@100"] < sel["p@100"]


def test_shift_is_followed(tiny_result):
    trace = tiny_result["e_shift"]["tanl"]["trace"]
    shift = tiny_result["e_shift"]["shift_at_batch"]
    before = np.mean([t["p@100_A"] - t["p@100_B"] for t in trace[max(0, shift - 2) : shift]])
    after = np.mean([t["p@100_B"] - t["p@100_A"] for t in trace[-2:]])
    assert before > 0 and after > 0


def test_reproducible():
    a = simulation.make_stream(simulation.build_world(simulation.SIZES["tiny"].spec, 0), simulation.SIZES["tiny"], 1)
    b = simulation.make_stream(simulation.build_world(simulation.SIZES["tiny"].spec, 0), simulation.SIZES["tiny"], 1)
    assert torch.equal(a.features, b.features)


def test_real_image_harness(tmp_path):
    real = pytest.importorskip("benchmarks.real_images")
    datasets = pytest.importorskip("benchmarks.datasets")
    pytest.importorskip("skimage")
    pytest.importorskip("nilearn")
    items, skipped = datasets.build_track_a(slices_per_volume=4, fetch=False, verbose=False, quick=True)
    keep = [it for it in items if it.tier == "id" or it.group in ("photo / texture", "CT", "fundus")]
    if sum(it.tier == "id" for it in keep) < 4 or len({it.volume for it in keep if it.tier == "id"}) < 2:
        pytest.skip("fewer than two ID volumes installed")
    from tanl_guard.encoders import resolve

    bench = real.prepare(resolve("surrogate"), keep, skipped, corpus_spec="wordnet", corpus_limit=1500,
                         cache_dir=str(tmp_path), verbose=False)
    results, raw = real.evaluate(bench, orders=("random", "id_first"), verbose=False)
    for setting in ("text", "text+image"):
        entry = results[setting]["tanl"]["random"]
        assert 0.0 <= entry["tiers"]["all"]["auroc"] <= 1.0
        assert set(entry["tiers"]["all"]) >= {"fpr95_id_positive", "fpr95_ood_positive", "n_id", "n_ood"}
    assert "knn" in results["text+image"] and "knn" not in results["text"]
    # every ID slice is scored exactly once in the leave-one-volume-out setting
    assert results["text+image"]["tanl"]["random"]["tiers"]["all"]["n_id"] == sum(it.tier == "id" for it in keep)
    json.dumps(results)  # the result format is plain JSON
