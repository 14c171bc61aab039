# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Signed, atomic state files: the file format shared by screening checkpoints and saved guard states.

A state file is ``MAGIC`` + the hex HMAC-SHA256 of the payload + a newline + the payload (a ``torch.save``
archive of tensors and plain Python). The HMAC key is derived from the installation's secret, the salt that also
keys the study hashes (``$TANL_GUARD_SALT``, else ``~/.config/tanl_guard/salt``): a file changed after it was
written, or written by an installation with another secret, is refused before anything in it is used. The
payload is read with ``torch.load(weights_only=True)`` only after the signature holds.

Files are written to a temporary name, fsync'd and renamed: a crash mid-write leaves the previous file intact.
The payload of a screening checkpoint is defined in :mod:`tanl_guard.pipeline.checkpoint`; its format names are
here, beside that of the saved guard state, because :func:`load_guard_state` reads the guard out of either.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..privacy import SALT_ENV, default_salt_path, resolve_salt

__all__ = [
    "CHECKPOINT_FORMAT",
    "LEGACY_CHECKPOINT_FORMATS",
    "GUARD_STATE_FORMAT",
    "GUARD_STATE_KEYS",
    "STATE_FORMATS",
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "check_state_keys",
    "save_signed",
    "load_signed",
    "save_guard_state",
    "load_guard_state",
    "state_signing_key",
]

# v3: O(1) in the archive size (guard state, last committed batch, manifest digest, encoder weights hash, counts);
# the verdicts are in append-only segments. v2 held every verdict; it can be shown, not resumed.
CHECKPOINT_FORMAT = "tanl_guard.screen.v3"
LEGACY_CHECKPOINT_FORMATS = ("tanl_guard.screen.v2",)
GUARD_STATE_FORMAT = "tanl_guard.guard_state.v1"
# Every format whose payload holds a ``guard`` (``Guard.state_dict()``).
STATE_FORMATS = (GUARD_STATE_FORMAT, CHECKPOINT_FORMAT, *LEGACY_CHECKPOINT_FORMATS)
# The keys of ``Guard.state_dict()`` a state file must hold.
GUARD_STATE_KEYS = ("detector", "history", "n_images")
MAGIC = b"TANL-GUARD SIGNED STATE v1\n"
_KEY_CONTEXT = b"tanl-guard state signature v1"
_MAC_HEX = 64


class CheckpointError(ValueError):
    """A state file that cannot be used: missing, not ours, altered, or incomplete. The message is one line."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename it into place.

    Args:
        path: the target file (its folder is created if missing).
        data: the content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename (unsigned; state files use :func:`save_signed`).

    Args:
        path: the target file.
        obj: what to save.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def state_signing_key(salt: str | None = None, create: bool = True) -> bytes:
    """The HMAC key of state files: HMAC-SHA256 of a fixed context under the installation's salt.

    Args:
        salt: an explicit salt (default: ``$TANL_GUARD_SALT``, else the salt file).
        create: create the salt file when there is none (writers); readers pass ``False``.

    Raises:
        CheckpointError: when ``create`` is off and this installation has no salt yet.
    """
    if not create and not salt and not os.environ.get(SALT_ENV) and not default_salt_path().is_file():
        raise CheckpointError(
            f"cannot verify the state file: this installation has no secret yet (set {SALT_ENV} to the salt of "
            "the installation that wrote it)"
        )
    secret = resolve_salt(salt).encode("utf-8")
    return hmac.new(secret, _KEY_CONTEXT, hashlib.sha256).digest()


def save_signed(path: str | os.PathLike[str], obj: Any, key: bytes | None = None) -> Path:
    """Save ``obj`` (tensors and plain Python) signed with the installation's key, atomically.

    Args:
        path: the target file.
        obj: what to save.
        key: the HMAC key (default :func:`state_signing_key`).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    mac = hmac.new(key if key is not None else state_signing_key(), payload, hashlib.sha256).hexdigest()
    return atomic_write_bytes(path, MAGIC + mac.encode("ascii") + b"\n" + payload)


def load_signed(path: str | os.PathLike[str], key: bytes | None = None) -> Any:
    """Read a file written by :func:`save_signed`, verifying its signature before anything in it is used.

    Args:
        path: the file.
        key: the HMAC key (default :func:`state_signing_key`, without creating a secret).

    Raises:
        FileNotFoundError: when there is no such file.
        CheckpointError: empty, unsigned or foreign files, altered content, another installation's key, an
            unreadable payload.
    """
    path = Path(path)
    name = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no state file at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{name} is a folder, not a state file") from None
    if not data:
        raise CheckpointError(f"{name} is empty: not a tanl-guard state file")
    head = len(MAGIC) + _MAC_HEX + 1
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{name} is not a signed tanl-guard state file (another file, or unsigned from an older version)"
        )
    if len(data) < head or data[head - 1 : head] != b"\n":
        raise CheckpointError(f"{name} is truncated")
    mac, payload = data[len(MAGIC) : head - 1], data[head:]
    expected = hmac.new(key if key is not None else state_signing_key(create=False), payload, hashlib.sha256)
    if not hmac.compare_digest(mac, expected.hexdigest().encode("ascii")):
        raise CheckpointError(
            f"{name} failed its integrity check: it was changed after it was written, or written by an "
            "installation with another secret (the salt: TANL_GUARD_SALT or ~/.config/tanl_guard/salt); refused"
        )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # signed but unreadable: written by an incompatible version
        raise CheckpointError(f"{name} is signed but unreadable ({type(exc).__name__})") from None


def check_state_keys(name: str, payload: Any, keys: Mapping[str, type] | tuple[str, ...], what: str) -> None:
    """Raise unless ``payload`` is a dict holding every key of ``keys`` (of its type, where ``keys`` maps to types).

    Args:
        name: the file's name, for the message.
        payload: the loaded payload (or a part of it).
        keys: the required keys, or a mapping of required key to type.
        what: what the file should be, for the message.

    Raises:
        CheckpointError: naming the first missing or mistyped key.
    """
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name} does not hold a {what}")
    for key in keys:
        if key not in payload:
            raise CheckpointError(f"{name} is not a complete {what}: '{key}' is missing")
        kind = keys[key] if isinstance(keys, Mapping) else None
        if kind is not None and not isinstance(payload[key], kind):
            raise CheckpointError(f"{name} is not a valid {what}: '{key}' is not a {kind.__name__}")


def save_guard_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``Guard.state_dict()`` to ``path``, signed and atomically (the MONAI handler's saved state).

    Args:
        path: the state file.
        state: ``guard.state_dict()``.
    """
    return save_signed(path, {"format": GUARD_STATE_FORMAT, "guard": dict(state)})


def load_guard_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``Guard.state_dict()`` of a file from :func:`save_guard_state` or :func:`~tanl_guard.pipeline.checkpoint.save_checkpoint`, verified.

    Args:
        path: the state file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a signed, complete state file.
    """
    name = Path(path).name
    payload = load_signed(path)
    if not isinstance(payload, dict) or payload.get("format") not in STATE_FORMATS:
        raise CheckpointError(f"{name} is not a tanl-guard state file")
    check_state_keys(name, payload, ("guard",), "state file")
    check_state_keys(name, payload["guard"], GUARD_STATE_KEYS, "state file")
    return payload["guard"]
