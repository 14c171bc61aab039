# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus embeddings with an on-disk cache, keyed by encoder, weights, corpus content and prompt templates.

A cache file is a ``torch.save`` archive ``{"header": {...}, "embeddings": Tensor}`` loaded with
``torch.load(mmap=True, weights_only=True)``. Its name carries a hash of the key (encoder id, weights sha256,
corpus sha256, templates, storage dtype); the header repeats every key field plus a sha256 over the key and the
embedding bytes. A file whose header, shape or checksum does not match, or that cannot be read, is reported with a
warning and rebuilt, never used. Files are written to a temporary name and renamed into place (atomic on POSIX
and Windows), so readers never see a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tanl_guard.corpora.corpus import Corpus
from tanl_guard.corpora.prompts import resolve_templates

__all__ = ["CACHE_FORMAT", "default_cache_dir", "cache_header", "cache_path", "embed_corpus", "CacheWarning"]

CACHE_FORMAT = "tanl_guard.corpus_embeddings.v1"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CacheWarning(UserWarning):
    """A cache file was unusable (corrupt or mismatched) and is being rebuilt."""


def default_cache_dir() -> Path:
    """``$TANL_GUARD_CACHE`` or ``~/.cache/tanl_guard``, plus ``corpus_embeddings``."""
    root = os.environ.get("TANL_GUARD_CACHE") or Path.home() / ".cache" / "tanl_guard"
    return Path(root) / "corpus_embeddings"


def _encoder_field(encoder: Any, name: str) -> str:
    value = getattr(encoder, name, None)
    if not isinstance(value, str) or not value:
        raise TypeError(f"the encoder needs a non-empty str attribute {name!r} to key the embedding cache")
    return value


def cache_header(
    encoder: Any, corpus: Corpus, templates: Mapping[str, str] | None = None, dtype: str = "float32"
) -> dict[str, str | int]:
    """The key fields of a cache file (without the data checksum), and ``key``: their sha256.

    Args:
        encoder: an object with ``id`` and ``weights_sha256`` (the encoder protocol).
        corpus: the corpus.
        templates: prompt template overrides.
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    header: dict[str, str | int] = {
        "format": CACHE_FORMAT,
        "encoder_id": _encoder_field(encoder, "id"),
        "weights_sha256": _encoder_field(encoder, "weights_sha256"),
        "corpus_sha256": corpus.sha256,
        "n_labels": len(corpus),
        "templates": json.dumps(resolve_templates(corpus.kinds, templates), sort_keys=True, ensure_ascii=False),
        "dtype": dtype,
    }
    header["key"] = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    return header


def cache_path(
    encoder: Any,
    corpus: Corpus,
    cache_dir: str | Path | None = None,
    templates: Mapping[str, str] | None = None,
    dtype: str = "float32",
) -> Path:
    """Where :func:`embed_corpus` keeps this corpus's embeddings for this encoder.

    Args:
        encoder: the encoder (``id``, ``weights_sha256``).
        corpus: the corpus.
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        templates: prompt template overrides.
        dtype: storage dtype.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _file_for(folder, cache_header(encoder, corpus, templates, dtype))


def _file_for(folder: Path, header: Mapping[str, str | int]) -> Path:
    return folder / f"corpus-{str(header['key'])[:32]}.pt"


def _data_sha256(key: str, embeddings: torch.Tensor) -> str:
    digest = hashlib.sha256(key.encode())
    digest.update(memoryview(embeddings.contiguous().view(torch.uint8).numpy()))
    return digest.hexdigest()


def _read(path: Path, expected: Mapping[str, str | int]) -> torch.Tensor | None:
    """The cached embeddings, or None (with a warning) when the file is unusable."""
    try:
        blob = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        header, embeddings = blob["header"], blob["embeddings"]
        for field, value in expected.items():
            if header.get(field) != value:
                raise ValueError(f"header field {field!r} is {header.get(field)!r}, expected {value!r}")
        if (
            embeddings.ndim != 2
            or embeddings.shape[0] != expected["n_labels"]
            or header.get("dim") != embeddings.shape[1]
        ):
            raise ValueError(f"embedding shape {tuple(embeddings.shape)} does not match the header")
        if embeddings.dtype != _DTYPES[str(expected["dtype"])]:
            raise ValueError(f"stored dtype {embeddings.dtype} is not {expected['dtype']}")
        if header.get("data_sha256") != _data_sha256(str(expected["key"]), embeddings):
            raise ValueError("checksum mismatch")
    except Exception as exc:  # any unreadable or inconsistent file is rebuilt, never used
        warnings.warn(f"corpus embedding cache {path} is unusable ({exc}); rebuilding it", CacheWarning, stacklevel=3)
        return None
    return _as_returned(embeddings.to(torch.float32, copy=True), str(expected["dtype"]))


def _as_returned(embeddings: torch.Tensor, dtype: str) -> torch.Tensor:
    """float32, unit rows; a float16 store is rounded the same way whether it was just written or read back."""
    if dtype == "float32":
        return embeddings
    return torch.nn.functional.normalize(embeddings.to(_DTYPES[dtype]).float(), dim=-1)


def _write(path: Path, header: Mapping[str, str | int], embeddings: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = embeddings.to(_DTYPES[str(header["dtype"])]).contiguous()
    full = dict(header, dim=int(stored.shape[1]), data_sha256=_data_sha256(str(header["key"]), stored))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"header": full, "embeddings": stored}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def embed_corpus(
    encoder: Any,
    corpus: Corpus,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    templates: Mapping[str, str] | None = None,
    batch_size: int | None = None,
    dtype: str = "float32",
    use_cache: bool = True,
) -> torch.Tensor:
    """Embed the corpus prompts with the encoder, through the on-disk cache.

    Embeddings are stored as float32 by default (exactly what the encoder returned, so selection is unchanged);
    ``dtype="float16"`` halves the file, at a cosine error of about 1e-3. They come back as float32, L2-normalised.

    Args:
        encoder: implements ``encode_texts(texts, batch_size=None, progress=False) -> (T, D)`` and has ``id`` and
            ``weights_sha256``.
        corpus: the corpus; prompts from :meth:`Corpus.prompts`.
        cache_dir: cache folder (default ``$TANL_GUARD_CACHE`` or ``~/.cache/tanl_guard``, ``corpus_embeddings``).
        progress: show the encoder's progress bar while embedding.
        templates: prompt template overrides (part of the cache key).
        batch_size: passed to the encoder.
        dtype: storage dtype, ``"float32"`` (default) or ``"float16"``.
        use_cache: False embeds without reading or writing the cache.

    Returns:
        (N, D) float32 tensor on the CPU, row i for ``corpus.labels[i]``.
    """
    header = cache_header(encoder, corpus, templates, dtype)
    path = _file_for(Path(cache_dir) if cache_dir is not None else default_cache_dir(), header)
    if use_cache and path.is_file():
        cached = _read(path, header)
        if cached is not None:
            return cached
    embeddings = encoder.encode_texts(corpus.prompts(templates), batch_size=batch_size, progress=progress)
    embeddings = torch.nn.functional.normalize(embeddings.detach().to("cpu", torch.float32), dim=-1)
    if embeddings.shape[0] != len(corpus):
        raise ValueError(f"encoder returned {embeddings.shape[0]} embeddings for {len(corpus)} prompts")
    if use_cache:
        _write(path, header, embeddings)
    return _as_returned(embeddings, dtype)
