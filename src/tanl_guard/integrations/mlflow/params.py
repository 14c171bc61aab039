# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Run parameters and tags: flattening nested settings within MLflow's limits, hashes and the package version."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .snapshot import to_json_safe

__all__ = [
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_PARAMS_PER_BATCH",
    "MAX_METRICS_PER_BATCH",
    "flatten_params",
    "batched",
    "config_sha256",
    "package_version",
    "truncate",
]

# MLflow 3 limits (mlflow.utils.validation); kept here so a client never sends a request the server refuses.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

T = TypeVar("T")


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, marking the cut with a trailing ``...``.

    Args:
        value: the text.
        limit: the maximum length.
    """
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    return json.dumps(to_json_safe(value), sort_keys=True)


def flatten_params(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten nested settings into MLflow params: ``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``.

    Lists, tuples and other non-mapping values become their JSON text; values longer than MLflow's 6000-character
    limit are truncated (ending ``...``).

    Args:
        params: settings, nested mappings allowed (dataclasses should be passed through ``dataclasses.asdict``).
        prefix: key prefix for the top level.
        sep: separator of nested key parts.

    Raises:
        ValueError: for a flattened key longer than MLflow's 250-character limit.
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name, sep))
            continue
        if len(name) > MAX_KEY_LENGTH:
            raise ValueError(f"parameter key longer than {MAX_KEY_LENGTH} characters: {name[:60]}...")
        out[name] = truncate(_scalar_text(value if not isinstance(value, Mapping) else {}), MAX_PARAM_VALUE_LENGTH)
    return out


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive chunks of at most ``size`` items.

    Args:
        items: the sequence to split.
        size: chunk length, >= 1.
    """
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def config_sha256(params: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``params`` (sorted keys), for the ``config.sha256`` tag.

    Args:
        params: the run settings.
    """
    text = json.dumps(to_json_safe(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_version() -> str:
    """``tanl_guard.__version__`` when defined, else the installed ``tanl-guard`` distribution version."""
    try:
        import tanl_guard

        version = getattr(tanl_guard, "__version__", None)
        if version:
            return str(version)
    except ImportError:  # pragma: no cover - the package is importable whenever this module is
        pass
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("tanl-guard")
    except PackageNotFoundError:
        return "unknown"
