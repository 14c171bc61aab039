# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Scan results: studies -> series -> instances, keyed by salted hashes, plus every file's outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tanl_guard.dicom.outcomes import FileOutcome, FileStatus, Reason

__all__ = ["InstanceRecord", "SeriesRecord", "StudyRecord", "ScanResult", "HasOutcomes"]


class HasOutcomes(Protocol):
    """Anything that carries final file outcomes (a ``SeriesViews``), for :meth:`ScanResult.resolve`."""

    @property
    def outcomes(self) -> tuple[FileOutcome, ...]: ...


@dataclass(frozen=True)
class InstanceRecord:
    """One DICOM image file of a series, as read from its header.

    Attributes:
        rel_path: path relative to the scan root (may contain names in real exports; see ``path_key``).
        path_key: salted hash of ``rel_path``.
        sop_key: salted hash of the SOP Instance UID.
        instance_number: Instance Number, if present.
        position: Image Position (Patient) projected on the slice normal, if present.
        frames: Number of Frames (1 for single-frame images).
        rows: Rows.
        columns: Columns.
        samples: Samples per Pixel.
        photometric: Photometric Interpretation.
        transfer_syntax: Transfer Syntax UID (a standard UID, not an identifier).
        has_pixels: the file has a Pixel Data element.
        forced: the header was read with ``force=True``.
    """

    rel_path: str
    path_key: str
    sop_key: str
    instance_number: int | None
    position: float | None
    frames: int
    rows: int
    columns: int
    samples: int
    photometric: str
    transfer_syntax: str
    has_pixels: bool
    forced: bool = False

    @property
    def frame_pixels(self) -> int:
        """Rows x Columns x Samples of one frame."""
        return self.rows * self.columns * self.samples


@dataclass(frozen=True)
class SeriesRecord:
    """A series: image instances in order (position, else Instance Number, else path).

    Attributes:
        series_key: salted hash of the Series Instance UID.
        study_key: salted hash of the Study Instance UID.
        modality: Modality (e.g. ``"CT"``), ``""`` if absent.
        instances: the usable instances in order; duplicates and files rejected on their header are left out.
        issue: a reason that makes the whole series unreadable before decoding (e.g. ``no_pixel_data``,
            ``image_too_large``), else ``None``.
        issue_detail: explanation of ``issue``.
        rel_paths: every file of the series that reached grouping (kept, duplicates and rejected), for outcomes.
        root: the scan root the relative paths start from (absolute; used for decoding, never reported).
        conflicts: 1 for a series made of one file that shares its SOP Instance UID with a file of other content,
            else 0. Every version of such a UID leaves its series and becomes a one-file series of its own (keyed
            from the series and the file), so that dedupe hides no image.
    """

    series_key: str
    study_key: str
    modality: str
    instances: tuple[InstanceRecord, ...]
    issue: Reason | None = None
    issue_detail: str = ""
    rel_paths: tuple[str, ...] = ()
    root: Path = field(default=Path(), repr=False)
    conflicts: int = 0

    @property
    def frame_count(self) -> int:
        """Slices times frames over the instances."""
        return sum(i.frames for i in self.instances)


@dataclass(frozen=True)
class StudyRecord:
    """A study and its image series.

    Attributes:
        study_key: salted hash of the Study Instance UID.
        patient_key: salted hash of the Patient ID (for counting patients; never the ID itself).
        series: the image series of the study.
    """

    study_key: str
    patient_key: str
    series: tuple[SeriesRecord, ...]


@dataclass(frozen=True)
class ScanResult:
    """Result of :func:`scan_folder`.

    Attributes:
        root: the scanned folder (absolute). Kept for decoding; not part of :meth:`summary`.
        studies: studies with their image series.
        outcomes: one outcome per file found, sorted by relative path. Image files are ``pending`` until their
            series is decoded; :meth:`resolve` returns the result with the final outcomes.
        dicomdir_references: number of files referenced by DICOMDIR files.
        dicomdir_missing: referenced files that do not exist in the tree.
        seconds: wall time of the scan.
    """

    root: Path
    studies: tuple[StudyRecord, ...]
    outcomes: tuple[FileOutcome, ...]
    dicomdir_references: int = 0
    dicomdir_missing: int = 0
    seconds: float = 0.0
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({o.rel_path: i for i, o in enumerate(self.outcomes)})

    def iter_series(self) -> Iterator[SeriesRecord]:
        """Yield every series of every study."""
        for study in self.studies:
            yield from study.series

    def outcome(self, rel_path: str) -> FileOutcome:
        """The outcome of one file.

        Args:
            rel_path: the file's path relative to the root, POSIX separators.
        """
        return self.outcomes[self._index[rel_path]]

    def status_counts(self) -> dict[str, int]:
        """Number of files per status."""
        return dict(sorted(Counter(o.status.value for o in self.outcomes).items()))

    def reason_counts(self) -> dict[str, int]:
        """Number of files per ``status/reason`` for every status that has a reason."""
        return dict(
            sorted(Counter(f"{o.status.value}/{o.reason.value}" for o in self.outcomes if o.reason).items())
        )

    def resolve(self, series_views: Iterable[HasOutcomes]) -> ScanResult:
        """Return a copy whose pending outcomes are replaced by those of decoded series.

        Args:
            series_views: results of :func:`load_series_views` (views may already have been dropped).
        """
        outcomes = list(self.outcomes)
        for sv in series_views:
            for o in sv.outcomes:
                i = self._index.get(o.rel_path)
                if i is not None and outcomes[i].status is FileStatus.PENDING:
                    outcomes[i] = o
        return replace(self, outcomes=tuple(outcomes), _index={})

    def summary(self, include_paths: bool = False, include_files: bool = True) -> dict[str, Any]:
        """JSON-safe summary: counts, studies and series by hashed key, and per-file outcomes.

        Args:
            include_paths: add relative file paths (they can contain patient names in real exports).
            include_files: add the per-file outcome list.
        """
        series_count = sum(len(s.series) for s in self.studies)
        out: dict[str, Any] = {
            "files": len(self.outcomes),
            "patients": len({s.patient_key for s in self.studies}),
            "studies": len(self.studies),
            "series": series_count,
            "instances": sum(len(se.instances) for se in self.iter_series()),
            "status_counts": self.status_counts(),
            "reason_counts": self.reason_counts(),
            "dicomdir_references": self.dicomdir_references,
            "dicomdir_missing": self.dicomdir_missing,
            "seconds": round(self.seconds, 3),
            "study_list": [
                {
                    "study_key": st.study_key,
                    "series": [
                        {
                            "series_key": se.series_key,
                            "modality": se.modality,
                            "instances": len(se.instances),
                            "frames": se.frame_count,
                            "issue": se.issue.value if se.issue else None,
                            "conflicts": se.conflicts,
                        }
                        for se in st.series
                    ],
                }
                for st in self.studies
            ],
        }
        if include_files:
            out["file_outcomes"] = [o.to_dict(include_path=include_paths) for o in self.outcomes]
        return out
