# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Series -> 2D views for an image encoder, with per-view provenance and the final outcome of every file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from tanl_guard._optional import optional_import
from tanl_guard.dicom.config import DicomScanConfig
from tanl_guard.dicom.decode import DecodeError, decode_frames
from tanl_guard.dicom.outcomes import FileOutcome, FileStatus, Reason
from tanl_guard.dicom.quiet import quiet_pydicom
from tanl_guard.dicom.records import InstanceRecord, ScanResult, SeriesRecord
from tanl_guard.view_spec import ViewSpec

__all__ = ["ViewProvenance", "SeriesViews", "StudyViews", "load_series_views", "iter_study_views", "resolve_outcomes"]

_MIP_CHUNK = 8  # frames decoded per call while projecting


@dataclass(frozen=True)
class ViewProvenance:
    """Where one view came from.

    Attributes:
        kind: ``"slice"`` (a single-frame file of the series), ``"frame"`` (a frame of a multi-frame file) or
            ``"mip"``.
        path_key: salted hash of the file's relative path (for a MIP, of the middle file used).
        frame: 0-based frame index within that file (-1 for a MIP).
        index: 0-based position in the series' ordered list of slices/frames (-1 for a MIP).
        total: number of slices/frames in the series.
        fraction: ``index / (total - 1)`` (0.5 for a MIP or a single image).
        frames_used: frames that went into the view (1, or the MIP's count).
    """

    kind: str
    path_key: str
    frame: int
    index: int
    total: int
    fraction: float
    frames_used: int = 1


@dataclass(frozen=True)
class SeriesViews:
    """The views of one series, or why there are none.

    Attributes:
        series_key: salted hash of the Series Instance UID.
        study_key: salted hash of the Study Instance UID.
        modality: Modality of the series.
        views: float32 arrays in [0, 1], (H, W) monochrome or (H, W, 3) colour.
        provenance: one entry per view.
        status: ``viewed`` or ``unreadable``.
        reason: reason category when unreadable.
        detail: explanation when unreadable.
        outcomes: final outcome of every file of the series that was pending after the scan.
        seconds: time spent decoding.
        conflicts: files of the series that share an SOP Instance UID with a file of other content
            (``SeriesRecord.conflicts``).
    """

    series_key: str
    study_key: str
    modality: str
    views: tuple[np.ndarray, ...]
    provenance: tuple[ViewProvenance, ...]
    status: FileStatus
    reason: Reason | None = None
    detail: str = ""
    outcomes: tuple[FileOutcome, ...] = ()
    seconds: float = 0.0
    conflicts: int = 0

    @property
    def ok(self) -> bool:
        """True if the series produced at least one view."""
        return self.status is FileStatus.VIEWED

    def without_views(self) -> SeriesViews:
        """A copy without the arrays (for keeping outcomes after scoring)."""
        return replace(self, views=())


@dataclass(frozen=True)
class StudyViews:
    """The series views of one study.

    Attributes:
        study_key: salted hash of the Study Instance UID.
        patient_key: salted hash of the Patient ID.
        series: one entry per image series of the study.
    """

    study_key: str
    patient_key: str
    series: tuple[SeriesViews, ...]


def _outcome(inst: InstanceRecord, series: SeriesRecord, status: FileStatus, reason: Reason | None, detail: str) -> FileOutcome:
    return FileOutcome(inst.rel_path, inst.path_key, status, reason, detail, series.study_key, series.series_key)


def _nearest(target: int, n: int) -> Iterator[int]:
    yield target
    for d in range(1, n):
        if target + d < n:
            yield target + d
        if target - d >= 0:
            yield target - d


class _Loader:
    def __init__(self, series: SeriesRecord, config: DicomScanConfig) -> None:
        self.series = series
        self.config = config
        self.failed: dict[str, DecodeError] = {}
        self.checked: set[str] = set()  # files whose codestream headers were checked already

    def decode(self, inst: InstanceRecord, frames: list[int]) -> list[tuple[int, np.ndarray]]:
        expected = None if inst.rel_path in self.checked else (inst.rows, inst.columns, inst.samples)
        self.checked.add(inst.rel_path)
        try:
            return list(decode_frames(
                self.series.root / inst.rel_path, inst.transfer_syntax, frames, self.config.decoding_plugins,
                inst.forced, expected=expected,
                max_header_bytes=self.config.max_header_bytes, max_header_elements=self.config.max_header_elements,
                max_side=self.config.max_view_side,
            ))
        except DecodeError as exc:
            self.failed[inst.rel_path] = exc
        except Exception:  # never let one file stop the series (the exception's text may hold the path)
            self.failed[inst.rel_path] = DecodeError(Reason.DECODE_ERROR, "unexpected error while decoding")
        return []

    def too_many_failures(self) -> bool:
        return len(self.failed) > self.config.max_failed_instances


def _slices(loader: _Loader, units: list[tuple[InstanceRecord, int]], spec: ViewSpec) -> tuple[list, list]:
    views: list[np.ndarray] = []
    prov: list[ViewProvenance] = []
    used: set[int] = set()
    n = len(units)
    for target in spec.positions(n):
        for idx in _nearest(target, n):
            if idx in used or loader.too_many_failures():
                continue
            inst, frame = units[idx]
            if inst.rel_path in loader.failed:
                continue
            got = loader.decode(inst, [frame])
            if not got:
                continue
            used.add(idx)
            views.append(got[0][1])
            kind = "frame" if inst.frames > 1 else "slice"
            prov.append(ViewProvenance(kind, inst.path_key, frame, idx, n, idx / (n - 1) if n > 1 else 0.5))
            break
        if loader.too_many_failures():
            break
    order = sorted(range(len(views)), key=lambda i: prov[i].index)
    return [views[i] for i in order], [prov[i] for i in order]


def _mip(loader: _Loader, units: list[tuple[InstanceRecord, int]], config: DicomScanConfig) -> tuple[list, list]:
    shapes: dict[tuple[int, int, int], int] = {}
    for inst, _ in units:
        key = (inst.rows, inst.columns, inst.samples)
        shapes[key] = shapes.get(key, 0) + 1
    shape = max(shapes, key=lambda k: shapes[k])
    same = [u for u in units if (u[0].rows, u[0].columns, u[0].samples) == shape]
    budget = max(1, config.max_pixels_per_series // max(1, shape[0] * shape[1] * shape[2]))
    if len(same) > budget:  # evenly spaced subset that fits the decoding budget
        same = [same[int(i * (len(same) - 1) / max(1, budget - 1) + 0.5)] for i in range(budget)] if budget > 1 else [same[len(same) // 2]]
    by_file: dict[str, tuple[InstanceRecord, list[int]]] = {}
    for inst, frame in same:
        by_file.setdefault(inst.rel_path, (inst, []))[1].append(frame)
    acc: np.ndarray | None = None
    used = 0
    for inst, frames in by_file.values():
        if loader.too_many_failures():
            break
        frames = sorted(set(frames))
        for start in range(0, len(frames), _MIP_CHUNK):  # bounded memory: a few frames at a time
            if inst.rel_path in loader.failed:
                break
            for _, arr in loader.decode(inst, frames[start:start + _MIP_CHUNK]):
                if acc is not None and arr.shape != acc.shape:
                    continue
                acc = arr if acc is None else np.maximum(acc, arr)
                used += 1
    if acc is None:
        return [], []
    mid = same[len(same) // 2][0]
    return [acc], [ViewProvenance("mip", mid.path_key, -1, -1, len(units), 0.5, used)]


def load_series_views(
    series: SeriesRecord, view_spec: ViewSpec | str | None = None, config: DicomScanConfig | None = None
) -> SeriesViews:
    """Decode the views of one series. Never raises for a bad file: failures become reasons.

    A file that fails to decode is replaced by the nearest other slice or frame, up to
    ``config.max_failed_instances`` failures; then the series is reported unreadable.

    Args:
        series: a series from :func:`scan_folder`.
        view_spec: ``"slices:K"``, ``"mid"``, ``"mip"`` or a ViewSpec; ``None`` uses ``config.view``.
        config: settings (limits, decoder allow-list); defaults if ``None``.
    """
    optional_import("pydicom", "dicom", "decoding DICOM pixel data")
    start = time.perf_counter()
    config = config or DicomScanConfig()
    spec = ViewSpec.parse(view_spec) if view_spec is not None else config.view
    empty = SeriesViews(series.series_key, series.study_key, series.modality, (), (), FileStatus.UNREADABLE,
                        conflicts=series.conflicts)
    with_pixels = [i for i in series.instances if i.has_pixels]
    if series.issue is not None or not with_pixels:
        reason = series.issue or Reason.NO_PIXEL_DATA
        detail = series.issue_detail or "no image object with Pixel Data"
        outs = tuple(_outcome(i, series, FileStatus.UNREADABLE, reason, detail) for i in series.instances)
        return replace(empty, reason=reason, detail=detail, outcomes=outs, seconds=time.perf_counter() - start)

    units = [(inst, f) for inst in with_pixels for f in range(inst.frames)]
    loader = _Loader(series, config)
    with quiet_pydicom():
        try:
            if spec.kind == "mip":
                views, prov = _mip(loader, units, config)
            else:
                views, prov = _slices(loader, units, spec)
        except Exception:  # defensive: a bug in one series must not stop the screen
            views, prov = [], []
            loader.failed.setdefault(with_pixels[0].rel_path,
                                     DecodeError(Reason.DECODE_ERROR, "unexpected error while making views"))

    outcomes = []
    first = next(iter(loader.failed.values()), None)
    for inst in with_pixels:
        err = loader.failed.get(inst.rel_path)
        if err is not None:
            outcomes.append(_outcome(inst, series, FileStatus.UNREADABLE, err.reason, err.detail))
        elif views:
            outcomes.append(_outcome(inst, series, FileStatus.VIEWED, None, ""))
        else:
            assert first is not None
            outcomes.append(_outcome(inst, series, FileStatus.UNREADABLE, first.reason,
                                     f"not decoded: other files of the series failed ({first.detail})"))
    if not views:
        assert first is not None
        return replace(empty, reason=first.reason, detail=first.detail, outcomes=tuple(outcomes),
                       seconds=time.perf_counter() - start)
    return SeriesViews(series.series_key, series.study_key, series.modality, tuple(views), tuple(prov),
                       FileStatus.VIEWED, None, "", tuple(outcomes), time.perf_counter() - start, series.conflicts)


def iter_study_views(
    scan: ScanResult, view_spec: ViewSpec | str | None = None, config: DicomScanConfig | None = None
) -> Iterator[StudyViews]:
    """Yield the views of one study at a time, so that memory holds a single study's arrays.

    Args:
        scan: the result of :func:`scan_folder`.
        view_spec: view spec for every series (``None``: ``config.view``).
        config: settings; defaults if ``None``.
    """
    for study in scan.studies:
        yield StudyViews(study.study_key, study.patient_key,
                         tuple(load_series_views(s, view_spec, config) for s in study.series))


def resolve_outcomes(
    scan: ScanResult, view_spec: ViewSpec | str | None = None, config: DicomScanConfig | None = None
) -> tuple[ScanResult, list[SeriesViews]]:
    """Decode every series, drop the arrays and return the scan with final outcomes (for reports and tests).

    Args:
        scan: the result of :func:`scan_folder`.
        view_spec: view spec (``None``: ``config.view``).
        config: settings; defaults if ``None``.
    """
    done = [sv.without_views() for study in iter_study_views(scan, view_spec, config) for sv in study.series]
    return scan.resolve(done), done
