# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The screening manifest: one row per study, its files, its place in the stream and its gate batch.

A manifest fixes, before any pixel is decoded, what is screened and how: every study (by salted key) with the
header facts needed to decode its series, its ``position`` in the screening order and its ``batch_id``. TANL's
final score of a batch uses that batch's own confident samples, so the batches are fixed here: whichever engine
decodes and embeds them (in process, worker processes, Ray), the same batches give the same verdicts.

- ``position``: the rank of a keyed hash of the seed and the study key (a deterministic shuffle: any process can
  compute a study's hash alone, so shards can be ordered by hash and merged without a global shuffle), or of the
  study key itself for ``as-found`` order (the folder's stable order).
- ``batch_id``: whole studies in position order, grouped until at least ``batch_size`` views are expected. The
  expected views come from the headers (``ViewSpec.positions`` over the frames of the series' usable files),
  so they are exact unless a file then fails to decode.
- Files unreadable already at the scan are kept: their reason categories per study (a study whose series are all
  unreadable still gets its verdict with these reasons) and, for files of no study, one orphan row each.

Stored as ``studies.parquet`` (sorted by position), ``orphans.parquet`` and ``manifest.json`` (settings, counts,
:attr:`Manifest.digest`) in a folder of the work directory. Patient names, IDs and raw UIDs are never stored: keys
are salted hashes; relative file paths are (decoding needs them), so the manifest stays in the work directory and
never goes to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._optional import optional_import
from ..dicom.config import DicomScanConfig
from ..dicom.outcomes import FileStatus, Reason
from ..dicom.records import InstanceRecord, ScanResult, SeriesRecord
from ..dicom.scan import scan_folder
from ..view_spec import ViewSpec

__all__ = [
    "MANIFEST_FORMAT",
    "ORDERS",
    "ManifestSettings",
    "ManifestRow",
    "OrphanFile",
    "Manifest",
    "build_manifest",
    "manifest_from_scan",
    "order_hash",
    "expected_views",
    "assign_batches",
]

MANIFEST_FORMAT = "tanl_guard.manifest.v1"
ORDERS = ("shuffled", "as-found")
_STUDIES, _ORPHANS, _META = "studies.parquet", "orphans.parquet", "manifest.json"
_INSTANCE_FIELDS = ("rel_path", "path_key", "sop_key", "instance_number", "position", "frames", "rows", "columns",
                    "samples", "photometric", "transfer_syntax", "has_pixels", "forced")


def _pa() -> Any:
    return optional_import("pyarrow", "dicom", "the screening manifest")


def _schemas() -> tuple[Any, Any]:
    pa = _pa()
    instance = pa.struct([
        ("rel_path", pa.string()), ("path_key", pa.string()), ("sop_key", pa.string()),
        ("instance_number", pa.int64()), ("position", pa.float64()), ("frames", pa.int64()), ("rows", pa.int64()),
        ("columns", pa.int64()), ("samples", pa.int64()), ("photometric", pa.string()),
        ("transfer_syntax", pa.string()), ("has_pixels", pa.bool_()), ("forced", pa.bool_()),
    ])
    series = pa.struct([
        ("series_key", pa.string()), ("modality", pa.string()), ("issue", pa.string()),
        ("issue_detail", pa.string()), ("conflicts", pa.int64()), ("rel_paths", pa.list_(pa.string())),
        ("instances", pa.list_(instance)),
    ])
    studies = pa.schema([
        ("study_key", pa.string()), ("position", pa.int64()), ("batch_id", pa.int64()),
        ("expected_views", pa.int64()), ("root", pa.dictionary(pa.int32(), pa.string())),
        ("scan_unreadable", pa.list_(pa.string())), ("series", pa.list_(series)),
    ])
    orphans = pa.schema([("path_key", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
    return studies, orphans


@dataclass(frozen=True)
class ManifestSettings:
    """What a manifest was built for; a stored manifest is reused only for the same settings.

    Attributes:
        root: the scanned folder (absolute).
        view: the view spec (``slices:K``, ``mid``, ``mip``) the expected view counts assume.
        batch_size: views per gate batch.
        order: ``shuffled`` or ``as-found``.
        seed: the seed of the shuffled order.
    """

    root: str
    view: str
    batch_size: int
    order: str = "shuffled"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        object.__setattr__(self, "view", str(ViewSpec.parse(self.view)))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-safe dict."""
        return {"root": self.root, "view": self.view, "batch_size": self.batch_size, "order": self.order,
                "seed": self.seed}


@dataclass(frozen=True)
class ManifestRow:
    """One study of the manifest: everything a worker needs to decode it, and its place in the stream.

    Attributes:
        study_key: salted hash of the Study Instance UID.
        position: 0-based rank in the screening order.
        batch_id: the gate batch (0-based, contiguous in position).
        expected_views: views the headers promise (0 when every series is unreadable already at the scan).
        root: the folder the relative paths start from.
        series: the study's series as scanned (instances in order, scan-time issues).
        scan_unreadable: reason categories of the study's files that were unreadable already at the scan.
    """

    study_key: str
    position: int
    batch_id: int
    expected_views: int
    root: str
    series: tuple[SeriesRecord, ...]
    scan_unreadable: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row as stored in Parquet (plain Python values)."""
        return {
            "study_key": self.study_key, "position": self.position, "batch_id": self.batch_id,
            "expected_views": self.expected_views, "root": self.root, "scan_unreadable": list(self.scan_unreadable),
            "series": [{
                "series_key": s.series_key, "modality": s.modality, "issue": s.issue.value if s.issue else None,
                "issue_detail": s.issue_detail, "conflicts": s.conflicts, "rel_paths": list(s.rel_paths),
                "instances": [{f: getattr(i, f) for f in _INSTANCE_FIELDS} for i in s.instances],
            } for s in self.series],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> ManifestRow:
        """A row read back from Parquet (``Table.to_pylist()``, a Ray Data row, or :meth:`to_dict`).

        Args:
            row: the row's values.
        """
        root = str(row["root"])
        series = tuple(
            SeriesRecord(
                series_key=str(s["series_key"]), study_key=str(row["study_key"]), modality=s["modality"] or "",
                instances=tuple(_instance(i) for i in _items(s["instances"])),
                issue=Reason(s["issue"]) if s["issue"] else None, issue_detail=s["issue_detail"] or "",
                rel_paths=tuple(str(p) for p in _items(s["rel_paths"])), root=Path(root),
                conflicts=int(s["conflicts"]),
            )
            for s in _items(row["series"])
        )
        return cls(study_key=str(row["study_key"]), position=int(row["position"]), batch_id=int(row["batch_id"]),
                   expected_views=int(row["expected_views"]), root=root, series=series,
                   scan_unreadable=tuple(str(r) for r in _items(row["scan_unreadable"])))


def _items(value: Any) -> list[Any]:
    """A list column's value as a list (None, a list, or the numpy array Ray Data and pandas give)."""
    return [] if value is None else list(value)


def _optional(value: Any, kind: type) -> Any:
    """An optional scalar as ``kind`` (None for nulls, also when pandas turned them into NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return kind(value)


def _instance(values: Mapping[str, Any]) -> InstanceRecord:
    return InstanceRecord(
        rel_path=str(values["rel_path"]), path_key=str(values["path_key"]), sop_key=str(values["sop_key"]),
        instance_number=_optional(values["instance_number"], int), position=_optional(values["position"], float),
        frames=int(values["frames"]), rows=int(values["rows"]), columns=int(values["columns"]),
        samples=int(values["samples"]), photometric=str(values["photometric"]),
        transfer_syntax=str(values["transfer_syntax"]), has_pixels=bool(values["has_pixels"]),
        forced=bool(values["forced"]),
    )


@dataclass(frozen=True)
class OrphanFile:
    """A file unreadable already at the scan that belongs to no study (it still gets a verdict line).

    Attributes:
        path_key: salted hash of its relative path.
        reason: the reason category.
        detail: the explanation (closed vocabulary, no values from the file).
    """

    path_key: str
    reason: str
    detail: str = ""


def order_hash(seed: int, study_key: str) -> int:
    """The keyed 64-bit hash that places a study in the shuffled order (computable by any process alone).

    Args:
        seed: the seed of the order.
        study_key: the study's salted key.
    """
    digest = hashlib.blake2b(study_key.encode("utf-8"), key=f"tanl-guard order {seed}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def expected_views(series: Sequence[SeriesRecord], view: ViewSpec | str) -> int:
    """Views the headers promise for a study's series (what a clean decode gives).

    Args:
        series: the study's series.
        view: the view spec.
    """
    spec = ViewSpec.parse(view)
    total = 0
    for s in series:
        frames = sum(i.frames for i in s.instances if i.has_pixels)
        if s.issue is None and frames:
            total += len(spec.positions(frames))
    return total


def assign_batches(views: Sequence[int], batch_size: int) -> list[int]:
    """Batch ids of studies in position order: whole studies until at least ``batch_size`` views, then the next.

    Args:
        views: the expected views of each study, in position order.
        batch_size: views per gate batch.
    """
    out, batch_id, held = [], 0, 0
    for n in views:
        out.append(batch_id)
        held += n
        if held >= batch_size:
            batch_id, held = batch_id + 1, 0
    return out


@dataclass
class Manifest:
    """A built or loaded manifest (an Arrow table sorted by position, the orphan files and the settings).

    Attributes:
        settings: what it was built for.
        table: the studies, one row per study, sorted by position (Arrow table).
        orphans: the unreadable files of no study, in the folder's order.
        scan_counts: files per status that were final at the scan (everything but ``pending``).
        files: files found.
        folder_key: SHA-256 of the sorted study keys (independent of order and batching: the folder's identity).
        digest: SHA-256 of the content (settings but the root, rows, orphans, counts): resume checks it.
        path: the folder it is stored in (None until written or when loaded from memory).
    """

    settings: ManifestSettings
    table: Any
    orphans: tuple[OrphanFile, ...] = ()
    scan_counts: dict[str, int] = field(default_factory=dict)
    files: int = 0
    folder_key: str = ""
    digest: str = ""
    path: Path | None = None
    _bounds: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = self._content_digest()
        import numpy as np

        batch = self.table.column("batch_id").to_numpy() if len(self.table) else np.zeros(0, dtype=np.int64)
        starts = np.flatnonzero(np.diff(batch, prepend=-1)) if len(batch) else np.zeros(0, dtype=np.int64)
        self._bounds = np.append(starts, len(batch)).astype(np.int64)

    # ------------------------------------------------------------------ size and access
    def __len__(self) -> int:
        return len(self.table)

    @property
    def n_batches(self) -> int:
        """Number of gate batches."""
        return len(self._bounds) - 1

    @property
    def expected_views(self) -> int:
        """Views the headers promise over the whole manifest."""
        return int(self.table.column("expected_views").to_numpy().sum()) if len(self.table) else 0

    def batch_rows(self, batch_id: int) -> list[ManifestRow]:
        """The rows of one batch, in position order.

        Args:
            batch_id: 0-based batch id.
        """
        if not 0 <= batch_id < self.n_batches:
            raise IndexError(f"batch {batch_id} is not in this manifest ({self.n_batches} batches)")
        start, stop = int(self._bounds[batch_id]), int(self._bounds[batch_id + 1])
        return [ManifestRow.from_dict(r) for r in self.table.slice(start, stop - start).to_pylist()]

    def iter_batches(self, after: int = -1) -> Iterator[tuple[int, list[ManifestRow]]]:
        """Yield ``(batch_id, rows)`` in batch order, from the batch after ``after``.

        Args:
            after: the last batch already done (-1: from the start).
        """
        for batch_id in range(max(after + 1, 0), self.n_batches):
            yield batch_id, self.batch_rows(batch_id)

    def studies_before(self, batch_id: int) -> int:
        """Studies in the batches before ``batch_id`` (the step count once batch ``batch_id - 1`` is done).

        Args:
            batch_id: a batch id (``n_batches`` for all studies).
        """
        return int(self._bounds[max(0, min(batch_id, self.n_batches))])

    # ------------------------------------------------------------------ identity
    def _content_digest(self) -> str:
        digest = hashlib.sha256(MANIFEST_FORMAT.encode())
        settings = {k: v for k, v in self.settings.to_json().items() if k != "root"}  # the folder may move
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for batch in self.table.drop_columns(["root"]).to_batches(max_chunksize=4096):
            for row in batch.to_pylist():
                digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
                digest.update(b"\n")
        for o in self.orphans:
            digest.update(json.dumps([o.path_key, o.reason, o.detail]).encode())
        digest.update(json.dumps(self.scan_counts, sort_keys=True).encode())
        return digest.hexdigest()

    # ------------------------------------------------------------------ storage
    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write the manifest to ``folder`` (``manifest.json`` last, atomically: it marks a complete manifest).

        Args:
            folder: the target folder (created; a previous manifest there is replaced).
        """
        import pyarrow.parquet as pq

        from ..guard.state_file import atomic_write_bytes  # torch-free readers (decode workers) never import it

        pa = _pa()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / _META).unlink(missing_ok=True)
        _, orphan_schema = _schemas()
        pq.write_table(self.table, folder / _STUDIES, row_group_size=65536)
        orphans = pa.Table.from_pylist([{"path_key": o.path_key, "reason": o.reason, "detail": o.detail}
                                        for o in self.orphans], schema=orphan_schema)
        pq.write_table(orphans, folder / _ORPHANS)
        meta = {"format": MANIFEST_FORMAT, "settings": self.settings.to_json(), "digest": self.digest,
                "folder_key": self.folder_key, "files": self.files, "scan_counts": self.scan_counts,
                "studies": len(self), "batches": self.n_batches, "expected_views": self.expected_views}
        atomic_write_bytes(folder / _META, json.dumps(meta, indent=1).encode())
        self.path = folder
        return folder

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Manifest:
        """Read a manifest written by :meth:`write`, verifying its digest.

        Args:
            folder: the manifest's folder.

        Raises:
            FileNotFoundError: no complete manifest there.
            ValueError: not a manifest of this version, or its content does not match its digest.
        """
        import pyarrow.parquet as pq

        folder = Path(folder)
        meta = json.loads((folder / _META).read_text())
        if meta.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{folder.name} holds no {MANIFEST_FORMAT} manifest")
        studies_schema, orphan_schema = _schemas()
        table = pq.read_table(folder / _STUDIES, schema=studies_schema)
        orphans = tuple(OrphanFile(**r) for r in pq.read_table(folder / _ORPHANS, schema=orphan_schema).to_pylist())
        manifest = cls(ManifestSettings(**meta["settings"]), table, orphans, dict(meta["scan_counts"]),
                       int(meta["files"]), meta["folder_key"], path=folder)
        if manifest.digest != meta["digest"]:
            raise ValueError(f"the manifest in {folder.name} was changed after it was written (digest mismatch)")
        return manifest

    @staticmethod
    def settings_in(folder: str | os.PathLike[str]) -> tuple[ManifestSettings, str] | None:
        """The settings and digest of a complete manifest stored in ``folder``, without reading its rows.

        Args:
            folder: a manifest folder.
        """
        try:
            meta = json.loads((Path(folder) / _META).read_text())
            if meta.get("format") != MANIFEST_FORMAT:
                return None
            return ManifestSettings(**meta["settings"]), str(meta["digest"])
        except (OSError, ValueError, TypeError, KeyError):
            return None


def manifest_from_scan(scan: ScanResult, settings: ManifestSettings) -> Manifest:
    """The manifest of a scanned folder (or of scanned files: :func:`tanl_guard.dicom.scan_files`).

    Args:
        scan: the scan result.
        settings: order, seed, view and batch size (``settings.root`` is stored with every row).
    """
    pa = _pa()
    studies_schema, _ = _schemas()
    unreadable: dict[str, list[str]] = {}
    orphans: list[OrphanFile] = []
    for o in scan.outcomes:
        if o.status is FileStatus.UNREADABLE:
            reason = o.reason.value if o.reason else "unreadable"
            if o.study_key is not None:
                unreadable.setdefault(o.study_key, []).append(reason)
            else:
                orphans.append(OrphanFile(o.path_key, reason, o.detail))
    keys = [s.study_key for s in scan.studies]
    if settings.order == "shuffled":
        rank = sorted(range(len(keys)), key=lambda i: (order_hash(settings.seed, keys[i]), keys[i]))
    else:
        rank = sorted(range(len(keys)), key=lambda i: keys[i])
    views = [expected_views(scan.studies[i].series, settings.view) for i in rank]
    rows = [
        ManifestRow(scan.studies[index].study_key, position, batch_id, n, settings.root, scan.studies[index].series,
                    tuple(unreadable.get(scan.studies[index].study_key, ()))).to_dict()
        for position, (index, n, batch_id) in enumerate(zip(rank, views, assign_batches(views, settings.batch_size)))
    ]
    table = pa.Table.from_pylist(rows, schema=studies_schema)
    scan_counts = Counter(o.status.value for o in scan.outcomes if o.status is not FileStatus.PENDING)
    folder_key = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    return Manifest(settings, table, tuple(orphans),  # orphans in the folder's order (by relative path)
                    dict(sorted(scan_counts.items())), len(scan.outcomes), folder_key)


def build_manifest(
    root: str | os.PathLike[str],
    dicom_config: DicomScanConfig | None = None,
    *,
    seed: int = 0,
    batch_size: int = 32,
    order: str = "shuffled",
    view: ViewSpec | str | None = None,
) -> Manifest:
    """Scan ``root`` (headers only) and build its manifest.

    Args:
        root: the folder of studies.
        dicom_config: scan settings (salt, limits); defaults if None.
        seed: the seed of the shuffled order.
        batch_size: views per gate batch.
        order: ``shuffled`` or ``as-found``.
        view: the view spec the expected view counts assume (default ``dicom_config.view``).
    """
    dicom_config = dicom_config or DicomScanConfig()
    view = view if view is not None else dicom_config.view
    scan = scan_folder(root, dicom_config)
    settings = ManifestSettings(str(scan.root), str(ViewSpec.parse(view)), batch_size, order, seed)
    return manifest_from_scan(scan, settings)
