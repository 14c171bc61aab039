# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The one definition of a study count, of the reject rate and of the count metrics, shared by ``screen``'s
summary, the audit logger, ``audit summary`` and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .verdicts import ACCEPT, REJECT, UNREADABLE, Verdict

__all__ = ["COUNT_METRICS", "StudyCounts", "count_studies", "is_orphan_file", "reject_rate"]

# The MLflow metric of each verdict's cumulative study count (the audit logger writes them, ``audit summary`` reads
# them back when a run has no verdict table).
COUNT_METRICS: dict[Verdict, str] = {ACCEPT: "screen/accepted", REJECT: "screen/rejected",
                                     UNREADABLE: "screen/unreadable"}


def reject_rate(accepted: int, rejected: int) -> float:
    """Rejected over judged (accepted + rejected) studies, 0 when none was judged; unreadable ones are not judged.

    Args:
        accepted: accepted studies.
        rejected: rejected studies.
    """
    judged = accepted + rejected
    return rejected / judged if judged else 0.0


@dataclass(frozen=True)
class StudyCounts:
    """Verdicts of a screening, counted by study.

    An unreadable file that belongs to no study (``"study": null``, verdict ``unreadable``) is not a study: it is
    counted in ``orphan_files`` and in none of the verdicts. Every other record is a study (a judged item without
    a key, as in a MONAI run without file names, included).

    Attributes:
        studies: records with a study key.
        accept: accepted studies.
        reject: rejected studies.
        unreadable: studies with no readable series.
        orphan_files: unreadable files outside any study.
    """

    studies: int = 0
    accept: int = 0
    reject: int = 0
    unreadable: int = 0
    orphan_files: int = 0

    @property
    def judged(self) -> int:
        """Studies the guard judged (accepted or rejected); unreadable ones are not judged."""
        return self.accept + self.reject

    @property
    def reject_rate(self) -> float:
        """Rejected over judged studies (0 when none was judged)."""
        return reject_rate(self.accept, self.reject)

    def as_dict(self) -> dict[str, int]:
        """``{"studies", "accept", "reject", "unreadable", "orphan_files"}``."""
        return {"studies": self.studies, "accept": self.accept, "reject": self.reject,
                "unreadable": self.unreadable, "orphan_files": self.orphan_files}

    def metrics(self) -> dict[str, float]:
        """The audit trail's count metrics: ``screen/accepted``, ``screen/rejected``, ``screen/unreadable``,
        ``screen/studies``, ``screen/orphan_files`` and ``screen/reject_rate``, in that order."""
        out = {name: float(getattr(self, verdict.value)) for verdict, name in COUNT_METRICS.items()}
        out["screen/studies"] = float(self.studies)
        out["screen/orphan_files"] = float(self.orphan_files)
        out["screen/reject_rate"] = self.reject_rate
        return out

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> StudyCounts:
        """The counts of a run's last count metrics (absent ones are 0; ``studies`` is the sum of the verdicts).

        Args:
            metrics: an MLflow run's latest metric values.
        """
        counts = {verdict.value: int(metrics.get(name, 0)) for verdict, name in COUNT_METRICS.items()}
        return cls(studies=sum(counts.values()), orphan_files=int(metrics.get("screen/orphan_files", 0)), **counts)


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def is_orphan_file(record: Any) -> bool:
    """Whether a record is an unreadable file that belongs to no study (``"study": null``): not a study.

    Args:
        record: a ``screen --json`` record (a mapping) or a :class:`~tanl_guard.guard.StudyVerdict`.
    """
    return _field(record, "study") is None and _field(record, "verdict") == UNREADABLE


def count_studies(records: Iterable[Any]) -> StudyCounts:
    """Count ``screen --json`` records (mappings) or :class:`~tanl_guard.guard.StudyVerdict` objects.

    Args:
        records: one per study, plus one per unreadable file outside any study.
    """
    counts = {verdict.value: 0 for verdict in Verdict}
    studies = orphans = 0
    for record in records:
        if is_orphan_file(record):
            orphans += 1
            continue
        studies += 1
        verdict = str(_field(record, "verdict"))
        if verdict in counts:
            counts[verdict] += 1
    return StudyCounts(studies=studies, orphan_files=orphans, **counts)
