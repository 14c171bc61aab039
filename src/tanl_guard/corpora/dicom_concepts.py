# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""A medical corpus from the DICOM PS3.16 coded concepts that pydicom ships (``pydicom.sr``).

pydicom's ``_concepts_dict`` maps coding scheme -> keyword -> code -> (meaning, [context group ids]) for about
18,700 codes (SNOMED CT, DCM, LOINC, RadLex, NCIt, FMA, ...); ``_cid_dict`` names the context groups (CIDs).
Labels are the code meanings, cleaned and de-duplicated. Named groups (``data/dicom_groups.json``) map a word
such as ``anatomy`` to a set of CIDs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from tanl_guard._optional import optional_import
from tanl_guard.corpora.corpus import Corpus, clean_label, deduplicate

__all__ = ["DicomConcept", "dicom_concepts", "dicom_groups", "dicom_cid_names", "resolve_cids", "load_dicom_concepts"]

# Meanings that are codes or placeholders rather than words (e.g. "A1", "1", "(0)") say nothing to a text encoder.
_NOT_A_WORD = re.compile(r"^[\W\d_]*[A-Za-z]?[\W\d_]*$")


@dataclass(frozen=True)
class DicomConcept:
    """One coded concept.

    Args:
        scheme: coding scheme designator, e.g. ``"SCT"``.
        code: code value.
        meaning: code meaning (the label).
        cids: the context groups (CIDs) that list it.
    """

    scheme: str
    code: str
    meaning: str
    cids: tuple[int, ...]


@lru_cache(maxsize=1)
def dicom_concepts() -> tuple[DicomConcept, ...]:
    """Every concept in pydicom's PS3.16 dictionary, in dictionary order."""
    module = optional_import("pydicom.sr._concepts_dict", extra="dicom", purpose="the DICOM concept corpus")
    out = []
    for scheme, by_keyword in module.concepts.items():
        for by_code in by_keyword.values():
            for code, (meaning, cids) in by_code.items():
                out.append(DicomConcept(scheme, str(code), meaning, tuple(int(c) for c in cids)))
    return tuple(out)


@lru_cache(maxsize=1)
def dicom_cid_names() -> dict[int, str]:
    """pydicom's CID -> context group keyword (e.g. ``4 -> "AnatomicRegion"``)."""
    module = optional_import("pydicom.sr._cid_dict", extra="dicom", purpose="the DICOM concept corpus")
    return dict(module.name_for_cid)


@lru_cache(maxsize=1)
def _groups() -> dict[str, dict]:
    text = resources.files("tanl_guard.corpora").joinpath("data/dicom_groups.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def dicom_groups() -> dict[str, tuple[int, ...]]:
    """Named groups -> CIDs: ``anatomy``, ``modalities``, ``devices``, ``findings``, ``procedures``, ``contrast``."""
    return {name: tuple(entry["cids"]) for name, entry in _groups().items()}


def resolve_cids(cids: Iterable[int] = (), groups: Iterable[str] = ()) -> set[int]:
    """The CIDs given directly plus those of the named groups.

    Args:
        cids: context group numbers.
        groups: group names from :func:`dicom_groups`.

    Raises:
        KeyError: an unknown group name or CID.
    """
    table = dicom_groups()
    out = {int(c) for c in cids}
    for group in groups:
        if group not in table:
            raise KeyError(f"unknown DICOM concept group {group!r}; known: {sorted(table)}")
        out |= set(table[group])
    unknown = out - set(dicom_cid_names())
    if unknown:
        raise KeyError(f"CIDs not in pydicom's PS3.16 dictionary: {sorted(unknown)}")
    return out


def load_dicom_concepts(cids: Iterable[int] = (), groups: Iterable[str] = (), schemes: Iterable[str] = ()) -> Corpus:
    """The concept meanings as a corpus of kind ``"concept"``.

    With no filter, every concept. Filters combine: a concept is kept if it is in one of the selected context
    groups (``cids`` plus ``groups``, when any) and uses one of the selected coding schemes (when any). Meanings
    that are not words (codes such as "A1", numbers) are dropped; the rest are cleaned and de-duplicated.

    Args:
        cids: context group numbers, e.g. ``(4, 29)``.
        groups: named groups, e.g. ``("anatomy",)``.
        schemes: coding scheme designators, case-insensitive, e.g. ``("SCT", "RADLEX")``.

    Returns:
        A corpus whose sources are ``"dicom:<scheme>"``.
    """
    cids, groups, schemes = tuple(cids), tuple(groups), tuple(schemes)
    wanted_cids = resolve_cids(cids, groups) if (cids or groups) else None
    wanted_schemes = {s.upper() for s in schemes} or None
    if wanted_schemes is not None:
        known = {c.scheme.upper() for c in dicom_concepts()}
        if wanted_schemes - known:
            raise KeyError(f"unknown coding schemes {sorted(wanted_schemes - known)}; known: {sorted(known)}")
    labels, sources = [], []
    for concept in dicom_concepts():
        if wanted_schemes is not None and concept.scheme.upper() not in wanted_schemes:
            continue
        if wanted_cids is not None and not wanted_cids.intersection(concept.cids):
            continue
        label = clean_label(concept.meaning)
        if _NOT_A_WORD.match(label):
            continue
        labels.append(label)
        sources.append(f"dicom:{concept.scheme}")
    parts = [f"cid={','.join(str(c) for c in cids)}"] if cids else []
    parts += [f"group={','.join(groups)}"] if groups else []
    parts += [f"scheme={','.join(schemes)}"] if schemes else []
    name = "dicom" + (":" + ";".join(parts) if parts else "")
    return Corpus(*deduplicate(labels, ["concept"] * len(labels), sources), name=name)
