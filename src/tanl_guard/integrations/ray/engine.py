# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The Ray engine of ``tanl-guard screen``: the embedding job on the cluster, the gate (one owner) in the driver.

:class:`RayScreener` is the local :class:`~tanl_guard.pipeline.Screener` with another source of embedded batches:
instead of decoding and encoding each batch in this process, it starts the embedding job for the batches whose
shard is missing and reads the shards back in batch order. Everything after that is the local engine's own code:
``judge_batch`` on the driver's guard, verdict segments, the O(1) checkpoint, resume, audit and report. So the
two engines give the same verdict lines for the same folder, seed, view and batch size, and a resumed Ray run
continues exactly after the last committed batch (Ray cannot recover a dead driver; the files can).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...encoders.base import ImageEncoding
from ...pipeline.screen import Screener
from .config import RayEngineConfig
from .job import EmbeddingJob, EmbeddingSettings
from .session import ray_session
from .shards import ShardStore, batch_from_json

__all__ = ["RayScreener", "embedding_key"]

log = logging.getLogger(__name__)


def embedding_key(manifest_digest: str, view: str, weights_sha256: str, trunk_features: bool = False) -> str:
    """The name of the shard folder of a manifest embedded with a view and weights (16 hex digits).

    Args:
        manifest_digest: the manifest's digest (its studies, order and batches).
        view: the view spec.
        weights_sha256: the encoder's weights hash.
        trunk_features: whether the shards also hold the image trunk's features.
    """
    key = {"manifest": manifest_digest, "view": view, "weights": weights_sha256}
    if trunk_features:  # shards without them do not serve a fused guard
        key["trunk"] = True
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _next_landed(landed: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    """The next embedded batch of the job; a failure on the cluster becomes one RuntimeError line."""
    try:
        return next(landed, None)
    except Exception as exc:  # Ray's errors (a task that raised, the no-progress timeout) are not ours to show raw
        if type(exc).__module__.split(".", 1)[0] != "ray":
            raise
        lines = [line for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1].strip() if lines else type(exc).__name__
        raise RuntimeError(f"the embedding job on Ray failed ({type(exc).__name__}): {cause[:300]}") from exc


class RayScreener(Screener):
    """Screens a folder with the embedding job on Ray and the gate in this process.

    Args:
        *args: as :class:`~tanl_guard.pipeline.Screener` (guard, config, dicom_config, audit, ...).
        encoder_spec: the spec of the guard's encoder, resolved again by every encoder actor.
        ray_config: cluster address, workers, reservations.
        **kwargs: as :class:`~tanl_guard.pipeline.Screener`.

    After :meth:`run`, :attr:`job_plan` lists the operators of the embedding job (after Ray's fusion),
    :attr:`job_stats` holds Ray Data's statistics of it, and :attr:`embedded_batches` counts the batches it embedded.
    """

    def __init__(self, *args: Any, encoder_spec: str, ray_config: RayEngineConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.audit is not None and self.audit.wants_thumbnails:
            raise ValueError("thumbnails need the pixels in this process: use the local engine for them")
        if getattr(self.guard, "feature_source", None) == "external":
            raise ValueError("a feature gate that reads caller-supplied features cannot screen a folder")
        self.encoder_spec = encoder_spec
        self.ray_config = ray_config if ray_config is not None else RayEngineConfig()
        self.job_stats = ""
        self.job_plan: list[str] = []
        self.embedded_batches = 0

    def _settings(self) -> EmbeddingSettings:
        import torch

        from ...privacy import resolve_salt

        weights = str(getattr(self.guard.encoder, "weights_sha256", "") or "")
        threads = self.ray_config.encoder_threads or torch.get_num_threads()
        # The salt is resolved here: a worker node has no salt file of its own, and its keys must match ours.
        config = replace(self.dicom_config, salt=resolve_salt(self.dicom_config.salt))
        trunk = getattr(self.guard, "feature_detector", None) is not None and self.guard.feature_source == "trunk"
        return EmbeddingSettings(self.encoder_spec, weights, str(self.config.view), config, threads,
                                 trunk_features=trunk)

    def _embedded_batches(self, manifest: Any, work: Path, after_batch: int, report: Any) -> Iterator[tuple[Any, Any]]:
        """Yield ``(decoded batch without views, features)`` in batch order after ``after_batch``.

        Args:
            manifest: the run's manifest.
            work: the work directory.
            after_batch: the last committed batch.
            report: the run's report (``seconds["encode"]`` counts the wait for the cluster, ``ingest`` the reads).
        """
        import torch

        settings = self._settings()
        store = ShardStore(work / "embeddings" / embedding_key(manifest.digest, settings.view,
                                                               settings.weights_sha256, settings.trunk_features))
        cfg = self.ray_config
        with ray_session(cfg.address, cfg.local_cpus, cfg.stall_timeout_s) as ray:
            job = EmbeddingJob(ray, manifest, store, settings, cfg)
            missing = job.missing(after_batch)
            done = np.ones(manifest.n_batches, dtype=bool)
            done[missing] = False
            landed = job.run(missing)
            log.info("embedding %d of %d batches on %d encoder workers", len(missing),
                     manifest.n_batches - after_batch - 1, cfg.workers)
            try:
                for batch_id in range(after_batch + 1, manifest.n_batches):
                    if self._stop.is_set():
                        return
                    start = time.perf_counter()
                    while not done[batch_id]:  # outputs come in batch order: this waits for this batch only
                        row = _next_landed(landed)
                        if row is None:
                            raise RuntimeError(f"the embedding job ended without embedding batch {batch_id}")
                        done[int(row["batch_id"])] = True
                        self.embedded_batches += 1
                    report.seconds["encode"] += time.perf_counter() - start
                    start = time.perf_counter()
                    shard = store.read(batch_id)
                    if settings.weights_sha256 and shard.weights_sha256 != settings.weights_sha256:
                        raise RuntimeError(f"the shard of batch {batch_id} was embedded with other weights")
                    batch = batch_from_json(shard.batch)
                    if shard.features.shape[0] != batch.n_views:
                        raise RuntimeError(f"the shard of batch {batch_id} is incomplete")
                    features = None
                    if batch.n_views:
                        trunk = torch.from_numpy(shard.trunk) if shard.trunk is not None else None
                        features = ImageEncoding(torch.from_numpy(shard.features), trunk)
                    report.seconds["ingest"] += time.perf_counter() - start
                    yield batch, features
            finally:
                landed.close()
                self.job_stats, self.job_plan = job.stats, list(job.plan)
                if job.plan:  # what ran: decode and embedding stay two operators (fusion would serialise them)
                    log.info("embedding job stages: %s", " | ".join(job.plan))
