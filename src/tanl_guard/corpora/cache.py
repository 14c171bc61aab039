# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus embeddings with an on-disk cache of labels, kept in parts, shared by every corpus of one encoder.

The cache of an encoder (its id, its weights' sha256 and the storage dtype) is a folder of part files. Each part
holds the embeddings of up to ``part_size`` prompts: a ``torch.save`` archive ``{"header", "prompts",
"embeddings"}`` loaded with ``torch.load(mmap=True, weights_only=True)``, named by the hash of its prompts. The
header repeats the key fields plus a sha256 over the key and the embedding bytes.

* A corpus is assembled from whatever parts hold its prompts, so corpora that share labels share embeddings:
  ``wordnet+dicom`` reuses what ``wordnet`` embedded, and any set of ID labels (which only removes labels) reuses
  the full corpus.
* Missing prompts are embedded part by part and each part is written as soon as it is done: an interrupted build
  keeps its finished parts, and the next call embeds only the rest.
* Prompts carry their templates, so template overrides need no key of their own.
* A part whose header, shape or checksum does not match, or that cannot be read, is reported with a warning,
  removed and embedded again, never used. Parts are written to a temporary name and renamed into place (atomic on
  POSIX and Windows), so readers never see a half-written part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanl_guard.corpora.corpus import Corpus

__all__ = ["CACHE_FORMAT", "PART_SIZE", "default_cache_dir", "cache_header", "cache_path", "embed_corpus",
           "CacheWarning"]

CACHE_FORMAT = "tanl_guard.label_embeddings.v2"
PART_SIZE = 4096  # prompts per part: about 40 s of BiomedCLIP on a CPU core pair, the most an interruption loses
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_SAFE = str.maketrans({c: "_" for c in "/\\:*?\"<>| "})
_SEP = "\x1f"  # prompts are stored as one string (the weights-only unpickler is slow on long lists of strings)

log = logging.getLogger(__name__)


class CacheWarning(UserWarning):
    """A cache part was unusable (corrupt or mismatched) and is being rebuilt."""


def default_cache_dir() -> Path:
    """``$TANL_GUARD_CACHE`` or ``~/.cache/tanl_guard``, plus ``corpus_embeddings``."""
    root = os.environ.get("TANL_GUARD_CACHE") or Path.home() / ".cache" / "tanl_guard"
    return Path(root) / "corpus_embeddings"


def _encoder_field(encoder: Any, name: str) -> str:
    value = getattr(encoder, name, None)
    if not isinstance(value, str) or not value:
        raise TypeError(f"the encoder needs a non-empty str attribute {name!r} to key the embedding cache")
    return value


def cache_header(encoder: Any, dtype: str = "float32") -> dict[str, str]:
    """The key fields of an encoder's cache, and ``key``: their sha256.

    Args:
        encoder: an object with ``id`` and ``weights_sha256`` (the encoder protocol).
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    header = {
        "format": CACHE_FORMAT,
        "encoder_id": _encoder_field(encoder, "id"),
        "weights_sha256": _encoder_field(encoder, "weights_sha256"),
        "dtype": dtype,
    }
    header["key"] = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    return header


def cache_path(encoder: Any, cache_dir: str | Path | None = None, dtype: str = "float32") -> Path:
    """The folder of an encoder's cached label embeddings (one per encoder, weights and dtype; any corpus).

    Args:
        encoder: the encoder (``id``, ``weights_sha256``).
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        dtype: storage dtype.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _folder_for(folder, cache_header(encoder, dtype))


def _folder_for(root: Path, header: Mapping[str, str]) -> Path:
    return root / f"{header['encoder_id'].translate(_SAFE)[:48]}-{header['key'][:16]}"


def _data_sha256(key: str, embeddings: torch.Tensor) -> str:
    digest = hashlib.sha256(key.encode())
    digest.update(memoryview(embeddings.contiguous().view(torch.uint8).numpy()))
    return digest.hexdigest()


def _prompts_sha256(prompts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()


class _Part:
    """One part file, its header checked on open and its data checksum verified on first use."""

    def __init__(self, path: Path, header: Mapping[str, str]) -> None:
        self.path = path
        blob = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        stored, joined, self._embeddings = blob["header"], blob["prompts"], blob["embeddings"]
        if not isinstance(joined, str):
            raise ValueError("prompt list is not stored as text")
        self.prompts = joined.split(_SEP) if joined else []
        for field in ("format", "encoder_id", "weights_sha256", "dtype", "key"):
            if stored.get(field) != header[field]:
                raise ValueError(f"header field {field!r} is {stored.get(field)!r}, expected {header[field]!r}")
        emb = self._embeddings
        if emb.ndim != 2 or emb.shape[0] != len(self.prompts) or stored.get("dim") != emb.shape[1]:
            raise ValueError(f"embedding shape {tuple(emb.shape)} does not match the header")
        if emb.dtype != _DTYPES[header["dtype"]]:
            raise ValueError(f"stored dtype {emb.dtype} is not {header['dtype']}")
        if stored.get("prompts_sha256") != _prompts_sha256(self.prompts):
            raise ValueError("prompt list does not match its checksum")
        self._data_sha256 = stored.get("data_sha256")
        self._key = header["key"]
        self._verified = False

    def embeddings(self) -> torch.Tensor:
        if not self._verified:
            if self._data_sha256 != _data_sha256(self._key, self._embeddings):
                raise ValueError("checksum mismatch")
            self._verified = True
        return self._embeddings


def _unusable(path: Path, exc: BaseException) -> None:
    warnings.warn(f"corpus embedding cache {path} is unusable ({exc}); rebuilding it", CacheWarning, stacklevel=4)
    path.unlink(missing_ok=True)


class _Index:
    """prompt -> global row (``starts[part] + row``) over the usable parts of a folder; the first part holding a
    prompt wins."""

    def __init__(self, folder: Path, header: Mapping[str, str]) -> None:
        self.parts: list[_Part] = []
        self.starts: list[int] = []
        self.rows: dict[str, int] = {}
        if folder.is_dir():
            for path in sorted(folder.glob("part-*.pt")):
                try:
                    self.parts.append(_Part(path, header))
                except Exception as exc:  # any unreadable or inconsistent part is rebuilt, never used
                    _unusable(path, exc)
        total = 0
        for part in self.parts:
            self.starts.append(total)
            total += len(part.prompts)
        for number in reversed(range(len(self.parts))):
            self._add(number)

    def _add(self, number: int) -> None:
        prompts, start = self.parts[number].prompts, self.starts[number]
        self.rows.update(zip(prompts, range(start, start + len(prompts))))

    def append(self, part: _Part) -> None:
        last = self.starts[-1] + len(self.parts[-1].prompts) if self.parts else 0
        self.parts.append(part)
        self.starts.append(last)
        self._add(len(self.parts) - 1)


def _write_part(folder: Path, header: Mapping[str, str], prompts: list[str], embeddings: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stored = embeddings.to(_DTYPES[header["dtype"]]).contiguous()
    if any(_SEP in prompt for prompt in prompts):
        raise ValueError("a prompt holds the ASCII unit separator (0x1f), which the cache cannot store")
    full = dict(header, dim=int(stored.shape[1]), n=len(prompts), prompts_sha256=_prompts_sha256(prompts),
                data_sha256=_data_sha256(header["key"], stored))
    path = folder / f"part-{full['prompts_sha256'][:32]}.pt"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"header": full, "prompts": _SEP.join(prompts), "embeddings": stored}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _as_returned(embeddings: torch.Tensor, dtype: str) -> torch.Tensor:
    """float32, unit rows; a float16 store is rounded the same way whether it was just written or read back."""
    if dtype == "float32":
        return embeddings.to(torch.float32)
    return torch.nn.functional.normalize(embeddings.to(_DTYPES[dtype]).float(), dim=-1)


def _progress_bar(progress: bool, total: int, initial: int, encoder_id: str) -> Any:
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the cli extra is not installed: the log line above is all there is
        return None
    return tqdm(total=total, initial=initial, unit="label", desc=f"embedding corpus ({encoder_id})", file=sys.stderr,
                dynamic_ncols=True)


def _encode(encoder: Any, prompts: list[str], batch_size: int | None) -> torch.Tensor:
    embeddings = encoder.encode_texts(prompts, batch_size=batch_size, progress=False)
    embeddings = torch.nn.functional.normalize(embeddings.detach().to("cpu", torch.float32), dim=-1)
    if embeddings.shape[0] != len(prompts):
        raise ValueError(f"encoder returned {embeddings.shape[0]} embeddings for {len(prompts)} prompts")
    return embeddings


def embed_corpus(
    encoder: Any,
    corpus: Corpus,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    templates: Mapping[str, str] | None = None,
    batch_size: int | None = None,
    dtype: str = "float32",
    use_cache: bool = True,
    part_size: int = PART_SIZE,
) -> torch.Tensor:
    """Embed the corpus prompts with the encoder, through the on-disk cache of labels.

    Embeddings are stored as float32 by default (exactly what the encoder returned, so selection is unchanged);
    ``dtype="float16"`` halves the files, at a cosine error of about 1e-3. They come back as float32,
    L2-normalised. Only prompts no part of the cache holds are embedded (see the module docs).

    Args:
        encoder: implements ``encode_texts(texts, batch_size=None, progress=False) -> (T, D)`` and has ``id`` and
            ``weights_sha256``.
        corpus: the corpus; prompts from :meth:`Corpus.prompts`.
        cache_dir: cache folder (default ``$TANL_GUARD_CACHE`` or ``~/.cache/tanl_guard``, ``corpus_embeddings``).
        progress: show a progress bar on stderr while embedding; ``None`` (default) shows it when stderr is a
            terminal. A log line (INFO) says how many labels are embedded either way.
        templates: prompt template overrides.
        batch_size: passed to the encoder.
        dtype: storage dtype, ``"float32"`` (default) or ``"float16"``.
        use_cache: False embeds without reading or writing the cache.
        part_size: prompts per part file (what an interruption can lose).

    Returns:
        (N, D) float32 tensor on the CPU, row i for ``corpus.labels[i]``.
    """
    header = cache_header(encoder, dtype)
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    prompts = corpus.prompts(templates)
    if not use_cache or not prompts:
        return _as_returned(_encode(encoder, prompts, batch_size), dtype)
    folder = _folder_for(Path(cache_dir) if cache_dir is not None else default_cache_dir(), header)
    for _ in range(3):  # a part found corrupt while assembling is removed and embedded again
        index = _Index(folder, header)
        missing = list(dict.fromkeys(p for p in prompts if p not in index.rows))
        if missing:
            log.info("embedding %d of %d corpus labels with %s (%d already cached in %s)", len(missing), len(prompts),
                     header["encoder_id"], len(prompts) - len(missing), folder)
            bar = _progress_bar(progress, len(prompts), len(prompts) - len(missing), header["encoder_id"])
            try:
                for start in range(0, len(missing), part_size):
                    chunk = missing[start : start + part_size]
                    embeddings = _encode(encoder, chunk, batch_size)
                    index.append(_Part(_write_part(folder, header, chunk, embeddings), header))
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        try:
            return _assemble(prompts, index, dtype)
        except _CorruptPart as exc:
            _unusable(exc.part.path, exc.cause)
    raise RuntimeError(f"the corpus embedding cache {folder} keeps failing its checksums; remove it and retry")


class _CorruptPart(Exception):
    def __init__(self, part: _Part, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.part, self.cause = part, cause


def _assemble(prompts: list[str], index: _Index, dtype: str) -> torch.Tensor:
    ids = np.fromiter(map(index.rows.__getitem__, prompts), dtype=np.int64, count=len(prompts))
    starts = np.asarray(index.starts, dtype=np.int64)
    numbers = np.searchsorted(starts, ids, side="right") - 1
    out: torch.Tensor | None = None
    for number in np.unique(numbers).tolist():
        part = index.parts[number]
        try:
            stored = part.embeddings()
        except ValueError as exc:
            raise _CorruptPart(part, exc) from None
        if out is None:
            out = torch.empty(len(prompts), stored.shape[1], dtype=torch.float32)
        positions = np.flatnonzero(numbers == number)
        rows = torch.from_numpy(ids[positions] - starts[number])
        out[torch.from_numpy(positions)] = _as_returned(stored[rows], dtype)
    assert out is not None
    return out
