# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The closed vocabulary of outcome details: fixed phrases, numbers and names taken from fixed tables.

No exception text, path or raw header value may reach an output (stdout, reports, journals, MLflow, checkpoints):
header values are attacker- or patient-controlled, exception texts carry paths and values. A detail is therefore
built with :func:`detail` from a phrase written in this package, numbers, and :class:`Term` values, which only the
functions below hand out (a registered UID's standard name, a defined Modality or Photometric Interpretation term,
an ``errno`` name, a fixed package or element name).
"""

from __future__ import annotations

import errno
from functools import lru_cache

__all__ = ["Term", "detail", "uid_name", "modality_term", "photometric_term", "errno_name", "MODALITIES"]


class Term(str):
    """A name from a fixed table: the only kind of text :func:`detail` accepts besides numbers."""

    __slots__ = ()


def detail(phrase: str, **values: int | float | Term) -> str:
    """Fill a fixed phrase with numbers and :class:`Term` values.

    Args:
        phrase: a ``str.format`` phrase written in this package (never built from input).
        values: the placeholders' values: ``int``, ``float`` or :class:`Term`.

    Raises:
        TypeError: for any other value (a plain ``str`` may be a path, a header value or an exception text).
    """
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, Term)):
            raise TypeError(f"detail value {key!r} must be a number or a Term, got {type(value).__name__}")
    return phrase.format(**values)


@lru_cache(maxsize=512)
def uid_name(uid: str) -> Term:
    """The standard name of a registered UID (transfer syntax, SOP class), else a fixed phrase.

    ``pydicom.uid.UID(x).name`` returns ``x`` itself for unregistered values, which would copy a header value.

    Args:
        uid: the UID as read from the file.
    """
    from pydicom._uid_dict import UID_dictionary

    entry = UID_dictionary.get(str(uid).strip("\x00 "))
    return Term(entry[0]) if entry else Term("an unregistered UID")


# Defined terms of Modality (0008,0060), PS3.3 C.7.3.1.1.1, current and retired.
MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DMS DG DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL IVOCT IVUS "
    "KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG RESP RF RG "
    "RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA "
    "XA XAPROTOCOL XC AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF".split()
)

# Defined terms of Photometric Interpretation (0028,0004), PS3.3 C.7.6.3.1.2, current and retired.
_PHOTOMETRIC = frozenset(
    ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB")
)


def modality_term(value: str) -> str:
    """Modality as reported: a defined term, or ``""`` when absent or not a defined term.

    Args:
        value: the Modality value read from the header.
    """
    term = str(value or "").strip().upper()
    return term if term in MODALITIES else ""


def photometric_term(value: str) -> Term:
    """A defined Photometric Interpretation term, else a fixed phrase.

    Args:
        value: the value read from the header.
    """
    term = str(value or "").strip().upper()
    return Term(term) if term in _PHOTOMETRIC else Term("a non-standard photometric interpretation")


def errno_name(exc: BaseException) -> Term:
    """The symbolic ``errno`` name of an ``OSError`` (``EACCES``, ``EIO``, ...), never its message (it holds paths).

    Args:
        exc: the exception.
    """
    code = getattr(exc, "errno", None)
    return Term(errno.errorcode.get(code, "unknown error")) if isinstance(code, int) else Term("unknown error")
