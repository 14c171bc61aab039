# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The one definition of a study count, shared by ``screen``'s summary, ``audit summary`` and the demo."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StudyCounts", "count_studies"]


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
        return self.reject / self.judged if self.judged else 0.0

    def as_dict(self) -> dict[str, int]:
        """``{"studies", "accept", "reject", "unreadable", "orphan_files"}``."""
        return {"studies": self.studies, "accept": self.accept, "reject": self.reject,
                "unreadable": self.unreadable, "orphan_files": self.orphan_files}


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def count_studies(records: Iterable[Any]) -> StudyCounts:
    """Count ``screen --json`` records (mappings) or :class:`~tanl_guard.guard.StudyVerdict` objects.

    Args:
        records: one per study, plus one per unreadable file outside any study.
    """
    counts = {"accept": 0, "reject": 0, "unreadable": 0}
    studies = orphans = 0
    for record in records:
        verdict = str(_field(record, "verdict"))
        if _field(record, "study") is None and verdict == "unreadable":
            orphans += 1
            continue
        studies += 1
        if verdict in counts:
            counts[verdict] += 1
    return StudyCounts(studies=studies, orphan_files=orphans, **counts)
