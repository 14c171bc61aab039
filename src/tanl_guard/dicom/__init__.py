# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""DICOM folder ingest: scan headers, group studies and series, decode evenly spaced views, one outcome per file.

Patient names, IDs, birth dates and raw UIDs never leave this package: studies, series, instances and paths are
identified by salted hashes (see :mod:`tanl_guard.privacy`). Relative file paths are available on request
only, since real exports may carry names in folder or file names. Outcome details use a closed vocabulary
(:mod:`tanl_guard.dicom.vocabulary`), and every read is bounded (:mod:`tanl_guard.dicom.header`,
:mod:`tanl_guard.dicom.inflate`, :mod:`tanl_guard.dicom.codestream`).
"""

from __future__ import annotations

from tanl_guard.dicom.config import DicomScanConfig
from tanl_guard.dicom.outcomes import FileOutcome, FileStatus, Reason, ReasonError
from tanl_guard.dicom.records import InstanceRecord, ScanResult, SeriesRecord, StudyRecord
from tanl_guard.dicom.scan import scan_files, scan_folder
from tanl_guard.dicom.series_views import (
    SeriesViews,
    StudyViews,
    ViewProvenance,
    iter_study_views,
    load_series_views,
    resolve_outcomes,
)
from tanl_guard.privacy import resolve_salt
from tanl_guard.view_spec import ViewSpec

__all__ = [
    "DicomScanConfig",
    "FileOutcome",
    "FileStatus",
    "InstanceRecord",
    "Reason",
    "ReasonError",
    "ScanResult",
    "SeriesRecord",
    "SeriesViews",
    "StudyRecord",
    "StudyViews",
    "ViewProvenance",
    "ViewSpec",
    "iter_study_views",
    "load_series_views",
    "resolve_outcomes",
    "resolve_salt",
    "scan_files",
    "scan_folder",
]
