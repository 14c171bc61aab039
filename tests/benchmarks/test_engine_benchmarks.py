# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The engine speed benchmark and the GPU check script: wiring, arguments and the no-GPU path (no timings)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

engine_speed = pytest.importorskip("benchmarks.engine_speed")
encoder_speed = pytest.importorskip("benchmarks.encoder_speed")
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")


def test_engine_speed_reports_ratio_buffers_and_state(tmp_path):
    out = tmp_path / "engine.json"
    argv = ["--n-id", "12", "--n-corpus", "600", "--dim", "16", "--batch", "24", "--repeats", "3", "--warmup", "2"]
    assert engine_speed.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["C"], result["N"], result["B"]) == (12, 600, 24)
    assert result["step_over_floor"] > 0 and result["images_per_s"] > 0
    assert result["buffer_bytes"] == 2 * 24 * 612 * 4  # the reused (B, C + N) logits and softmax buffers
    assert result["state_bytes"] > 0 and result["queues"][0] > 0


@no_cuda
@pytest.mark.parametrize("module", [engine_speed, encoder_speed], ids=["engine_speed", "encoder_speed"])
def test_cuda_without_a_gpu_is_a_clear_usage_error(module, capsys):
    with pytest.raises(SystemExit) as stop:
        module.main(["--device", "cuda"])
    assert stop.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")


def _gpu_check(*args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(GPU_CHECK), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@needs_bash
def test_gpu_check_dry_run_and_bad_arguments(tmp_path):
    dry = _gpu_check("--dry-run", "--skip", "e2e", "--out", str(tmp_path / "r"), tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    for part in ("env", "exact", "engine", "encoder"):
        assert f"run     {part}" in dry.stdout
    assert "skip    e2e" in dry.stdout and "--device cuda" in dry.stdout
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
    for bad in (["--bogus"], ["--skip", "everything"], ["--studies", "many"], ["--out"]):
        run = _gpu_check(*bad, tmp_path=tmp_path)
        assert run.returncode == 2 and "gpu_check:" in run.stderr, bad


@needs_bash
@no_cuda
def test_gpu_check_without_cuda_records_why_and_exits_3(tmp_path):
    out = tmp_path / "results"
    run = _gpu_check("--skip", "env", "--out", str(out), tmp_path=tmp_path)
    assert run.returncode == 3
    assert "CUDA is not available" in run.stderr
    summary = (out / "summary.md").read_text()
    for part in ("exact", "engine", "encoder", "e2e"):
        assert f"| {part} | not run: no CUDA device |" in summary
