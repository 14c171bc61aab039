# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Finding files in the local Hugging Face cache without any network call.

The cache layout (``models--ORG--NAME/refs/main`` and ``snapshots/<rev>/``) is read directly, so a missing model
fails at once with the folder it looked in, and nothing can trigger a download.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["hf_hub_cache_dir", "hf_repo_cache_dir", "cached_snapshot", "has_tokenizer_files"]

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")


def hf_hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The hub cache folder as the environment sets it now (``HF_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``).

    Args:
        cache_dir: an explicit cache folder, which wins.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_repo_cache_dir(repo_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder a model repo occupies in the cache (whether or not it exists).

    Args:
        repo_id: ``"org/name"``.
        cache_dir: an explicit cache folder.
    """
    return hf_hub_cache_dir(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(
    repo_id: str,
    required: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str = "main",
) -> Path | None:
    """The cached snapshot folder of a repo that holds all ``required`` files, or None.

    The revision the ref points at is tried first, then the other snapshots, newest first.

    Args:
        repo_id: ``"org/name"``.
        required: file names that must exist in the snapshot.
        cache_dir: an explicit cache folder.
        revision: a branch name (read from ``refs/``) or a commit hash.
    """
    repo = hf_repo_cache_dir(repo_id, cache_dir)
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates: list[Path] = []
    ref = repo / "refs" / revision
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    elif (snapshots / revision).is_dir():
        candidates.append(snapshots / revision)
    others = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates.extend(p for p in others if p not in candidates)
    required = tuple(required)
    for snap in candidates:
        if snap.is_dir() and all((snap / name).exists() for name in required):
            return snap
    return None


def has_tokenizer_files(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds Hugging Face tokenizer files.

    Args:
        folder: the folder.
    """
    path = Path(folder)
    return path.is_dir() and any((path / name).is_file() for name in _TOKENIZER_FILES)
