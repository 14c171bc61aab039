# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Salted hashing of identifiers: the only form in which studies, series and paths leave ``tanl_guard.dicom``."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["SALT_ENV", "default_salt_path", "resolve_salt", "Hasher"]

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
