# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Defensive check that keeps patient-identifying DICOM attributes out of the audit trail."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["PHI_KEYS", "check_no_phi", "check_hashed_key"]

# Normalised (lower case, alphanumerics only) attribute keywords and tags that must never be logged.
PHI_KEYS = frozenset(
    {
        "patientname",
        "patientid",
        "patientbirthdate",
        "otherpatientids",
        "otherpatientnames",
        "patientaddress",
        "studyinstanceuid",
        "seriesinstanceuid",
        "sopinstanceuid",
        "accessionnumber",
        "00100010",
        "00100020",
        "00100030",
        "0020000d",
        "0020000e",
        "00080018",
        "00080050",
    }
)

# A raw DICOM UID: dot-separated decimal components (e.g. 1.2.840.10008...). Salted hashes never look like this.
_UID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*)){3,}$")
_SAFE_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _normalise(key: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(key).lower())


def check_no_phi(obj: Any, where: str = "record") -> None:
    """Raise if any mapping key in ``obj`` (searched recursively) names a patient-identifying attribute.

    Keys are compared case-insensitively with punctuation removed, so ``PatientID``, ``patient_id`` and
    ``(0010,0020)`` are all refused.

    Args:
        obj: a record, a parameter dict or a state snapshot (mappings and sequences are searched).
        where: what ``obj`` is, for the error message.

    Raises:
        ValueError: naming the offending key path.
    """
    stack: list[tuple[str, Any]] = [(where, obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            for key, value in item.items():
                if _normalise(key) in PHI_KEYS:
                    raise ValueError(
                        f"{path} has key {key!r}, a patient-identifying DICOM attribute; the audit trail takes "
                        "salted hashes of study/series keys only (see tanl_guard.dicom)"
                    )
                stack.append((f"{path}.{key}", value))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))


def check_hashed_key(value: Any, field: str) -> None:
    """Raise if a study/series key looks like a raw DICOM UID or is not a short, path-safe token.

    Args:
        value: the key (``None`` is allowed: unreadable studies may have no key).
        field: field name, for the error message.

    Raises:
        ValueError: for raw UIDs and keys with characters outside ``[A-Za-z0-9_.:-]``.
    """
    if value is None:
        return
    if not isinstance(value, str) or not _SAFE_KEY_RE.match(value):
        raise ValueError(f"{field} must be a hashed key of characters [A-Za-z0-9_.:-], got {value!r}")
    if _UID_RE.match(value):
        raise ValueError(f"{field} {value!r} looks like a raw DICOM UID; log its salted hash instead")
