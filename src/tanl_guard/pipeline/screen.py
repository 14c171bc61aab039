# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Screening a folder of DICOM studies: ingest, gate in batches, verdicts, audit, checkpoints and resume."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..dicom import DicomScanConfig, FileStatus, ScanResult, SeriesViews, load_series_views, scan_folder
from ..guard import Guard, SeriesVerdict, StudyVerdict, count_studies, study_verdict
from ..guard.verdicts import ACCEPT, REJECT, UNREADABLE
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["ScreenConfig", "ScreenReport", "Screener"]

ORDERS = ("shuffled", "as-found")


@dataclass(frozen=True)
class ScreenConfig:
    """How ``tanl-guard screen`` walks a folder.

    Attributes:
        view: ``slices:K`` (default ``slices:3``), ``mid`` or ``mip``.
        batch_size: views per gate batch; whole studies are batched together until at least this many views
            wait (TANL's final scores use the confident samples of their own batch).
        order: ``shuffled`` (default; seeded) or ``as-found``. A stream sorted by kind roughly doubles TANL's
            FPR95 (all ID first), so when the folder is ours to order we shuffle it; output order stays stable.
        seed: seed of the shuffled order.
        checkpoint_every: write a checkpoint after at least this many newly screened studies (and at the end).
        state_path: the checkpoint file (None: no checkpoints, no resume).
        resume: continue from ``state_path``: done studies are skipped, the guard state restored.
    """

    view: str = "slices:3"
    batch_size: int = 32
    order: str = "shuffled"
    seed: int = 0
    checkpoint_every: int = 50
    state_path: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be >= 1")
        if self.resume and not self.state_path:
            raise ValueError("resume needs a state_path")


@dataclass
class ScreenReport:
    """What a screening produced.

    Attributes:
        studies: one verdict per study, in the folder's stable (as-found) order.
        orphans: unreadable files that belong to no study (``study`` is None).
        file_counts: files per final status.
        seconds: wall time per phase: ingest (scan + decode), encode, gate, audit.
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
        counts = count_studies(self.studies + self.orphans)
        return {ACCEPT: counts.accept, REJECT: counts.reject, UNREADABLE: counts.unreadable,
                "orphan_files": counts.orphan_files}


def _unreadable_series(sv: SeriesViews) -> SeriesVerdict:
    reason = sv.reason.value if sv.reason is not None else "unreadable"
    return SeriesVerdict(series=sv.series_key, modality=sv.modality, verdict=UNREADABLE,
                         reason=f"{reason}: {sv.detail}" if sv.detail else reason, conflicts=sv.conflicts)


class Screener:
    """Screens the studies of a folder through a :class:`~tanl_guard.guard.Guard`.

    Args:
        guard: the guard (it keeps the online state across calls).
        config: order, batching, checkpoints.
        dicom_config: scan and decode settings (salt, limits, codecs).
        audit: an audit logger (``log_verdicts``, ``log_state``, ``log_final_state``, ``log_dataset``,
            ``log_thumbnail``), or None.
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
        audit: Any = None,
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
    def _order(self, scan: ScanResult) -> list[int]:
        order = list(range(len(scan.studies)))
        if self.config.order == "shuffled":
            random.Random(self.config.seed).shuffle(order)
        return order

    @staticmethod
    def _folder_key(scan: ScanResult) -> str:
        keys = sorted(s.study_key for s in scan.studies)
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()

    def _timed_audit(self, report: ScreenReport, method: str, *args: Any, **kwargs: Any) -> None:
        if self.audit is None:
            return
        start = time.perf_counter()
        getattr(self.audit, method)(*args, **kwargs)
        report.seconds["audit"] += time.perf_counter() - start

    # ------------------------------------------------------------------ run
    def run(self, root: str | Path) -> ScreenReport:
        """Screen every study under ``root`` and return the report (verdicts in a stable order)."""
        cfg, guard = self.config, self.guard
        report = ScreenReport(order_seed=cfg.seed if cfg.order == "shuffled" else None)
        start = time.perf_counter()
        scan = scan_folder(root, self.dicom_config)
        report.seconds["ingest"] += time.perf_counter() - start
        folder_key = self._folder_key(scan)
        report.found = len(scan.studies)
        if self.audit is not None and hasattr(self.audit, "log_dataset"):  # by digest of the salted keys only
            self._timed_audit(report, "log_dataset", "screened folder", folder_key, "screening",
                              {"studies": len(scan.studies), "files": len(scan.outcomes)})

        done: dict[str, dict[str, Any]] = {}
        checkpoint_in: dict[str, Any] = {}
        if cfg.resume:
            checkpoint_in = load_checkpoint(cfg.state_path)
            if checkpoint_in["folder"] != folder_key or checkpoint_in["order"] != [cfg.order, cfg.seed]:
                raise ValueError("the checkpoint was written for another folder or another screening order")
            guard.load_state_dict(checkpoint_in["guard"])
            done = dict(checkpoint_in["verdicts"])
            report.resumed = len(done)

        # Final outcomes of the files decoded per study (counts only: checkpoints hold no file names).
        state: dict[str, Any] = {"step": len(done), "since_checkpoint": 0,
                                 "file_counts": Counter(checkpoint_in.get("file_counts", {})),
                                 "orphans_logged": bool(checkpoint_in.get("orphans_logged", False))}
        pending: list[tuple[str, list[SeriesViews]]] = []
        total = len(scan.studies)

        def finish(verdict: StudyVerdict, series: list[SeriesViews]) -> None:
            state["step"] += 1
            state["since_checkpoint"] += 1
            state["file_counts"].update(o.status.value for sv in series for o in sv.outcomes)
            line = verdict.to_json()
            line["step"] = state["step"]
            done[verdict.study] = line
            self._timed_audit(report, "log_verdicts", [line], step=state["step"])
            if self.on_verdict is not None:
                self.on_verdict(verdict)
            if self.progress is not None:
                self.progress(len(done), total)

        def flush() -> None:
            views = [v for _, series in pending for sv in series if sv.ok for v in sv.views]
            if views:
                t = time.perf_counter()
                features = guard.encode(views)  # embeddings, and the feature gate's features in the same pass
                report.seconds["encode"] += time.perf_counter() - t
                t = time.perf_counter()
                gate = guard.score_features(features)
                report.views += len(views)
                verdicts, offset = [], 0
                for study_key, series in pending:
                    judged = []
                    for sv in series:
                        if sv.ok:
                            judged.append(replace(guard.judge_series(sv.series_key, sv.modality, gate,
                                                                     slice(offset, offset + len(sv.views))),
                                                  conflicts=sv.conflicts))
                            offset += len(sv.views)
                        else:
                            judged.append(_unreadable_series(sv))
                    verdicts.append(study_verdict(study_key, judged, guard.policy.study_policy,
                                                  guard.policy.top_negatives, state["step"] + len(verdicts) + 1))
                report.seconds["gate"] += time.perf_counter() - t
                for verdict, (_, series) in zip(verdicts, pending):
                    finish(verdict, series)
                if self.on_batch is not None:
                    self.on_batch(state["step"])
                if self.audit is not None and getattr(getattr(self.audit, "config", None), "log_thumbnails", False):
                    thumbnails = {sv.series_key: sv.views[0] for _, series in pending for sv in series if sv.ok}
                    for verdict in verdicts:
                        if verdict.verdict == REJECT:  # the least in-distribution series shows why
                            worst = min((s for s in verdict.series if s.id_score is not None), key=lambda s: s.id_score)
                            self._timed_audit(report, "log_thumbnail", thumbnails[worst.series], verdict.study)
            pending.clear()
            if cfg.state_path and state["since_checkpoint"] >= cfg.checkpoint_every:
                checkpoint()

        def checkpoint() -> None:
            save_checkpoint(cfg.state_path, {
                "folder": folder_key, "order": [cfg.order, cfg.seed], "guard": guard.state_dict(),
                "verdicts": dict(done), "step": state["step"], "metadata": self.checkpoint_metadata,
                "file_counts": dict(state["file_counts"]), "orphans_logged": state["orphans_logged"],
            })
            state["since_checkpoint"] = 0
            self._timed_audit(report, "log_state", guard.snapshot(), step=state["step"])

        bad_files: dict[str, list[str]] = {}  # files of a study that were unreadable already at the scan
        for o in scan.outcomes:
            if o.status is FileStatus.UNREADABLE and o.study_key is not None:
                bad_files.setdefault(o.study_key, []).append(o.reason.value if o.reason else "unreadable")

        for index in self._order(scan):
            if self._stop.is_set():  # the pending batch is still gated below
                report.stopped = True
                break
            study = scan.studies[index]
            if study.study_key in done:
                continue
            t = time.perf_counter()
            series = [load_series_views(s, self.config.view, self.dicom_config) for s in study.series]
            report.seconds["ingest"] += time.perf_counter() - t
            if not any(sv.ok for sv in series):
                verdict = study_verdict(study.study_key, [_unreadable_series(sv) for sv in series],
                                        guard.policy.study_policy, guard.policy.top_negatives, state["step"] + 1)
                problems = bad_files.get(study.study_key)
                if problems:
                    counts = Counter(problems)
                    files = ", ".join(f"{n} file{'s' if n > 1 else ''} {reason}" for reason, n in counts.items())
                    verdict = replace(verdict, reason=f"no readable series ({files})" if not series
                                      else f"{verdict.reason}; {files}")
                finish(verdict, series)
                continue
            pending.append((study.study_key, series))
            if sum(len(sv.views) for _, s in pending for sv in s if sv.ok) >= cfg.batch_size:
                flush()
        flush()

        report.orphans = [  # unreadable already at the scan, and part of no study
            StudyVerdict(study=None, verdict=UNREADABLE,
                         reason=f"file {o.path_key}: {o.reason.value if o.reason else 'unreadable'}"
                         + (f": {o.detail}" if o.detail else ""))
            for o in scan.outcomes
            if o.status is FileStatus.UNREADABLE and o.study_key is None
        ]
        if report.orphans and not state["orphans_logged"]:
            self._timed_audit(report, "log_verdicts", [o.to_json() for o in report.orphans], step=state["step"])
        state["orphans_logged"] = True
        if cfg.state_path:
            checkpoint()
            self._timed_audit(report, "log_final_state", cfg.state_path)

        scanned = Counter(o.status.value for o in scan.outcomes if o.status is not FileStatus.PENDING)
        report.file_counts = dict(sorted((scanned + state["file_counts"]).items()))
        report.studies = [StudyVerdict.from_json(done[s.study_key]) for s in scan.studies if s.study_key in done]
        report.stopped = report.stopped and len(report.studies) < len(scan.studies)
        return report
