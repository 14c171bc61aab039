# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Screening checkpoints: the guard's state plus which studies are done, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "atomic_torch_save", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "tanl_guard.screen.v1"


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, hashed keys, verdict dicts) to ``path`` atomically."""
    return atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain Python only)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no screening checkpoint at {path}: nothing to resume") from None
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable tanl-guard checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tanl-guard screening checkpoint")
    return payload
