# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Decoding the studies of a manifest into views, in worker processes, a bounded number of batches ahead.

:func:`decode_study` turns one manifest row into the views of its series (plain, picklable data: no guard, no
encoder, no TANL state), so any process can run it: the screening process itself, its decode workers, or Ray
tasks. :func:`iter_decoded_batches` yields the manifest's batches in batch order, decoded by a pool of ``workers``
processes one study per task (a large radiograph does not hold up a whole batch), at most ``prefetch`` batches
ahead of the one the caller is encoding: decoding overlaps encoding while memory stays bounded.

Workers only decode. Encoding stays in the caller (the encoder's output depends slightly on the batch it is given
and on the thread count, so each fixed batch is encoded once, in one place), and so does the guard's state.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..dicom.config import DicomScanConfig
from ..dicom.outcomes import FileOutcome, FileStatus, Reason
from ..dicom.series_views import SeriesViews, load_series_views
from ..view_spec import ViewSpec
from .manifest import Manifest, ManifestRow

__all__ = ["DecodedStudy", "DecodedBatch", "decode_study", "decode_batch", "iter_decoded_batches"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedStudy:
    """The decoded series of one study of the manifest (picklable; no guard state).

    Attributes:
        study_key: salted hash of the Study Instance UID.
        position: its rank in the screening order.
        batch_id: its gate batch.
        series: one entry per series (views, or why there are none, and the final outcome of every file).
        scan_unreadable: reason categories of its files unreadable already at the scan.
        seconds: time spent decoding it.
    """

    study_key: str
    position: int
    batch_id: int
    series: tuple[SeriesViews, ...]
    scan_unreadable: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def readable(self) -> bool:
        """True if at least one series gave views."""
        return any(sv.ok for sv in self.series)

    @property
    def n_views(self) -> int:
        """Views of its readable series (counted from their provenance, so also after :meth:`without_views`)."""
        return sum(len(sv.provenance) for sv in self.series if sv.ok)

    def views(self) -> list[np.ndarray]:
        """Its views, series by series, in the order the gate sees them."""
        return [v for sv in self.series if sv.ok for v in sv.views]

    def without_views(self) -> DecodedStudy:
        """A copy without the pixel arrays (what a gate needs once the views are embedded elsewhere)."""
        return replace(self, series=tuple(sv.without_views() for sv in self.series))


@dataclass(frozen=True)
class DecodedBatch:
    """The decoded studies of one gate batch, in position order.

    Attributes:
        batch_id: the batch's id in the manifest.
        studies: its studies, in position order.
    """

    batch_id: int
    studies: tuple[DecodedStudy, ...]

    @property
    def n_views(self) -> int:
        """Views the gate scores for this batch."""
        return sum(s.n_views for s in self.studies)

    @property
    def first_position(self) -> int:
        """Position of its first study (-1 for an empty batch)."""
        return self.studies[0].position if self.studies else -1

    @property
    def seconds(self) -> float:
        """Decoding time of its studies, summed (over workers, so it can exceed the wall time)."""
        return sum(s.seconds for s in self.studies)

    def views(self) -> list[np.ndarray]:
        """Every view of the batch, study by study, series by series: row ``i`` of its features is view ``i``."""
        return [v for s in self.studies for v in s.views()]

    def without_views(self) -> DecodedBatch:
        """A copy without the pixel arrays."""
        return replace(self, studies=tuple(s.without_views() for s in self.studies))


def decode_study(row: ManifestRow | Mapping[str, Any], view: ViewSpec | str | None = None,
                 dicom_config: DicomScanConfig | None = None) -> DecodedStudy:
    """Decode the views of one study. Never raises for a bad file: failures become reasons.

    Args:
        row: a manifest row, or its stored form (a Parquet or Ray Data row: see :meth:`ManifestRow.from_dict`).
        view: the view spec (default ``dicom_config.view``).
        dicom_config: decoding settings (limits, decoder allow-list); defaults if None.
    """
    start = time.perf_counter()
    row = row if isinstance(row, ManifestRow) else ManifestRow.from_dict(row)
    config = dicom_config or DicomScanConfig()
    spec = ViewSpec.parse(view) if view is not None else config.view
    series = tuple(load_series_views(s, spec, config) for s in row.series)
    return DecodedStudy(row.study_key, row.position, row.batch_id, series, row.scan_unreadable,
                        time.perf_counter() - start)


def decode_batch(batch_id: int, rows: Sequence[ManifestRow], view: ViewSpec | str | None = None,
                 dicom_config: DicomScanConfig | None = None) -> DecodedBatch:
    """Decode the studies of one batch in this process.

    Args:
        batch_id: the batch's id.
        rows: its manifest rows, in position order.
        view: the view spec (default ``dicom_config.view``).
        dicom_config: decoding settings; defaults if None.
    """
    return DecodedBatch(batch_id, tuple(decode_study(r, view, dicom_config) for r in rows))


_DIED = "the decoding process died (a decoder crash, or out of memory)"


def _died(row: ManifestRow, spec: str, config: DicomScanConfig) -> DecodedStudy:
    """The study whose decoding killed its worker, twice: every series that needed decoding is unreadable."""
    series = []
    for s in row.series:
        if s.issue is not None or not any(i.has_pixels for i in s.instances):
            series.append(load_series_views(s, spec, config))  # decided on the headers: nothing to decode
            continue
        outcomes = tuple(FileOutcome(i.rel_path, i.path_key, FileStatus.UNREADABLE, Reason.DECODE_ERROR, _DIED,
                                     s.study_key, s.series_key) for i in s.instances if i.has_pixels)
        series.append(SeriesViews(s.series_key, s.study_key, s.modality, (), (), FileStatus.UNREADABLE,
                                  Reason.DECODE_ERROR, _DIED, outcomes, conflicts=s.conflicts))
    return DecodedStudy(row.study_key, row.position, row.batch_id, tuple(series), row.scan_unreadable)


def _decode_alone(row: ManifestRow, spec: str, config: DicomScanConfig) -> DecodedStudy:
    """Decode one study in a process of its own, so that a study that kills its decoder is the only one hurt."""
    pool = _decode_pool(1)
    try:
        return pool.submit(decode_study, row, spec, config).result()
    except BrokenProcessPool:
        return _died(row, spec, config)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the screening process decides when to stop, workers just finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes started by a fork server: a clean process (no torch threads forked mid-flight) that has
    imported the decoders once."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:  # Windows
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def iter_decoded_batches(
    manifest: Manifest,
    view: ViewSpec | str | None = None,
    dicom_config: DicomScanConfig | None = None,
    *,
    workers: int = 0,
    prefetch: int = 2,
    after_batch: int = -1,
    stop: Callable[[], bool] | None = None,
) -> Iterator[DecodedBatch]:
    """Yield the manifest's batches decoded, in batch order.

    Args:
        manifest: the manifest.
        view: the view spec (default: the manifest's).
        dicom_config: decoding settings; defaults if None.
        workers: decode processes; 0 decodes in this process, one batch at a time, when it is asked for.
        prefetch: batches decoded (or being decoded) ahead of the one the caller holds; bounds memory to about
            ``prefetch + 1`` batches of views.
        after_batch: the last batch already done: decoding starts after it.
        stop: polled before each batch; when it returns True no further batch is yielded.
    """
    if workers < 0 or prefetch < 1:
        raise ValueError("workers must be >= 0 and prefetch >= 1")
    spec = ViewSpec.parse(view if view is not None else manifest.settings.view)  # parsed once, for every study
    config = dicom_config or DicomScanConfig()
    batches = manifest.iter_batches(after_batch)
    if workers == 0:
        for batch_id, rows in batches:
            if stop is not None and stop():
                return
            yield decode_batch(batch_id, rows, spec, config)
        return

    pool = _decode_pool(workers)
    window: deque[tuple[int, list[ManifestRow], list[Future[DecodedStudy]]]] = deque()

    def submit(rows: list[ManifestRow]) -> list[Future[DecodedStudy]]:
        nonlocal pool
        try:
            return [pool.submit(decode_study, r, spec, config) for r in rows]
        except BrokenProcessPool:  # a worker died since: a new pool (collect retries what the old one held)
            log.warning("a decode worker died: starting new ones")
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _decode_pool(workers)
            return [pool.submit(decode_study, r, spec, config) for r in rows]

    def fill() -> None:
        while len(window) < prefetch:
            nxt = next(batches, None)
            if nxt is None:
                return
            batch_id, rows = nxt
            window.append((batch_id, rows, submit(rows)))

    def collect(batch_id: int, rows: list[ManifestRow], futures: list[Future[DecodedStudy]],
                ) -> tuple[DecodedStudy, ...]:
        nonlocal pool
        try:
            return tuple(f.result() for f in futures)
        except BrokenProcessPool:  # a worker died: which study killed it is unknown, so each is retried alone
            log.warning("a decode worker died: decoding the studies of batch %d one process each", batch_id)
            pool.shutdown(wait=False, cancel_futures=True)
            studies = tuple(_decode_alone(r, spec, config) for r in rows)
            pool = _decode_pool(workers)
            for i, (later, pending, _) in enumerate(window):
                window[i] = (later, pending, submit(pending))
            return studies

    try:
        fill()
        while window:
            if stop is not None and stop():
                return
            batch_id, rows, futures = window.popleft()
            studies = collect(batch_id, rows, futures)
            fill()  # keep the workers busy while the caller encodes this batch
            yield DecodedBatch(batch_id, studies)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
