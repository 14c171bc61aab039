# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Screening checkpoints: the payload a resumable run saves, in the signed state file of
:mod:`tanl_guard.guard.state_file` (signature, atomic write and format names live there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..guard.state_file import (
    CHECKPOINT_FORMAT,
    GUARD_STATE_FORMAT,
    GUARD_STATE_KEYS,
    LEGACY_CHECKPOINT_FORMATS,
    CheckpointError,
    check_state_keys,
    load_signed,
    save_signed,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "LEGACY_CHECKPOINT_FORMATS",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]

_CHECKPOINT_KEYS = {"manifest": str, "last_batch": int, "order": list, "guard": dict, "step": int}


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write a screening checkpoint to ``path``, signed and atomically.

    Args:
        path: the checkpoint file.
        payload: ``manifest`` (its digest), ``last_batch`` (the last batch whose verdicts are committed to the
            segments), ``order``, ``guard`` (``Guard.state_dict()``), ``step`` (studies done) and more (the
            encoder's weights hash, counts, metadata). Never the verdicts themselves.
    """
    return save_signed(path, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a signed, complete screening checkpoint (see
            :func:`~tanl_guard.guard.state_file.load_signed`).
    """
    name = Path(path).name
    payload = load_signed(path)
    if isinstance(payload, dict) and payload.get("format") == GUARD_STATE_FORMAT:
        raise CheckpointError(f"{name} is a saved guard state (MONAI handler), not a screening checkpoint")
    if isinstance(payload, dict) and payload.get("format") in LEGACY_CHECKPOINT_FORMATS:
        raise CheckpointError(f"{name} is a screening checkpoint of an earlier version (every verdict inside); this "
                              "version cannot resume it: screen again without --resume")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name} is not a tanl-guard screening checkpoint")
    check_state_keys(name, payload, _CHECKPOINT_KEYS, "screening checkpoint")
    check_state_keys(name, payload["guard"], GUARD_STATE_KEYS, "screening checkpoint")
    return payload
