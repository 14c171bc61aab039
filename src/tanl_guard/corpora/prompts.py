# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Prompt templates per label kind, kept as package data (``data/prompts.json``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

__all__ = ["default_templates", "resolve_templates", "make_prompts", "templates_sha256"]


@lru_cache(maxsize=1)
def _load_templates() -> Mapping[str, str]:
    text = resources.files("tanl_guard.corpora").joinpath("data/prompts.json").read_text(encoding="utf-8")
    table = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    return MappingProxyType(table)


def default_templates() -> dict[str, str]:
    """The shipped template per kind: ``noun`` / ``user`` "The nice {}.", ``adjective`` "This is a {} photo.",
    ``concept`` "A medical image of {}." (a copy; edit freely)."""
    return dict(_load_templates())


def resolve_templates(kinds: Sequence[str], templates: Mapping[str, str] | None = None) -> dict[str, str]:
    """The template for each kind present, defaults overridden by ``templates``.

    Args:
        kinds: the kinds that need a template.
        templates: overrides, kind -> template with one ``{}``.

    Raises:
        KeyError: a kind has no template.
        ValueError: a template lacks exactly one ``{}``.
    """
    table = default_templates()
    table.update(templates or {})
    out = {}
    for kind in sorted(set(kinds)):
        if kind not in table:
            raise KeyError(f"no prompt template for label kind {kind!r}; known kinds: {sorted(table)}")
        if table[kind].count("{}") != 1:
            raise ValueError(f"template for {kind!r} must contain exactly one '{{}}': {table[kind]!r}")
        out[kind] = table[kind]
    return out


def make_prompts(labels: Sequence[str], kinds: Sequence[str], templates: Mapping[str, str] | None = None) -> list[str]:
    """One prompt per label, from its kind's template.

    Args:
        labels: the labels.
        kinds: the kind of each label.
        templates: overrides of the default templates.
    """
    table = resolve_templates(kinds, templates)
    return [table[kind].format(label) for label, kind in zip(labels, kinds)]


def templates_sha256(templates: Mapping[str, str]) -> str:
    """A stable hash of a kind -> template table (for cache keys).

    Args:
        templates: kind -> template.
    """
    return hashlib.sha256(json.dumps(dict(sorted(templates.items())), ensure_ascii=False).encode()).hexdigest()
