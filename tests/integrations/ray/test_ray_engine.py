# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``tanl-guard screen --engine ray`` on a real local Ray cluster against ``--engine local`` on the demo studies.

Every run is a real ``tanl-guard`` process (the Ray drivers inside the cluster's network namespace); the encoder
is the real surrogate, the studies the packaged demo folder. Fractional CPU reservations (the cluster has 2) and a
timeout on every test: a Ray stage that cannot get a CPU waits without an error.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN_TIMEOUT_S = 420


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def local_lines(request, ray_env, ray_demo, tmp_path_factory):
    """The verdict lines of the local engine (a separate process, outside the namespace: it needs no network).

    It runs while the Ray head starts (both take seconds of mostly single-threaded start-up).
    """
    _, args = ray_demo
    state = tmp_path_factory.mktemp("local") / "state.pt"
    proc = subprocess.Popen([sys.executable, "-m", "tanl_guard.cli.main", "screen", *args, "--engine", "local",
                             "--state", str(state)], env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        request.getfixturevalue("ray_cluster")
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = _lines(_check(subprocess.CompletedProcess(proc.args, proc.returncode, out, err)).stdout)
    assert len(lines) >= 15 and {line["verdict"] for line in lines} == {"accept", "reject", "unreadable"}
    return lines


@pytest.fixture(scope="module")
def ray_run(ray_cluster, ray_demo, tmp_path_factory):
    """One uninterrupted run of the Ray engine with two encoder actors."""
    _, args = ray_demo
    folder = tmp_path_factory.mktemp("ray")
    result = ray_cluster.run(["-v", "screen", *args, "--engine", "ray", "--ray-address", ray_cluster.address,
                              "--workers", "2", "--state", str(folder / "state.pt"), "--work-dir",
                              str(folder / "work")], timeout=RUN_TIMEOUT_S)
    return _check(result), folder


@pytest.mark.timeout(900)
def test_ray_and_local_engines_give_identical_lines(local_lines, ray_run):
    result, folder = ray_run
    assert _lines(result.stdout) == local_lines  # bit for bit: same batches, same chunking, same threads
    batches = json.loads((folder / "work" / "manifest" / "manifest.json").read_text())["batches"]
    assert len(list((folder / "work" / "embeddings").glob("*/batch-*.parquet"))) == batches  # one shard a batch


@pytest.mark.timeout(900)
def test_embedding_stage_is_not_fused_into_another(ray_run):
    result, _ = ray_run
    stages = [line.split("embedding job stages: ", 1)[1] for line in result.stderr.splitlines()
              if "embedding job stages: " in line]
    assert stages, result.stderr[-3000:]
    executed = stages[-1].split(" | ")
    # Decoding on tasks and embedding on the actor pool stay two operators: had Ray fused them, one stage would
    # decode and embed in turn ("Map(...)->MapBatches(...)") and the pool would wait for the decoding.
    assert "TaskPoolMapOperator[Map(decode_manifest_batch)]" in executed, executed
    assert "ActorPoolMapOperator[MapBatches(EncoderActor)]" in executed, executed
    assert not any("->" in stage for stage in executed), executed


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before {what}: exit {proc.returncode}\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _verdict_lines_written(work: Path) -> int:
    return sum(max(0, len(p.read_text().splitlines()) - 1) for p in (work / "segments").glob("*.jsonl"))


@pytest.mark.timeout(1200)
def test_killed_driver_resumes_with_nothing_lost_or_doubled(ray_cluster, ray_demo, local_lines, tmp_path):
    _, args = ray_demo
    work, state = tmp_path / "work", tmp_path / "state.pt"
    command = ["screen", *args, "--engine", "ray", "--ray-address", ray_cluster.address, "--workers", "1",
               "--state", str(state), "--work-dir", str(work), "--checkpoint-every", "1"]
    proc = ray_cluster.start(command)
    try:
        # The first checkpoint commits the first batch: then the driver dies with the rest to do.
        _wait_for(lambda: state.exists() and _verdict_lines_written(work) > 0, RUN_TIMEOUT_S, "the first checkpoint",
                  proc)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler, no flush: the driver dies where it stands
        proc.communicate()
    written = _verdict_lines_written(work)
    shards = {p: p.stat().st_mtime_ns for p in (work / "embeddings").glob("*/batch-*.parquet")}
    assert 0 < written < len(local_lines) and state.exists()

    result = _check(ray_cluster.run([*command, "--resume"], timeout=RUN_TIMEOUT_S))
    lines = _lines(result.stdout)
    assert lines == local_lines  # every study once, with the verdict of an uninterrupted run
    assert len({line["study"] for line in lines if line["study"]}) == len([x for x in lines if x["study"]])
    for path, mtime in shards.items():  # what was embedded before the kill was not embedded again
        assert path.stat().st_mtime_ns == mtime


@pytest.mark.timeout(900)
def test_killed_encoder_actor_is_retried_without_changing_a_verdict(ray_cluster, ray_demo, local_lines, tmp_path):
    _, args = ray_demo
    work = tmp_path / "work"
    proc = ray_cluster.start(["screen", *args, "--engine", "ray", "--ray-address", ray_cluster.address,
                              "--workers", "1", "--state", str(tmp_path / "state.pt"), "--work-dir", str(work)])
    try:
        def actor() -> int | None:
            found = [pid for pid, cmd in ray_cluster.processes().items() if "EncoderActor" in cmd]
            return found[0] if found else None

        _wait_for(lambda: actor() is not None and any((work / "embeddings").glob("*/batch-*.parquet")),
                  RUN_TIMEOUT_S, "the encoder actor's first shard", proc)
        killed = actor()
        import os

        os.kill(killed, signal.SIGKILL)  # as the kernel's OOM killer would
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    assert _lines(out) == local_lines
    from tanl_guard.integrations.ray import ShardStore

    folders = list((work / "embeddings").iterdir())
    store = ShardStore(folders[0])
    workers = {store.read(b).worker for b in sorted(store.done())}
    assert killed in workers and len(workers) >= 2  # the restarted actor embedded the rest
