# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The embedding job: Ray Data decodes the missing manifest batches on CPU tasks and embeds them on an actor pool.

``manifest batches -> Map(decode) on tasks -> MapBatches(EncoderActor) on a pool of ``workers`` actors -> shards``.
Each manifest batch is one row end to end: it is decoded whole, embedded in one encoder call (the chunking the
local engine uses, so both engines get the same embeddings) and written as one shard. The job is stateless and
idempotent: it is built from the batches whose shard is missing, and a batch retried after a dead actor or task
gives the same shard. The manifest table goes to the object store once; decode tasks slice their rows from it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actor import EncoderActor
from .config import RayEngineConfig
from .shards import ShardStore

__all__ = ["EmbeddingJob", "EmbeddingSettings", "DECODE_STAGE", "ENCODE_STAGE"]

#: The names of the two stages in Ray Data's plan and statistics (``Map(...)``, ``MapBatches(...)``).
DECODE_STAGE, ENCODE_STAGE = "decode_manifest_batch", "EncoderActor"
_MAX_BLOCKS = 4096  # input blocks (each a run of consecutive batches): enough to spread decoding, few to schedule


@dataclass(frozen=True)
class EmbeddingSettings:
    """What the job embeds with.

    Attributes:
        encoder_spec: the encoder spec the actors resolve.
        weights_sha256: the weights hash the driver's encoder has (actors must load the same).
        view: the view spec.
        dicom_config: decoding settings (its salt resolved in the driver, so every node hashes alike).
        threads: torch intra-op threads per actor.
        trunk_features: also compute the image trunk's features in the same forward pass (a fused guard's
            feature gate reads them).
    """

    encoder_spec: str
    weights_sha256: str
    view: str
    dicom_config: Any
    threads: int
    trunk_features: bool = False


def decode_manifest_batch(row: dict[str, Any], table: Any, view: str, dicom_config: Any) -> dict[str, Any]:
    """Decode one manifest batch (a Ray Data ``map`` function; runs on a CPU task).

    Args:
        row: ``batch_id``, ``start`` and ``stop`` (its rows in the manifest table).
        table: the manifest's Arrow table (from the object store; sliced, not copied).
        view: the view spec.
        dicom_config: decoding settings.
    """
    from ...pipeline.ingest import decode_batch
    from ...pipeline.manifest import ManifestRow

    if not hasattr(table, "slice"):  # an object reference inside the arguments: Ray does not resolve those
        import ray

        table = ray.get(table)
    start, stop = int(row["start"]), int(row["stop"])
    rows = [ManifestRow.from_dict(r) for r in table.slice(start, stop - start).to_pylist()]
    return {"batch_id": int(row["batch_id"]), "decoded": decode_batch(int(row["batch_id"]), rows, view, dicom_config)}


class EmbeddingJob:
    """The Ray Data pipeline that writes the missing shards of a manifest.

    Args:
        ray: the ``ray`` module (connected).
        manifest: the :class:`~tanl_guard.pipeline.manifest.Manifest`.
        store: the shard folder of this manifest, view and encoder.
        settings: encoder, view, decoding and threads.
        config: workers and reservations.
    """

    def __init__(self, ray: Any, manifest: Any, store: ShardStore, settings: EmbeddingSettings,
                 config: RayEngineConfig) -> None:
        self.ray = ray
        self.manifest = manifest
        self.store = store
        self.settings = settings
        self.config = config
        self.stats: str = ""
        self.plan: list[str] = []

    def missing(self, after_batch: int = -1) -> np.ndarray:
        """The batches after ``after_batch`` whose shard is not written, in batch order.

        Args:
            after_batch: the last batch the gate has committed.
        """
        done = np.zeros(self.manifest.n_batches, dtype=bool)
        for batch_id in self.store.done():
            if batch_id < len(done):
                done[batch_id] = True
        done[: max(after_batch + 1, 0)] = True
        return np.flatnonzero(~done)

    def reservations(self) -> tuple[float, float]:
        """CPUs and GPUs per encoder actor on the connected cluster (see :meth:`RayEngineConfig.reservations`)."""
        resources = self.ray.cluster_resources()
        return self.config.reservations(float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))

    def dataset(self, batch_ids: Sequence[int]) -> Any:
        """The (lazy) Ray dataset that decodes, embeds and writes the given batches.

        Args:
            batch_ids: manifest batches, in batch order.
        """
        import pyarrow as pa

        ray = self.ray
        ids = np.asarray(batch_ids, dtype=np.int64)
        bounds = np.asarray([self.manifest.studies_before(b) for b in range(self.manifest.n_batches + 1)],
                            dtype=np.int64)
        per_block = max(1, math.ceil(len(ids) / _MAX_BLOCKS))
        blocks = [pa.table({"batch_id": chunk, "start": bounds[chunk], "stop": bounds[chunk + 1]})
                  for chunk in np.array_split(ids, max(1, math.ceil(len(ids) / per_block)))]
        cpus, gpus = self.reservations()
        settings = self.settings
        table = ray.put(self.manifest.table)
        ds = ray.data.from_arrow(blocks)
        ds = ds.map(decode_manifest_batch, fn_kwargs={"table": table, "view": settings.view,
                                                      "dicom_config": settings.dicom_config},
                    num_cpus=self.config.decode_cpus)
        return ds.map_batches(
            EncoderActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=self.config.workers),
            num_cpus=cpus, num_gpus=gpus,
            fn_constructor_kwargs={"encoder_spec": settings.encoder_spec, "device": "cuda" if gpus else "cpu",
                                   "threads": settings.threads, "shard_dir": str(self.store.folder),
                                   "weights_sha256": settings.weights_sha256,
                                   "trunk_features": settings.trunk_features},
        )

    @staticmethod
    def physical_plan(ds: Any) -> list[str]:
        """The operators Ray will execute for ``ds``, after its optimizer fused what it fuses, source first.

        Args:
            ds: a Ray dataset.
        """
        text = io.StringIO()
        with contextlib.redirect_stdout(text):  # Dataset.explain prints; stdout may carry the JSON lines
            ds.explain()
        section = text.getvalue().split("Physical Plan (Optimized)", 1)[-1].split("--------", 1)[-1]
        operators = [line.strip().lstrip("+-").strip() for line in section.splitlines() if line.strip()]
        return operators[::-1]  # explain prints the last operator first

    def run(self, batch_ids: Sequence[int]) -> Iterator[dict[str, Any]]:
        """Embed the given batches; yield ``{"batch_id", "views", "seconds", "worker"}`` per batch as it lands.

        Args:
            batch_ids: manifest batches without a shard, in batch order (outputs come in this order).
        """
        if len(batch_ids) == 0:
            return
        ds = self.dataset(batch_ids)
        self.plan = self.physical_plan(ds)
        try:
            # One block per embedded batch, handed over as soon as it lands (iter_rows would wait for 256 rows).
            for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                for i in range(len(block["batch_id"])):
                    yield {key: value[i].item() for key, value in block.items()}
        finally:
            try:
                self.stats = ds.stats()
            except Exception:  # statistics are diagnostics: never the reason a run fails
                self.stats = ""
