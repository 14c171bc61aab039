# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Encoder specs: ``resolve("biomedclip")``, ``resolve("open_clip:ARCH:PRETRAINED")``, ``resolve("surrogate")``.

A spec is ``PREFIX`` or ``PREFIX:BODY``; the prefix picks a factory registered with :func:`register_encoder`,
which receives the body. Built in:

- ``biomedclip`` (the default): BiomedCLIP from the local Hugging Face cache; ``biomedclip:local-dir:PATH`` for a
  local copy.
- ``open_clip:ARCH:PRETRAINED``, ``open_clip:local-dir:PATH``, ``open_clip:hf-hub:ORG/REPO``: any open_clip model
  from local weights.
- ``surrogate``: the offline ConSE encoder (demos and integration tests; not a medical model).

Missing weights raise :class:`~tanl_guard.encoders.errors.EncoderNotAvailable`; nothing is downloaded and no
spec falls back to another model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from tanl_guard.encoders.base import VisionLanguageEncoder

__all__ = ["resolve", "list_encoders", "register_encoder", "DEFAULT_ENCODER", "EncoderFactory"]

#: The encoder a guard uses unless told otherwise.
DEFAULT_ENCODER = "biomedclip"

#: ``factory(body, *, spec, device, **kwargs) -> encoder``; ``body`` is the spec after ``PREFIX:`` ("" if none).
EncoderFactory = Callable[..., VisionLanguageEncoder]
_F = TypeVar("_F", bound=EncoderFactory)

_REGISTRY: dict[str, EncoderFactory] = {}


def register_encoder(prefix: str, factory: EncoderFactory | None = None, *, overwrite: bool = False) -> Any:
    """Register a factory for specs starting with ``prefix``; usable as a decorator.

    Args:
        prefix: the spec prefix, e.g. ``"myclip"`` for ``"myclip"`` and ``"myclip:..."`` (no colon).
        factory: ``factory(body, *, spec, device, **kwargs)``; omit it to use this as ``@register_encoder(prefix)``.
        overwrite: replace an existing registration instead of raising.

    Returns:
        the factory (so the decorator leaves the function as it was).
    """
    if not prefix or ":" in prefix or prefix != prefix.strip():
        raise ValueError(f"an encoder prefix must be a non-empty name without ':' or spaces, got {prefix!r}")

    def decorate(fn: _F) -> _F:
        if prefix in _REGISTRY and not overwrite and _REGISTRY[prefix] is not fn:
            raise ValueError(f"encoder prefix {prefix!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[prefix] = fn
        return fn

    return decorate(factory) if factory is not None else decorate


def list_encoders() -> list[str]:
    """The registered spec prefixes, sorted (``["biomedclip", "open_clip", "surrogate", ...]``)."""
    return sorted(_REGISTRY)


def resolve(spec: str, device: str | torch.device = "cpu", **kwargs: Any) -> VisionLanguageEncoder:
    """Build the encoder a spec names.

    Args:
        spec: ``"biomedclip"``, ``"biomedclip:local-dir:PATH"``, ``"open_clip:ARCH:PRETRAINED"``,
            ``"open_clip:local-dir:PATH"``, ``"open_clip:hf-hub:ORG/REPO"``, ``"surrogate"``, or a registered
            prefix.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        **kwargs: passed to the factory (e.g. ``batch_size``, ``text_dir``, ``model_config``, ``cache_dir``).

    Returns:
        the encoder; its ``id`` is ``spec`` (the surrogate's is its full id, which names it a surrogate).

    Raises:
        EncoderNotAvailable: the weights are not on this machine (the message says where it looked).
        ValueError: the spec is malformed or its prefix unknown.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an encoder spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    prefix, _, body = spec.partition(":")
    factory = _REGISTRY.get(prefix)
    if factory is None:
        raise ValueError(f"unknown encoder {prefix!r} in spec {spec!r}; known: {', '.join(list_encoders())}")
    return factory(body, spec=spec, device=device, **kwargs)


@register_encoder("biomedclip")
def _biomedclip(body: str, *, spec: str, device: str | torch.device = "cpu", **kwargs: Any) -> VisionLanguageEncoder:
    from tanl_guard.encoders.biomedclip import load_biomedclip

    return load_biomedclip(body, spec=spec, device=device, **kwargs)


@register_encoder("open_clip")
def _open_clip(body: str, *, spec: str, device: str | torch.device = "cpu", **kwargs: Any) -> VisionLanguageEncoder:
    from tanl_guard.encoders.open_clip import load_open_clip

    if not body:
        raise ValueError(f"{spec!r}: expected open_clip:ARCH:PRETRAINED, open_clip:local-dir:PATH or open_clip:hf-hub:ID")
    return load_open_clip(body, spec=spec, device=device, **kwargs)


@register_encoder("surrogate")
def _surrogate(body: str, *, spec: str, device: str | torch.device = "cpu", **kwargs: Any) -> VisionLanguageEncoder:
    from tanl_guard.encoders.surrogate import SURROGATE_ID, SurrogateEncoder

    if body and f"surrogate:{body}" != SURROGATE_ID:
        raise ValueError(f"{spec!r}: the surrogate takes no options in its spec; use 'surrogate' or {SURROGATE_ID!r}")
    return SurrogateEncoder(device=device, **kwargs)
