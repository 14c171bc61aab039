# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""An encoder wrapper that keeps, per image, whatever the encoder returned for it, on disk, so reruns are cheap.

:class:`CachedEncoder` stands in for any :class:`tanl_guard.encoders.VisionLanguageEncoder`: the shipped ``Guard``
is built with it and scores through it exactly as with the bare encoder (every attribute and text method is the
wrapped encoder's, so the product's corpus cache keys on the same encoder id and weights). Image methods, that is
``encode_images`` and any other method whose name starts with ``encode_image`` (trunk features computed in the same
forward pass, say), are answered per image from a store keyed by the method, its keyword arguments and the SHA-256
of the image's pixels; misses go to the wrapped encoder in one call and their rows are stored. An output may be a
tensor with one row per image, or a tuple, list, dict or dataclass of such tensors.

The store lives in ``benchmarks/data/embeddings/`` (git-ignored), one file per encoder and weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["EMBEDDINGS_DIR", "EmbeddingStore", "CachedEncoder", "image_key"]

EMBEDDINGS_DIR = Path(__file__).resolve().parent / "data" / "embeddings"
_FORMAT = "tanl_guard.benchmarks.image_outputs.v1"


def image_key(image: Any) -> str:
    """SHA-256 of one image's dtype, shape and pixel bytes (a numpy array or a tensor)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(image))
    h = hashlib.sha256(f"{arr.dtype.str}:{arr.shape}:".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class EmbeddingStore:
    """Per-image outputs of one encoder: ``{method key: {image key: output row}}``, saved atomically.

    Args:
        path: the store file (created on the first :meth:`save`).
        header: what the outputs belong to (encoder id, weights SHA-256); a file with another header is ignored.
    """

    def __init__(self, path: Path, header: dict[str, str]) -> None:
        self.path = Path(path)
        self.header = dict(header)
        self.rows: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                data = torch.load(self.path, weights_only=True)
                if data.get("format") == _FORMAT and data.get("header") == self.header:
                    self.rows = data["rows"]
            except Exception:  # an unreadable store is rebuilt, never trusted
                self.rows = {}

    def get(self, method: str, key: str) -> Any:
        return self.rows.get(method, {}).get(key)

    def put(self, method: str, key: str, row: Any) -> None:
        self.rows.setdefault(method, {})[key] = row
        self.dirty = True

    def __len__(self) -> int:
        return sum(len(v) for v in self.rows.values())

    def save(self) -> None:
        """Write the store if anything was added (to a temporary file renamed into place)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"format": _FORMAT, "header": self.header, "rows": self.rows}, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.dirty = False


def _split_rows(output: Any, n: int) -> list[Any]:
    """One entry per image from a batched output (tensor, tuple/list, dict or dataclass of tensors)."""
    if isinstance(output, torch.Tensor):
        if output.shape[0] != n:
            raise ValueError(f"expected {n} rows, got shape {tuple(output.shape)}")
        rows = output.detach().cpu()
        return [rows[i].clone() for i in range(n)]
    if isinstance(output, (tuple, list)):
        parts = [_split_rows(o, n) for o in output]
        return [tuple(p[i] for p in parts) for i in range(n)]
    if isinstance(output, dict):
        parts = {k: _split_rows(v, n) for k, v in output.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        names = [f.name for f in dataclasses.fields(output)]
        return [dict(zip(names, row)) for row in _split_rows([getattr(output, k) for k in names], n)]
    raise TypeError(f"cannot cache an image output of type {type(output).__name__}")


def _stack_rows(rows: list[Any], like: Any, device: torch.device) -> Any:
    """The batched output again, in the type of ``like`` (an output of the same method)."""
    first = rows[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(rows).to(device)
    if isinstance(like, (tuple, list)) or isinstance(first, tuple):
        out = [_stack_rows([r[i] for r in rows], like[i] if like is not None else None, device) for i in range(len(first))]
        return type(like)(out) if isinstance(like, (tuple, list)) else tuple(out)
    if dataclasses.is_dataclass(like) and not isinstance(like, type):
        values = {k: _stack_rows([r[k] for r in rows], getattr(like, k), device) for k in first}
        return dataclasses.replace(like, **values)
    return {k: _stack_rows([r[k] for r in rows], like[k] if isinstance(like, dict) else None, device) for k in first}


def _as_images(images: Any) -> list[Any]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"a tensor batch must be (B, C, H, W), got shape {tuple(images.shape)}")
        return [images[i] for i in range(images.shape[0])]
    if isinstance(images, np.ndarray):
        raise TypeError("pass a list of images (or a (B, C, H, W) tensor), not one numpy array")
    return list(images)


class CachedEncoder:
    """``encoder`` with its image outputs answered from an :class:`EmbeddingStore`.

    Args:
        encoder: any vision-language encoder of the product.
        cache_dir: folder of the store files (``benchmarks/data/embeddings`` when None).
        enabled: False passes everything through (no store).

    Attributes:
        hits, misses: per-image counts since construction (how much the cache saved).
    """

    def __init__(self, encoder: Any, cache_dir: str | Path | None = None, enabled: bool = True) -> None:
        self._encoder = encoder
        self.hits = 0
        self.misses = 0
        self._keys: dict[int, tuple[Any, str]] = {}  # id(image) -> (image kept alive, key)
        self._likes: dict[str, Any] = {}
        self.store: EmbeddingStore | None = None
        if enabled:
            weights = str(encoder.weights_sha256)
            slug = re.sub(r"[^A-Za-z0-9]+", "_", str(encoder.id)).strip("_")[:60]
            path = Path(cache_dir or EMBEDDINGS_DIR) / f"{slug}_{weights[:16]}.pt"
            self.store = EmbeddingStore(path, {"encoder_id": str(encoder.id), "weights_sha256": weights})

    @property
    def wrapped(self) -> Any:
        """The encoder underneath."""
        return self._encoder

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._encoder, name)
        if name.startswith("encode_image") and callable(attr):
            return lambda images, **kwargs: self._cached(name, attr, images, kwargs)
        return attr

    def encode_images(self, images: Any, **kwargs: Any) -> torch.Tensor:
        """The wrapped ``encode_images``, answered per image from the store."""
        return self._cached("encode_images", self._encoder.encode_images, images, kwargs)

    def _key(self, image: Any) -> str:
        hit = self._keys.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        key = image_key(image)
        self._keys[id(image)] = (image, key)
        return key

    def _cached(self, name: str, method: Callable[..., Any], images: Any, kwargs: dict[str, Any]) -> Any:
        if self.store is None:
            return method(images, **kwargs)
        listed = _as_images(images)
        if not listed:
            return method(images, **kwargs)
        method_key = name + "|" + ",".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))
        keys = [self._key(img) for img in listed]
        rows = [self.store.get(method_key, k) for k in keys]
        missing = [i for i, r in enumerate(rows) if r is None]
        self.hits += len(listed) - len(missing)
        self.misses += len(missing)
        if missing:
            batch: Sequence[Any] | torch.Tensor
            batch = torch.stack([listed[i] for i in missing]) if isinstance(images, torch.Tensor) else [
                listed[i] for i in missing
            ]
            output = method(batch, **kwargs)
            self._likes.setdefault(method_key, output)
            for i, row in zip(missing, _split_rows(output, len(missing))):
                rows[i] = row
                self.store.put(method_key, keys[i], row)
        if method_key not in self._likes and not isinstance(rows[0], torch.Tensor):
            # a structured output read back from disk: learn its type from one image (tuple, dict or dataclass)
            one = torch.stack(listed[:1]) if isinstance(images, torch.Tensor) else listed[:1]
            self._likes[method_key] = method(one, **kwargs)
        device = getattr(self._encoder, "device", torch.device("cpu"))
        return _stack_rows(rows, self._likes.get(method_key), device)

    def save(self) -> None:
        """Write new outputs to disk."""
        if self.store is not None:
            self.store.save()
