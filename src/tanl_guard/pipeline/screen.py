# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Screening a folder of DICOM studies: manifest, decode, encode, gate in fixed batches, verdict segments, audit,
O(1) checkpoints and exact resume.

The run is the ingest pipeline of :mod:`~tanl_guard.pipeline.manifest`, :mod:`~tanl_guard.pipeline.ingest`,
:mod:`~tanl_guard.pipeline.gating` and :mod:`~tanl_guard.pipeline.segments`: the manifest fixes the order and the
batches, worker processes decode ahead while this process encodes and gates, verdicts go to append-only segments
in the work directory, and a checkpoint holds only the guard state, the last committed batch and the hashes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dicom import DicomScanConfig
from ..guard import Guard, StudyVerdict, count_studies
from ..guard.verdicts import REJECT
from ..view_spec import ViewSpec
from .audit_sink import AuditSink, timed
from .checkpoint import load_checkpoint, save_checkpoint
from .gating import encode_batch, judge_batch, orphan_verdicts
from .ingest import DecodedBatch, iter_decoded_batches
from .manifest import ORDERS, Manifest, ManifestSettings, build_manifest
from .segments import SegmentWriter, clear_segments, read_verdicts

__all__ = ["ScreenConfig", "ScreenReport", "Screener", "work_dir_of"]

_MISMATCH = "the checkpoint was written for another folder or another screening order"


@dataclass(frozen=True)
class ScreenConfig:
    """How ``tanl-guard screen`` walks a folder.

    Attributes:
        view: the view spec (default ``slices:3``); a string (``slices:K``, ``mid``, ``mip``) is parsed once here.
        batch_size: views per gate batch; whole studies are batched together until at least this many views
            are expected from their headers (TANL's final scores use the confident samples of their own batch).
            The batches are fixed in the manifest, whatever decodes or embeds them.
        order: ``shuffled`` (default; seeded) or ``as-found``. A stream sorted by kind roughly doubles TANL's
            FPR95 (all ID first), so when the folder is ours to order we shuffle it; output order stays stable.
        seed: seed of the shuffled order (a keyed hash of the seed and each study key).
        checkpoint_every: write a checkpoint after at least this many newly screened studies (and at the end).
        state_path: the checkpoint file (None: no checkpoints, no resume).
        resume: continue from ``state_path``: committed batches are skipped, the guard state restored.
        work_dir: where the manifest and the verdict segments are kept (default: ``<state_path>.work``; without
            a state path, a temporary folder removed after the run). Holds relative file paths: keep it private.
        workers: decode worker processes (0: decode in this process, between batches).
        prefetch: batches decoded ahead of the one being encoded (bounds memory to ``prefetch + 1`` batches).
    """

    view: ViewSpec = field(default_factory=ViewSpec)
    batch_size: int = 32
    order: str = "shuffled"
    seed: int = 0
    checkpoint_every: int = 50
    state_path: str | None = None
    resume: bool = False
    work_dir: str | None = None
    workers: int = 0
    prefetch: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.view, str):
            object.__setattr__(self, "view", ViewSpec.parse(self.view))
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be >= 1")
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError("workers must be >= 0 and prefetch >= 1")
        if self.resume and not self.state_path:
            raise ValueError("resume needs a state_path")


def work_dir_of(config: ScreenConfig) -> Path | None:
    """The work directory a screening uses: ``config.work_dir``, else ``<state_path>.work``, else None.

    Args:
        config: the screening settings.
    """
    if config.work_dir:
        return Path(config.work_dir)
    return Path(f"{config.state_path}.work") if config.state_path else None


@dataclass
class ScreenReport:
    """What a screening produced.

    Attributes:
        studies: one verdict per study, in the folder's stable (as-found) order.
        orphans: unreadable files that belong to no study (``study`` is None).
        file_counts: files per final status.
        seconds: wall time per phase: ingest (the scan and the manifest, then waiting for decoded batches: with
            decode workers the decoding itself overlaps encoding), encode, gate, audit.
        views: views scored in this invocation.
        resumed: studies that were already done in the checkpoint resumed from.
        order_seed: the seed of the screening order (None for as-found).
        found: studies found in the folder (``len(studies)`` unless the run was stopped).
        stopped: the run was stopped by :meth:`Screener.request_stop` before every study was screened; the
            checkpoint holds what was done, and ``studies`` only the screened studies.
    """

    studies: list[StudyVerdict] = field(default_factory=list)
    orphans: list[StudyVerdict] = field(default_factory=list)
    file_counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("ingest", "encode", "gate", "audit"), 0.0))
    views: int = 0
    resumed: int = 0
    order_seed: int | None = None
    found: int = 0
    stopped: bool = False

    def lines(self) -> list[dict[str, Any]]:
        """The ``--json`` lines: every study, then the orphan files."""
        return [v.to_json() for v in self.studies] + [v.to_json() for v in self.orphans]

    def counts(self) -> dict[str, int]:
        """Studies per verdict and ``orphan_files`` (see :func:`tanl_guard.guard.count_studies`)."""
        counts = count_studies(self.studies + self.orphans).as_dict()
        del counts["studies"]
        return counts


class Screener:
    """Screens the studies of a folder through a :class:`~tanl_guard.guard.Guard`.

    Args:
        guard: the guard (it keeps the online state across calls; it stays in this process).
        config: order, batching, checkpoints, work directory, decode workers.
        dicom_config: scan and decode settings (salt, limits, codecs).
        audit: an :class:`~tanl_guard.pipeline.audit_sink.AuditSink` (an
            :class:`~tanl_guard.integrations.mlflow.AuditLogger`), or None; its calls count as ``seconds["audit"]``.
        progress: called as ``progress(done, total)`` after every study.
        on_verdict: called with every study verdict as soon as it is decided (screening order).
        checkpoint_metadata: JSON-safe values saved in every checkpoint (e.g. the audit run id to continue).
        on_batch: called as ``on_batch(step)`` after every gated batch (``step``: studies screened so far), e.g.
            to log the detector's state metrics at every batch.

    :meth:`request_stop` (safe from a signal handler or another thread) ends the run after the batch in hand:
    it is gated, checkpointed and reported, and the report says ``stopped``.
    """

    def __init__(
        self,
        guard: Guard,
        config: ScreenConfig | None = None,
        dicom_config: DicomScanConfig | None = None,
        audit: AuditSink | None = None,
        progress: Callable[[int, int], None] | None = None,
        on_verdict: Callable[[StudyVerdict], None] | None = None,
        checkpoint_metadata: dict[str, Any] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.guard = guard
        self.config = config if config is not None else ScreenConfig()
        self.dicom_config = dicom_config if dicom_config is not None else DicomScanConfig(view=self.config.view)
        self.audit = audit
        self.progress = progress
        self.on_verdict = on_verdict
        self.checkpoint_metadata = dict(checkpoint_metadata or {})
        self.on_batch = on_batch
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Stop after the batch in hand: gate it, checkpoint, and return the report (``stopped=True``)."""
        self._stop.set()

    # ------------------------------------------------------------------ helpers
    def _log_verdicts(self, report: ScreenReport, records: list[dict[str, Any]], step: int) -> None:
        if self.audit is not None:
            with timed(report.seconds, "audit"):
                self.audit.log_verdicts(records, step=step)

    def _manifest(self, root: str | Path, work: Path, checkpoint: dict[str, Any] | None) -> Manifest:
        """Build the folder's manifest, or reuse the stored one that a resumed checkpoint was written for."""
        cfg = self.config
        wanted = ManifestSettings(str(Path(root).absolute()), str(cfg.view), cfg.batch_size,
                                  cfg.order, cfg.seed)
        folder = work / "manifest"
        if checkpoint is not None and Manifest.settings_in(folder) == (wanted, checkpoint["manifest"]):
            try:  # resume continues the manifest it started: no rescan of a large archive
                return Manifest.read(folder)
            except (OSError, ValueError):
                pass  # damaged: rebuild it, and the digest check below decides
        manifest = build_manifest(root, self.dicom_config, seed=cfg.seed, batch_size=cfg.batch_size, order=cfg.order,
                                  view=cfg.view)
        if checkpoint is not None and manifest.digest != checkpoint["manifest"]:
            raise ValueError(_MISMATCH)
        manifest.write(folder)
        return manifest

    def _encoder_hash(self) -> str:
        return str(getattr(self.guard.encoder, "weights_sha256", "") or "")

    def _thumbnails(self, report: ScreenReport, batch: DecodedBatch, verdicts: list[StudyVerdict]) -> None:
        audit = self.audit
        if audit is None or not audit.wants_thumbnails:
            return
        thumbnails = {sv.series_key: sv.views[0] for s in batch.studies for sv in s.series if sv.ok}
        for verdict in verdicts:
            if verdict.verdict == REJECT:  # the least in-distribution series shows why
                worst = min((s for s in verdict.series if s.id_score is not None), key=lambda s: s.id_score)
                with timed(report.seconds, "audit"):
                    audit.log_thumbnail(thumbnails[worst.series], verdict.study)

    def _embedded_batches(self, manifest: Manifest, work: Path, after_batch: int,
                          report: ScreenReport) -> Iterator[tuple[DecodedBatch, Any]]:
        """The batches after ``after_batch``, decoded and embedded, in batch order: ``(batch, features)``.

        Here each batch is decoded (by the decode workers) and embedded in this process; the Ray engine
        (:class:`~tanl_guard.integrations.ray.RayScreener`) reads them from its embedding job instead. Stops early
        when :meth:`request_stop` was called.

        Args:
            manifest: the run's manifest.
            work: the work directory.
            after_batch: the last batch already committed.
            report: the run's report (its ``ingest`` and ``encode`` seconds are counted here).
        """
        cfg = self.config
        batches = iter_decoded_batches(manifest, cfg.view, self.dicom_config, workers=cfg.workers,
                                       prefetch=cfg.prefetch, after_batch=after_batch, stop=self._stop.is_set)
        try:
            while True:
                t = time.perf_counter()
                batch = next(batches, None)  # decoded ahead by the workers: this is the wait, not the decoding
                report.seconds["ingest"] += time.perf_counter() - t
                if batch is None:
                    return
                t = time.perf_counter()
                features = encode_batch(self.guard, batch)
                report.seconds["encode"] += time.perf_counter() - t
                yield batch, features
        finally:
            batches.close()

    # ------------------------------------------------------------------ run
    def run(self, root: str | Path) -> ScreenReport:
        """Screen every study under ``root`` and return the report (verdicts in a stable order)."""
        cfg = self.config
        work = work_dir_of(cfg)
        temporary = work is None
        if work is None:
            work = Path(tempfile.mkdtemp(prefix="tanl_guard_screen_"))
        try:
            return self._run(root, work)
        finally:
            if temporary:
                shutil.rmtree(work, ignore_errors=True)

    def _run(self, root: str | Path, work: Path) -> ScreenReport:
        cfg = self.config
        report = ScreenReport(order_seed=cfg.seed if cfg.order == "shuffled" else None)
        checkpoint_in = load_checkpoint(cfg.state_path) if cfg.resume else None
        with timed(report.seconds, "ingest"):
            manifest = self._manifest(root, work, checkpoint_in)
        report.found = len(manifest)
        if self.audit is not None:  # by digest of the salted keys only
            with timed(report.seconds, "audit"):
                self.audit.log_dataset("screened folder", manifest.folder_key, "screening",
                                       {"studies": len(manifest), "files": manifest.files})
        run = _ScreenRun(self, manifest, work, report)
        if checkpoint_in is not None:
            run.restore(checkpoint_in)
        else:
            run.start_fresh()
        run.screen()
        return run.finish()


@dataclass
class _Committed:
    """What a screening has committed so far: restored from a checkpoint and saved in the next one."""

    last_batch: int = -1
    step: int = 0
    file_counts: Counter = field(default_factory=Counter)
    verdict_counts: Counter = field(default_factory=Counter)  # plain-str keys: the checkpoint loads weights_only
    orphans_logged: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> _Committed:
        return cls(last_batch=int(checkpoint["last_batch"]), step=int(checkpoint["step"]),
                   file_counts=Counter(checkpoint.get("file_counts", {})),
                   verdict_counts=Counter(checkpoint.get("verdict_counts", {})),
                   orphans_logged=bool(checkpoint.get("orphans_logged", False)))

    def payload(self) -> dict[str, Any]:
        return {"last_batch": self.last_batch, "step": self.step, "file_counts": dict(self.file_counts),
                "verdict_counts": dict(self.verdict_counts), "orphans_logged": self.orphans_logged}


class _ScreenRun:
    """One :meth:`Screener.run` over one manifest: gates its batches in order, appends their verdicts to the
    segments, checkpoints every ``checkpoint_every`` studies, and reads the verdicts back for the report."""

    def __init__(self, screener: Screener, manifest: Manifest, work: Path, report: ScreenReport) -> None:
        self.screener, self.manifest, self.work, self.report = screener, manifest, work, report
        self.config, self.guard = screener.config, screener.guard
        self.segments = work / "segments"
        self.encoder_hash = screener._encoder_hash() if self.config.state_path else ""
        self.committed = _Committed()
        self.since_checkpoint = 0

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: its verdicts must all be in the segments, its guard state is loaded."""
        if checkpoint.get("encoder") and self.encoder_hash and checkpoint["encoder"] != self.encoder_hash:
            raise ValueError("the checkpoint was written with another encoder (its weights differ)")
        committed = sum(1 for _ in read_verdicts(self.segments, self.manifest.digest, checkpoint["last_batch"]))
        if committed != checkpoint["step"]:
            raise ValueError(f"the verdicts of the checkpoint are missing from {self.segments} ({committed} of "
                             f"{checkpoint['step']} studies): resume with the work directory it was written with")
        self.guard.load_state_dict(checkpoint["guard"])
        self.committed = _Committed.from_checkpoint(checkpoint)
        self.report.resumed = self.committed.step

    def start_fresh(self) -> None:
        """A fresh start: an older checkpoint would name verdicts that are no longer there."""
        clear_segments(self.segments)
        if self.config.state_path:
            Path(self.config.state_path).unlink(missing_ok=True)

    def screen(self) -> None:
        """Gate every batch not yet committed (until the manifest ends or a stop is requested), then the orphans."""
        screener, cfg = self.screener, self.config
        self.writer = SegmentWriter(self.segments, self.manifest.digest, self.committed.last_batch)
        batches = screener._embedded_batches(self.manifest, self.work, self.committed.last_batch, self.report)
        try:
            for batch, features in batches:
                self._commit(batch, features)
                if cfg.state_path and self.since_checkpoint >= cfg.checkpoint_every:
                    self._checkpoint()
            self.report.stopped = self.committed.last_batch < self.manifest.n_batches - 1
            self.report.orphans = orphan_verdicts(self.manifest.orphans)
            if self.report.orphans and not self.committed.orphans_logged:
                screener._log_verdicts(self.report, [o.to_json() for o in self.report.orphans], self.committed.step)
            self.committed.orphans_logged = True
            if cfg.state_path:
                self._checkpoint()
                if screener.audit is not None:
                    with timed(self.report.seconds, "audit"):
                        screener.audit.log_final_state(cfg.state_path)
        finally:
            batches.close()
            self.writer.close()

    def _commit(self, batch: DecodedBatch, features: Any) -> None:
        screener, report, committed = self.screener, self.report, self.committed
        with timed(report.seconds, "gate"):
            verdicts = judge_batch(self.guard, batch, features, self.manifest.studies_before(batch.batch_id) + 1)
        report.views += batch.n_views
        lines = [dict(v.to_json(), step=v.step) for v in verdicts]
        self.writer.write_batch(batch.batch_id, lines)
        committed.last_batch = batch.batch_id
        for verdict, line, study in zip(verdicts, lines, batch.studies, strict=True):
            committed.step = verdict.step
            self.since_checkpoint += 1
            committed.file_counts.update(o.status.value for sv in study.series for o in sv.outcomes)
            committed.verdict_counts[verdict.verdict.value] += 1
            screener._log_verdicts(report, [line], verdict.step)
            if screener.on_verdict is not None:
                screener.on_verdict(verdict)
            if screener.progress is not None:
                screener.progress(verdict.step, len(self.manifest))
        if batch.n_views and screener.on_batch is not None:
            screener.on_batch(committed.step)
        screener._thumbnails(report, batch, verdicts)

    def _checkpoint(self) -> None:
        cfg = self.config
        self.writer.sync()  # the segments first: a checkpoint commits only verdicts already on disk
        save_checkpoint(cfg.state_path, {
            "manifest": self.manifest.digest, "order": [cfg.order, cfg.seed], "batch_size": cfg.batch_size,
            "view": str(cfg.view), "encoder": self.encoder_hash, "guard": self.guard.state_dict(),
            "metadata": self.screener.checkpoint_metadata, **self.committed.payload(),
        })
        self.since_checkpoint = 0
        if self.screener.audit is not None:
            snapshot = self.guard.snapshot()
            with timed(self.report.seconds, "audit"):
                self.screener.audit.log_state(snapshot, step=self.committed.step)

    def finish(self) -> ScreenReport:
        """The report: file counts, and every committed verdict read back in the folder's stable order."""
        report = self.report
        report.file_counts = dict(sorted((Counter(self.manifest.scan_counts) + self.committed.file_counts).items()))
        lines = sorted((line for _, line in read_verdicts(self.segments, self.manifest.digest,
                                                          self.committed.last_batch)),
                       key=lambda line: line["study"])  # the folder's stable order: by study key, as scanned
        report.studies = [StudyVerdict.from_json(line) for line in lines]
        return report
