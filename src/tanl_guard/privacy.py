# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Privacy in one place: salted hashing of identifiers and the checks that keep PHI out of every output.

Studies, series and paths leave :mod:`tanl_guard.dicom` and :mod:`tanl_guard.node` only as keyed hashes
(:class:`Hasher`, keyed by the installation's salt, :func:`resolve_salt`); the audit trail refuses records that name
a patient-identifying attribute (:func:`check_no_phi`) or carry a raw UID as a key (:func:`check_hashed_key`).
Standard library only, so every layer may use it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "PHI_KEYS",
    "SALT_ENV",
    "Hasher",
    "check_hashed_key",
    "check_no_phi",
    "default_salt_path",
    "resolve_salt",
]

SALT_ENV = "TANL_GUARD_SALT"


def default_salt_path() -> Path:
    """Where the per-installation salt is kept: ``$XDG_CONFIG_HOME/tanl_guard/salt`` or ``~/.config/...``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tanl_guard" / "salt"


def resolve_salt(salt: str | None = None) -> str:
    """Return the salt to use.

    Order: the explicit ``salt``; ``$TANL_GUARD_SALT``; the salt file (created with 32 random bytes, mode 0600,
    on first use), so that hashes are stable across runs of one installation and differ between installations.

    Args:
        salt: an explicit salt (tests and reproducible audits pass one).
    """
    if salt:
        return salt
    env = os.environ.get(SALT_ENV)
    if env:
        return env
    path = default_salt_path()
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    return value


class Hasher:
    """Keyed hash (BLAKE2b MAC, 16 hex characters) of identifiers, separated by kind.

    The key is SHA-256 of the salt; keyed BLAKE2b is a MAC like HMAC and cheaper per call, which matters when
    every file of a large export is hashed several times.

    Args:
        salt: the salt (see :func:`resolve_salt`).
    """

    def __init__(self, salt: str) -> None:
        self._key = hashlib.sha256(salt.encode("utf-8")).digest()
        self._memo: dict[tuple[str, str], str] = {}

    def __call__(self, kind: str, value: str) -> str:
        """Hash ``value`` of the given ``kind`` (``"study"``, ``"series"``, ``"path"``, ...).

        Args:
            kind: namespace, so that equal strings of different kinds hash differently.
            value: the identifier.
        """
        memo_key = (kind, value)
        out = self._memo.get(memo_key)
        if out is None:
            msg = f"{kind}\x00{value}".encode("utf-8", "surrogateescape")
            out = hashlib.blake2b(msg, key=self._key, digest_size=8).hexdigest()
            if len(self._memo) < 1_000_000:
                self._memo[memo_key] = out
        return out


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
