# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Verdicts of series and studies, and the rules that combine them. Keys are salted hashes, never raw UIDs."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Verdict",
    "ACCEPT",
    "REJECT",
    "UNREADABLE",
    "SeriesVerdict",
    "StudyVerdict",
    "combine_series",
    "study_verdict",
]


class Verdict(str, enum.Enum):
    """The three verdict words. A ``str``: equal to (and hashed as) the bare word, which ``str()``, f-strings and
    ``json`` give; :meth:`StudyVerdict.to_json` writes ``.value``, so files and MLflow see plain strings."""

    ACCEPT = "accept"
    REJECT = "reject"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# Module-level names of the members (public since the first version).
ACCEPT, REJECT, UNREADABLE = Verdict.ACCEPT, Verdict.REJECT, Verdict.UNREADABLE


@dataclass(frozen=True)
class SeriesVerdict:
    """One series: accepted or rejected on the reduction of its views' id_scores, or unreadable with the reason.

    Attributes:
        series: salted hash of the SeriesInstanceUID.
        modality: the DICOM Modality (or "" when unknown).
        verdict: :class:`Verdict` ``accept``, ``reject`` or ``unreadable`` (a bare word is converted).
        id_score: the series score (None when unreadable).
        threshold: the threshold in force when it was judged (None when unreadable).
        views: how many views were scored.
        view_scores: the id_score of each view.
        top_negatives: the activated negative labels that fired most on its views.
        reason: why it was rejected or unreadable (None when accepted); names the gate(s) that refused.
        prediction: the most likely ID label (zero-shot, from the anchors), for information.
        label_score: a fused guard's label-gate (e.g. TANL) score, reduced over the views.
        label_threshold: the label gate's threshold.
        feature_score: a fused guard's feature-gate (kNN, Mahalanobis) score, reduced over the views.
        feature_threshold: the feature gate's threshold (calibrated on held-out references).
        refused_by: the gates whose score fell below their threshold (rejected series of fused guards).
        conflicts: files of the series that share an SOP Instance UID with a file of other content (each other
            content is judged as a series of its own; ``--strict`` counts them).
    """

    series: str
    modality: str
    verdict: Verdict
    id_score: float | None = None
    threshold: float | None = None
    views: int = 0
    view_scores: tuple[float, ...] = ()
    top_negatives: tuple[str, ...] = ()
    reason: str | None = None
    prediction: str | None = None
    label_score: float | None = None
    label_threshold: float | None = None
    feature_score: float | None = None
    feature_threshold: float | None = None
    refused_by: tuple[str, ...] = ()
    conflicts: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))  # a bare word (JSON lines) becomes the member

    def to_json(self) -> dict[str, Any]:
        out = {
            "series": self.series,
            "modality": self.modality,
            "verdict": self.verdict.value,
            "id_score": self.id_score,
            "views": self.views,
            "reason": self.reason,
            "conflicts": self.conflicts,
        }
        out.update(_gate_json(self))
        return out

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> SeriesVerdict:
        """Rebuild a series verdict from its :meth:`to_json` line (a checkpoint's done verdicts)."""
        return cls(series=line["series"], modality=line["modality"], verdict=line["verdict"],
                   id_score=line["id_score"], views=line["views"], reason=line["reason"],
                   conflicts=line.get("conflicts", 0), **_gate_fields(line))


@dataclass(frozen=True)
class StudyVerdict:
    """One study, with its series. ``study`` is None for unreadable files that belong to no study.

    Attributes:
        study: salted hash of the StudyInstanceUID (None for orphan files).
        verdict: :class:`Verdict` ``accept``, ``reject`` or ``unreadable`` (a bare word is converted).
        id_score: the lowest id_score of its readable series (None if none was readable).
        threshold: the threshold in force (None if nothing was scored).
        series: the series verdicts, in a stable order.
        top_negatives: activated negative labels behind the verdict, strongest first.
        reason: why it was rejected or unreadable.
        step: how many studies had been screened when this one was (its position in the screening order).
        label_score: a fused guard's label-gate score of the lowest-scoring series.
        label_threshold: the label gate's threshold there.
        feature_score: a fused guard's feature-gate score of the lowest-scoring series.
        feature_threshold: the feature gate's threshold there.
        refused_by: the gates that refused any of its rejected series.
    """

    study: str | None
    verdict: Verdict
    id_score: float | None = None
    threshold: float | None = None
    series: tuple[SeriesVerdict, ...] = ()
    top_negatives: tuple[str, ...] = ()
    reason: str | None = None
    step: int | None = None
    label_score: float | None = None
    label_threshold: float | None = None
    feature_score: float | None = None
    feature_threshold: float | None = None
    refused_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))

    @property
    def conflicts(self) -> int:
        """Files of the study that share an SOP Instance UID with a file of other content."""
        return sum(s.conflicts for s in self.series)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line of ``tanl-guard screen``."""
        out = {
            "study": self.study,
            "verdict": self.verdict.value,
            "id_score": self.id_score,
            "threshold": self.threshold,
            "series": [s.to_json() for s in self.series],
            "top_negatives": list(self.top_negatives),
            "reason": self.reason,
            "conflicts": self.conflicts,
        }
        out.update(_gate_json(self))
        return out

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> StudyVerdict:
        """Rebuild a study verdict from its :meth:`to_json` line (``step`` included when present)."""
        return cls(study=line["study"], verdict=line["verdict"], id_score=line["id_score"],
                   threshold=line["threshold"], series=tuple(SeriesVerdict.from_json(s) for s in line["series"]),
                   top_negatives=tuple(line["top_negatives"]), reason=line["reason"], step=line.get("step"),
                   **_gate_fields(line))


_GATE_KEYS = ("label_score", "label_threshold", "feature_score", "feature_threshold")


def _gate_json(verdict: SeriesVerdict | StudyVerdict) -> dict[str, Any]:
    """The fused guard's per-gate fields, present only when the verdict has them."""
    if verdict.label_score is None and verdict.feature_score is None:
        return {}
    out: dict[str, Any] = {key: getattr(verdict, key) for key in _GATE_KEYS}
    out["refused_by"] = list(verdict.refused_by)
    return out


def _gate_fields(line: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {key: line[key] for key in _GATE_KEYS if key in line}
    if "refused_by" in line:
        out["refused_by"] = tuple(line["refused_by"])
    return out


def combine_series(series: Sequence[SeriesVerdict], policy: str = "any") -> tuple[Verdict, str | None]:
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
        gates = f": refused by {' and '.join(worst.refused_by)}" if worst.refused_by else ""
        notes.append(
            f"{len(rejected)} of {len(readable)} series out of distribution "
            f"(lowest id_score {worst.id_score:.3f} < threshold {worst.threshold:.3f}{gates})"
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
    refused = tuple(dict.fromkeys(g for s in series if s.verdict == REJECT for g in s.refused_by))
    gates = {key: getattr(lowest, key) for key in _GATE_KEYS} if lowest else {}
    return StudyVerdict(
        study=study,
        verdict=verdict,
        id_score=lowest.id_score if lowest else None,
        threshold=lowest.threshold if lowest else None,
        series=tuple(series),
        top_negatives=tuple(negatives[:top_k]),
        reason=reason,
        step=step,
        refused_by=refused,
        **gates,
    )
