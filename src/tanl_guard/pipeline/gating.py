# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A decoded batch through the gate, in two separate steps: embed its views, then judge its studies.

:func:`encode_batch` runs the encoder on one fixed manifest batch (the same batch always gives the same features);
:func:`judge_batch` steps the guard's online state once with those features and turns them into one verdict per
study. Keeping them apart lets the embeddings come from elsewhere (Ray's encoder actors) while the TANL state stays
with its single owner. Studies without a readable series get their ``unreadable`` verdict with the reasons, the
scan-time ones included, and do not take part in the gate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..dicom.series_views import SeriesViews
from ..guard.verdicts import UNREADABLE, SeriesVerdict, StudyVerdict, study_verdict
from .ingest import DecodedBatch, DecodedStudy
from .manifest import OrphanFile

__all__ = ["encode_batch", "judge_batch", "unreadable_series", "unreadable_study", "orphan_verdicts"]


def encode_batch(guard: Any, batch: DecodedBatch) -> Any:
    """Embed every view of a batch, in :meth:`DecodedBatch.views` order (None when it has no view).

    Args:
        guard: the :class:`~tanl_guard.guard.Guard` whose :meth:`~tanl_guard.guard.Guard.encode` runs: the
            embeddings, and the feature gate's trunk features from the same forward pass when it reads them.
        batch: the decoded batch (with its views).

    Returns:
        An :class:`~tanl_guard.encoders.base.ImageEncoding` (what ``judge_batch`` and ``Guard.score_features``
        take), or None.
    """
    views = batch.views()
    if len(views) != batch.n_views:
        raise ValueError(f"batch {batch.batch_id} holds no pixels (without_views): encode it where it was decoded")
    return guard.encode(views) if views else None


def unreadable_series(sv: SeriesViews) -> SeriesVerdict:
    """The verdict of a series without views: ``unreadable`` with its reason.

    Args:
        sv: the decoded series.
    """
    reason = sv.reason.value if sv.reason is not None else "unreadable"
    return SeriesVerdict(series=sv.series_key, modality=sv.modality, verdict=UNREADABLE,
                         reason=f"{reason}: {sv.detail}" if sv.detail else reason, conflicts=sv.conflicts)


def unreadable_study(study: DecodedStudy, policy: Any, step: int | None) -> StudyVerdict:
    """The verdict of a study without a readable series, naming the files unreadable already at the scan.

    Args:
        study: the decoded study.
        policy: the guard's :class:`~tanl_guard.guard.GuardPolicy` (study policy, negatives kept).
        step: its step (position in the screening order, from 1).
    """
    verdict = study_verdict(study.study_key, [unreadable_series(sv) for sv in study.series], policy.study_policy,
                            policy.top_negatives, step)
    if study.scan_unreadable:
        counts = Counter(study.scan_unreadable)
        files = ", ".join(f"{n} file{'s' if n > 1 else ''} {reason}" for reason, n in counts.items())
        verdict = replace(verdict, reason=f"no readable series ({files})" if not study.series
                          else f"{verdict.reason}; {files}")
    return verdict


def judge_batch(guard: Any, batch: DecodedBatch, features: Any, first_step: int) -> list[StudyVerdict]:
    """Gate a batch's features once (updating the guard's online state) and judge each of its studies.

    Args:
        guard: the :class:`~tanl_guard.guard.Guard` (the single owner of the detector state).
        batch: the decoded batch (its views may have been dropped: only their counts are used).
        features: what :func:`encode_batch` gave, or the (``batch.n_views``, D) embeddings of its views computed
            elsewhere, in :meth:`DecodedBatch.views` order; None (or empty) when it has no view, and then the guard
            is not stepped.
        first_step: the step of its first study (its position + 1); the others follow in position order.

    Returns:
        One verdict per study, in position order.
    """
    n = batch.n_views
    rows = 0 if features is None else len(features)
    if rows != n:
        raise ValueError(f"batch {batch.batch_id} has {n} views but {rows} feature rows")
    gate = guard.score_features(features) if n else None
    policy = guard.policy
    verdicts: list[StudyVerdict] = []
    offset = 0
    for i, study in enumerate(batch.studies):
        step = first_step + i
        if not study.readable:
            verdicts.append(unreadable_study(study, policy, step))
            continue
        judged = []
        for sv in study.series:
            if sv.ok:
                views = len(sv.provenance)
                judged.append(replace(guard.judge_series(sv.series_key, sv.modality, gate, slice(offset, offset + views)),
                                      conflicts=sv.conflicts))
                offset += views
            else:
                judged.append(unreadable_series(sv))
        verdicts.append(study_verdict(study.study_key, judged, policy.study_policy, policy.top_negatives, step))
    return verdicts


def orphan_verdicts(orphans: Sequence[OrphanFile]) -> list[StudyVerdict]:
    """The verdict lines of files unreadable already at the scan that belong to no study (``study`` is None).

    Args:
        orphans: the manifest's orphan files.
    """
    return [StudyVerdict(study=None, verdict=UNREADABLE,
                         reason=f"file {o.path_key}: {o.reason}" + (f": {o.detail}" if o.detail else ""))
            for o in orphans]
