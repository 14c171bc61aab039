# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Verdicts of series and studies, and the rules that combine them. Keys are salted hashes, never raw UIDs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACCEPT", "REJECT", "UNREADABLE", "SeriesVerdict", "StudyVerdict", "combine_series", "study_verdict"]

ACCEPT, REJECT, UNREADABLE = "accept", "reject", "unreadable"


@dataclass(frozen=True)
class SeriesVerdict:
    """One series: accepted or rejected on the reduction of its views' id_scores, or unreadable with the reason.

    Attributes:
        series: salted hash of the SeriesInstanceUID.
        modality: the DICOM Modality (or "" when unknown).
        verdict: ``accept``, ``reject`` or ``unreadable``.
        id_score: the series score (None when unreadable).
        threshold: the threshold in force when it was judged (None when unreadable).
        views: how many views were scored.
        view_scores: the id_score of each view.
        top_negatives: the activated negative labels that fired most on its views.
        reason: why it was rejected or unreadable (None when accepted).
        prediction: the most likely ID label (zero-shot, from the anchors), for information.
        conflicts: files of the series that share an SOP Instance UID with a file of other content (each other
            content is judged as a series of its own; ``--strict`` counts them).
    """

    series: str
    modality: str
    verdict: str
    id_score: float | None = None
    threshold: float | None = None
    views: int = 0
    view_scores: tuple[float, ...] = ()
    top_negatives: tuple[str, ...] = ()
    reason: str | None = None
    prediction: str | None = None
    conflicts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "modality": self.modality,
            "verdict": self.verdict,
            "id_score": self.id_score,
            "views": self.views,
            "reason": self.reason,
            "conflicts": self.conflicts,
        }


@dataclass(frozen=True)
class StudyVerdict:
    """One study, with its series. ``study`` is None for unreadable files that belong to no study.

    Attributes:
        study: salted hash of the StudyInstanceUID (None for orphan files).
        verdict: ``accept``, ``reject`` or ``unreadable``.
        id_score: the lowest id_score of its readable series (None if none was readable).
        threshold: the threshold in force (None if nothing was scored).
        series: the series verdicts, in a stable order.
        top_negatives: activated negative labels behind the verdict, strongest first.
        reason: why it was rejected or unreadable.
        step: how many studies had been screened when this one was (its position in the screening order).
        classification: the classifier's output when it ran (None when it was skipped).
    """

    study: str | None
    verdict: str
    id_score: float | None = None
    threshold: float | None = None
    series: tuple[SeriesVerdict, ...] = ()
    top_negatives: tuple[str, ...] = ()
    reason: str | None = None
    step: int | None = None
    classification: dict[str, Any] | None = field(default=None)

    @property
    def conflicts(self) -> int:
        """Files of the study that share an SOP Instance UID with a file of other content."""
        return sum(s.conflicts for s in self.series)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line of ``tanl-guard screen``."""
        out = {
            "study": self.study,
            "verdict": self.verdict,
            "id_score": self.id_score,
            "threshold": self.threshold,
            "series": [s.to_json() for s in self.series],
            "top_negatives": list(self.top_negatives),
            "reason": self.reason,
            "conflicts": self.conflicts,
        }
        if self.classification is not None:
            out["classification"] = self.classification
        return out


def combine_series(series: Sequence[SeriesVerdict], policy: str = "any") -> tuple[str, str | None]:
    """The study verdict and reason from its series verdicts.

    Unreadable series never count as accepted: a study with no readable series is unreadable; otherwise its
    readable series decide by ``policy`` and unreadable ones are named in the reason.
    """
    readable = [s for s in series if s.verdict != UNREADABLE]
    unreadable = len(series) - len(readable)
    if not readable:
        reasons = Counter(s.reason or "unreadable" for s in series)
        detail = "; ".join(f"{n} x {r}" if n > 1 else r for r, n in reasons.items()) or "no series"
        return UNREADABLE, f"no readable series ({detail})"
    rejected = [s for s in readable if s.verdict == REJECT]
    if policy == "any":
        reject = bool(rejected)
    elif policy == "all":
        reject = len(rejected) == len(readable)
    elif policy == "majority":
        reject = 2 * len(rejected) > len(readable)
    else:
        raise ValueError(f"unknown study policy {policy!r}")
    notes = []
    if rejected:
        worst = min(rejected, key=lambda s: s.id_score if s.id_score is not None else 0.0)
        notes.append(
            f"{len(rejected)} of {len(readable)} series out of distribution "
            f"(lowest id_score {worst.id_score:.3f} < threshold {worst.threshold:.3f})"
        )
    if unreadable:
        notes.append(f"{unreadable} series unreadable")
    conflicts = sum(s.conflicts for s in series)
    if conflicts:
        notes.append(f"{conflicts} files share an SOP Instance UID with other content (each judged)")
    if reject:
        return REJECT, "; ".join(notes)
    return ACCEPT, ("; ".join(notes) if notes else None)


def study_verdict(
    study: str | None, series: Sequence[SeriesVerdict], policy: str = "any", top_k: int = 5, step: int | None = None
) -> StudyVerdict:
    """Assemble a :class:`StudyVerdict`: the verdict by ``policy``, the lowest series score, merged negatives."""
    verdict, reason = combine_series(series, policy)
    scored = [s for s in series if s.id_score is not None]
    lowest = min(scored, key=lambda s: s.id_score) if scored else None
    negatives: list[str] = []
    for s in sorted(scored, key=lambda s: s.id_score):  # the least in-distribution series explain first
        for name in s.top_negatives:
            if name not in negatives:
                negatives.append(name)
    return StudyVerdict(
        study=study,
        verdict=verdict,
        id_score=lowest.id_score if lowest else None,
        threshold=lowest.threshold if lowest else None,
        series=tuple(series),
        top_negatives=tuple(negatives[:top_k]),
        reason=reason,
        step=step,
    )
