# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The parts of the Ray engine that need no cluster: embedding shards, reservations, shard keys, the CLI's checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tanl_guard.cli.main import cli
from tanl_guard.integrations.ray import RayEngineConfig, ShardStore, batch_from_json, batch_to_json, embedding_key


@pytest.fixture(scope="module")
def decoded(ray_demo):
    from tanl_guard.dicom import DicomScanConfig
    from tanl_guard.pipeline.ingest import decode_batch
    from tanl_guard.pipeline.manifest import build_manifest

    demo, _ = ray_demo
    config = DicomScanConfig(salt="ray-tests")
    manifest = build_manifest(demo.studies, config, seed=0, batch_size=64)  # one batch: every kind of study
    return decode_batch(0, manifest.batch_rows(0), "slices:3", config)


def test_shard_round_trip_is_exact_and_written_once(decoded, tmp_path):
    batch = decoded
    assert any(not s.readable for s in batch.studies) and batch.n_views > 10  # unreadable ones ride along
    rng = np.random.default_rng(0)
    features = rng.standard_normal((batch.n_views, 384)).astype(np.float32)
    keys = [(s.position, s.study_key, sv.series_key, i)
            for s in batch.studies for sv in s.series if sv.ok for i in range(len(sv.provenance))]
    store = ShardStore(tmp_path / "shards")
    assert store.done() == set()
    args = (np.array([k[0] for k in keys]), [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys])
    store.write(0, features, *args, "w" * 64, batch_to_json(batch), worker=123)
    store.write(0, features + 1, *args, "w" * 64, batch_to_json(batch), worker=456)  # a retry: the first stands
    (tmp_path / "shards" / ".batch-00000001.parquet.x.tmp").write_bytes(b"torn")  # an interrupted write
    assert store.done() == {0}

    shard = store.read(0)
    assert shard.features.tobytes() == features.tobytes() and shard.worker == 123
    assert shard.positions.tolist() == [k[0] for k in keys]
    assert batch_from_json(shard.batch) == batch.without_views()  # all the gate needs, pixels aside
    assert shard.trunk is None  # written without trunk features: none read back
    trunk = rng.standard_normal((batch.n_views, 1280)).astype(np.float32)  # a fused guard's feature gate reads these
    store.write(2, features, *args, "w" * 64, batch_to_json(batch), trunk=trunk)
    assert store.read(2).trunk.tobytes() == trunk.tobytes() and store.read(2).features.tobytes() == features.tobytes()
    store.path(0).rename(store.path(1))  # a file under another batch's name is refused, not misread
    with pytest.raises(ValueError, match="not the embedding shard of batch 1"):
        store.read(1)


def test_reservations_leave_room_for_decoding_or_refuse():
    assert RayEngineConfig(workers=1).reservations(2, 0) == (1.0, 0.0)
    cpus, gpus = RayEngineConfig(workers=2).reservations(2, 0)
    assert gpus == 0 and 2 * cpus + 0.25 <= 2
    assert RayEngineConfig(workers=2).reservations(16, 2) == (1.0, 1.0)  # a GPU per actor where there are enough
    with pytest.raises(ValueError, match="do not fit"):  # all CPUs to the actors: the decode stage would starve
        RayEngineConfig(workers=2, worker_cpus=1.0).reservations(2, 0)
    with pytest.raises(ValueError, match="do not fit"):
        RayEngineConfig(workers=2, worker_gpus=1.0).reservations(8, 1)


def test_embedding_key_names_manifest_view_and_weights():
    key = embedding_key("m" * 64, "slices:3", "w" * 64)
    assert len(key) == 16
    assert len({key, embedding_key("n" * 64, "slices:3", "w" * 64), embedding_key("m" * 64, "mid", "w" * 64),
                embedding_key("m" * 64, "slices:3", "v" * 64)}) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--ray-address", "127.0.0.1:1"], "--ray-address needs --engine ray"),
    (["--engine", "ray", "--thumbnails"], "--thumbnails needs --engine local"),
    (["--engine", "ray", "--workers", "0"], "at least one encoder worker"),
])
def test_engine_usage_errors_exit_2(ray_demo, tmp_path, args, message):
    demo, _ = ray_demo
    result = CliRunner().invoke(cli, ["screen", str(demo.studies), "--id-label", "x", "--state",
                                      str(tmp_path / "s.pt"), *args])
    assert result.exit_code == 2 and message in result.output


def test_engine_ray_without_ray_installed_says_what_to_install(ray_demo, tmp_path):
    demo, _ = ray_demo
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from tanl_guard.cli.main import cli; cli.main(sys.argv[1:], prog_name='tanl-guard')")
    result = subprocess.run([sys.executable, "-c", code, "screen", str(demo.studies), "--id-label", "x",
                             "--engine", "ray", "--state", str(tmp_path / "s.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pip install 'tanl-guard[ray]'" in result.stderr
