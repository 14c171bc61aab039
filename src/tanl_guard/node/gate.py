# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Judging one batch folder of complete studies through the screening pipeline (the code path of ``screen``).

:func:`judge_folder` is the listener's only call into :mod:`tanl_guard.pipeline`: the batch folder is screened by
the public :class:`~tanl_guard.pipeline.Screener` with the listener's long-lived guard, so ingest, decoding,
gate batches, verdicts and thumbnails are those of ``screen``. Audit calls are held back by
:class:`DeferredAudit` and sent only after the listener checkpointed the batch, with the listener's running
step, so a batch judged again after a crash is not audited twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dicom import DicomScanConfig
from ..guard import StudyVerdict

__all__ = ["BatchResult", "DeferredAudit", "judge_folder"]


class DeferredAudit:
    """Collects the audit calls of one batch; :meth:`replay` sends them to the real logger with global steps.

    The screener counts steps from 0 in every batch folder; the listener's steps count every study it judged
    since its state was new. ``log_dataset`` (one per batch folder) is dropped: the listener's run describes the
    guard once at its start.

    Args:
        wants_thumbnails: whether the real logger takes thumbnails of rejected studies.
    """

    def __init__(self, wants_thumbnails: bool = False) -> None:
        self._wants_thumbnails = bool(wants_thumbnails)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    @property
    def wants_thumbnails(self) -> bool:
        """Whether the screener should send thumbnails (the real logger's setting)."""
        return self._wants_thumbnails

    def log_verdicts(self, records: list[dict[str, Any]], step: int | None = None) -> None:
        self.calls.append(("log_verdicts", ([dict(r) for r in records],), {"step": step}))

    def log_state(self, snapshot: Any, step: int | None = None, save_snapshot: bool = True) -> None:
        self.calls.append(("log_state", (snapshot,), {"step": step, "save_snapshot": save_snapshot}))

    def log_thumbnail(self, image: Any, study_key: str) -> None:
        self.calls.append(("log_thumbnail", (image, study_key), {}))

    def log_final_state(self, path: Any) -> None:
        self.calls.append(("log_final_state", (path,), {}))

    def log_dataset(self, *args: Any, **kwargs: Any) -> None:
        return None

    def replay(self, audit: Any, offset: int) -> None:
        """Send the collected calls to ``audit``, steps shifted by ``offset``, and forget them.

        Args:
            audit: the real :class:`~tanl_guard.integrations.mlflow.AuditLogger`.
            offset: studies judged before this batch.
        """
        for method, args, kwargs in self.calls:
            if kwargs.get("step") is not None:
                kwargs = {**kwargs, "step": kwargs["step"] + offset}
            if method == "log_verdicts":
                args = ([{**r, "step": r["step"] + offset} if r.get("step") is not None else r for r in args[0]],)
            getattr(audit, method)(*args, **kwargs)
        self.calls.clear()


@dataclass
class BatchResult:
    """The verdicts of one batch folder.

    Attributes:
        verdicts: one verdict per study, in the order they were judged (seeded shuffle of the batch).
        orphans: unreadable files that belong to no study.
        views: views scored.
        seconds: wall time per phase, as ``screen`` reports it.
    """

    verdicts: list[StudyVerdict] = field(default_factory=list)
    orphans: list[StudyVerdict] = field(default_factory=list)
    views: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def judge_folder(guard: Any, folder: Path, view: str, batch_size: int, seed: int,
                dicom_config: DicomScanConfig | None = None, audit: DeferredAudit | None = None,
                on_batch: Callable[[int], None] | None = None) -> BatchResult:
    """Screen the complete studies of one batch folder with ``guard`` (its state carries over between calls).

    Args:
        guard: the listener's guard.
        folder: a folder of complete studies (one subfolder per study).
        view: the view spec (``slices:3``, ``mid``, ``mip``).
        batch_size: views per gate batch.
        seed: the seed of this batch's shuffled order.
        dicom_config: scan and decode settings.
        audit: collects the audit calls (see :class:`DeferredAudit`).
        on_batch: called as ``on_batch(step)`` after every gate batch (``step``: studies of this folder so far).
    """
    from ..pipeline import ScreenConfig, Screener

    judged: list[StudyVerdict] = []
    screener = Screener(guard, ScreenConfig(view=view, batch_size=batch_size, order="shuffled", seed=seed),
                        dicom_config if dicom_config is not None else DicomScanConfig(view=view), audit,
                        on_verdict=judged.append, on_batch=on_batch)
    report = screener.run(folder)
    return BatchResult(verdicts=judged, orphans=list(report.orphans), views=report.views, seconds=dict(report.seconds))
