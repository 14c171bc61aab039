# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Embedding shards: one Parquet file per manifest batch, written once, atomically, by whichever worker embeds it.

A shard holds one row per view (``batch_id``, ``position`` of its study in the stream, ``study``, ``series``,
``view`` index, ``embedding``) and, in the file's metadata, the weights hash of the encoder and the decoded batch
without its pixels (series, statuses, reasons, file outcomes by hashed key): all the gate needs to judge the batch
without decoding it again. Shards live in a folder per embedding key (manifest, view and weights), so a rerun
embeds exactly the batches whose file is missing; a retried task that finds its shard written leaves it as it is.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._optional import optional_import
from ...guard.state_file import atomic_write_bytes

__all__ = ["EmbeddingShard", "ShardStore", "SHARD_FORMAT", "batch_to_json", "batch_from_json"]

SHARD_FORMAT = "tanl_guard.embeddings.v1"
_META_KEY = b"tanl_guard"
_NAME = re.compile(r"^batch-(\d{8,})\.parquet$")


@dataclass(frozen=True)
class EmbeddingShard:
    """The embeddings of one manifest batch.

    Attributes:
        batch_id: the manifest batch.
        features: (V, D) float32 embeddings, in the batch's view order.
        positions: (V,) stream position of each view's study.
        weights_sha256: hash of the encoder weights that produced them.
        batch: the decoded batch without pixels (JSON-safe, as the decode stage described it).
        worker: the process id of the encoder actor that wrote it (diagnostics: which actor embedded what).
        trunk: (V, F) float32 image-trunk features from the same forward pass (a fused guard's feature gate
            reads them), or None when the job did not compute them.
    """

    batch_id: int
    features: np.ndarray
    positions: np.ndarray
    weights_sha256: str
    batch: dict[str, Any]
    worker: int = 0
    trunk: np.ndarray | None = None


class ShardStore:
    """The shard folder of one embedding key.

    Args:
        folder: the folder (created on the first write).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, batch_id: int) -> Path:
        """The shard file of a batch.

        Args:
            batch_id: the manifest batch.
        """
        return self.folder / f"batch-{int(batch_id):08d}.parquet"

    def done(self) -> set[int]:
        """The batches whose shard is written (temporary files of an interrupted write do not count)."""
        if not self.folder.is_dir():
            return set()
        found = set()
        for entry in os.scandir(self.folder):
            match = _NAME.match(entry.name)
            if match:
                found.add(int(match.group(1)))
        return found

    def write(self, batch_id: int, features: np.ndarray, positions: np.ndarray, studies: list[str],
              series: list[str], views: list[int], weights_sha256: str, batch: dict[str, Any],
              worker: int = 0, trunk: np.ndarray | None = None) -> Path:
        """Write a batch's shard atomically (temporary file, fsync, rename); an existing shard is kept.

        Args:
            batch_id: the manifest batch.
            features: (V, D) embeddings.
            positions: (V,) study positions of the views.
            studies: (V,) study keys of the views.
            series: (V,) series keys of the views.
            views: (V,) view index within its series.
            weights_sha256: the encoder's weights hash.
            batch: the decoded batch without pixels (JSON-safe).
            worker: the writing process's id (diagnostics).
            trunk: (V, F) image-trunk features of the same views, or None.
        """
        pa = optional_import("pyarrow", "ray", "--engine ray")
        pq = optional_import("pyarrow.parquet", "ray", "--engine ray")
        target = self.path(batch_id)
        if target.exists():  # a retried task: the first write stands (same manifest, view and weights)
            return target
        features = np.ascontiguousarray(features, dtype=np.float32)
        count, dim = features.shape if features.ndim == 2 else (0, 0)
        columns = {
            "batch_id": pa.array(np.full(count, int(batch_id), dtype=np.int64)),
            "position": pa.array(np.asarray(positions, dtype=np.int64)),
            "study": pa.array(list(studies), type=pa.string()),
            "series": pa.array(list(series), type=pa.string()),
            "view": pa.array(np.asarray(views, dtype=np.int32)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), max(dim, 1))
            if count else pa.array([], type=pa.list_(pa.float32(), 1)),
        }
        trunk_dim = None
        if trunk is not None:
            trunk = np.ascontiguousarray(trunk, dtype=np.float32)
            trunk_dim = int(trunk.shape[1]) if trunk.ndim == 2 else 0
            columns["trunk"] = (pa.FixedSizeListArray.from_arrays(pa.array(trunk.reshape(-1)), max(trunk_dim, 1))
                                if count else pa.array([], type=pa.list_(pa.float32(), 1)))
        table = pa.table(columns)
        meta = {"format": SHARD_FORMAT, "batch_id": int(batch_id), "weights_sha256": weights_sha256,
                "dim": int(dim), "trunk_dim": trunk_dim, "worker": int(worker), "batch": batch}
        table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(target, sink.getvalue().to_pybytes())
        return target

    def read(self, batch_id: int) -> EmbeddingShard:
        """Read a batch's shard.

        Args:
            batch_id: the manifest batch.

        Raises:
            FileNotFoundError: the shard is not written.
            ValueError: the file is not a shard of this batch.
        """
        pq = optional_import("pyarrow.parquet", "ray", "--engine ray")
        path = self.path(batch_id)
        table = pq.read_table(path, use_threads=False)  # a small file: a thread pool costs more than it gives
        raw = (table.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(raw) if raw else {}
        if meta.get("format") != SHARD_FORMAT or meta.get("batch_id") != int(batch_id):
            raise ValueError(f"{path.name} is not the embedding shard of batch {int(batch_id)}")
        count, dim = table.num_rows, int(meta["dim"])
        flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        # A writable copy: torch.from_numpy warns on Arrow's read-only buffers (and the gate may hold it a while).
        features = np.array(flat, dtype=np.float32).reshape(count, dim) if count else np.zeros((0, dim), np.float32)
        positions = table.column("position").to_numpy()
        trunk = None
        trunk_dim = meta.get("trunk_dim")
        if trunk_dim is not None:
            flat = table.column("trunk").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            trunk = np.array(flat, dtype=np.float32).reshape(count, trunk_dim) if count else \
                np.zeros((0, trunk_dim), np.float32)
        return EmbeddingShard(batch_id=int(batch_id), features=features, positions=positions,
                              weights_sha256=meta["weights_sha256"], batch=meta["batch"],
                              worker=int(meta.get("worker", 0)), trunk=trunk)


def _series_to_json(sv: Any) -> dict[str, Any]:
    return {
        "series_key": sv.series_key, "study_key": sv.study_key, "modality": sv.modality, "status": sv.status.value,
        "reason": sv.reason.value if sv.reason is not None else None, "detail": sv.detail,
        "conflicts": sv.conflicts, "seconds": sv.seconds,
        "provenance": [[p.kind, p.path_key, p.frame, p.index, p.total, p.fraction, p.frames_used]
                       for p in sv.provenance],
        "outcomes": [[o.rel_path, o.path_key, o.status.value, o.reason.value if o.reason is not None else None,
                      o.detail, o.study_key, o.series_key] for o in sv.outcomes],
    }


def _series_from_json(d: dict[str, Any]) -> Any:
    from ...dicom.outcomes import FileOutcome, FileStatus, Reason
    from ...dicom.series_views import SeriesViews, ViewProvenance

    return SeriesViews(
        series_key=d["series_key"], study_key=d["study_key"], modality=d["modality"], views=(),
        provenance=tuple(ViewProvenance(*p) for p in d["provenance"]), status=FileStatus(d["status"]),
        reason=Reason(d["reason"]) if d["reason"] is not None else None, detail=d["detail"],
        outcomes=tuple(FileOutcome(rel, key, FileStatus(status), Reason(reason) if reason is not None else None,
                                   detail, study, series)
                       for rel, key, status, reason, detail, study, series in d["outcomes"]),
        seconds=float(d["seconds"]), conflicts=int(d["conflicts"]),
    )


def batch_to_json(batch: Any) -> dict[str, Any]:
    """A decoded batch without its pixels, JSON-safe (what a shard keeps for the gate).

    Args:
        batch: a :class:`~tanl_guard.pipeline.ingest.DecodedBatch`.
    """
    return {"batch_id": int(batch.batch_id), "studies": [
        {"study_key": s.study_key, "position": int(s.position), "batch_id": int(s.batch_id),
         "scan_unreadable": list(s.scan_unreadable), "seconds": float(s.seconds),
         "series": [_series_to_json(sv) for sv in s.series]}
        for s in batch.studies]}


def batch_from_json(data: dict[str, Any]) -> Any:
    """The :class:`~tanl_guard.pipeline.ingest.DecodedBatch` (without views) that :func:`batch_to_json` described.

    Args:
        data: the JSON form.
    """
    from ...pipeline.ingest import DecodedBatch, DecodedStudy

    return DecodedBatch(int(data["batch_id"]), tuple(
        DecodedStudy(study_key=s["study_key"], position=int(s["position"]), batch_id=int(s["batch_id"]),
                     series=tuple(_series_from_json(sv) for sv in s["series"]),
                     scan_unreadable=tuple(s["scan_unreadable"]), seconds=float(s["seconds"]))
        for s in data["studies"]))
