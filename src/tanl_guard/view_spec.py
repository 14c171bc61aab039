# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Which 2D views a series becomes: ``slices:K`` (K evenly spaced), ``mid`` or ``mip``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ViewSpec"]


@dataclass(frozen=True)
class ViewSpec:
    """How a series is turned into 2D views for an image encoder.

    Attributes:
        kind: ``"slices"`` (K evenly spaced slices or frames, at ``(i + 1) / (K + 1)`` of the range, i.e.
            25/50/75 % for K = 3), ``"mid"`` (the middle slice or frame) or ``"mip"`` (maximum intensity projection
            over the slices or frames of the dominant image size).
        count: K for ``"slices"``; 1 otherwise. A series with fewer slices than K gives fewer views.
    """

    kind: str = "slices"
    count: int = 3

    def __post_init__(self) -> None:
        if self.kind not in ("slices", "mid", "mip"):
            raise ValueError(f"view kind must be 'slices', 'mid' or 'mip', got {self.kind!r}")
        if self.kind != "slices" and self.count != 1:
            object.__setattr__(self, "count", 1)
        if self.count < 1:
            raise ValueError(f"view count must be >= 1, got {self.count}")

    @classmethod
    def parse(cls, text: str | ViewSpec) -> ViewSpec:
        """Parse ``"slices:K"``, ``"slices"`` (K = 3), ``"mid"`` or ``"mip"``.

        Args:
            text: the spec string (or an existing ViewSpec, returned as is).
        """
        if isinstance(text, ViewSpec):
            return text
        value = text.strip().lower()
        if value in ("mid", "mip"):
            return cls(kind=value, count=1)
        if value == "slices":
            return cls()
        if value.startswith("slices:"):
            try:
                count = int(value.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"bad view spec {text!r}: expected slices:K with an integer K") from None
            return cls(kind="slices", count=count)
        raise ValueError(f"bad view spec {text!r}: expected 'mid', 'mip' or 'slices:K'")

    def positions(self, n: int) -> list[int]:
        """Indices (0-based, ascending, unique) of the slices or frames to view among ``n``.

        For ``"mip"`` this is the middle index (the fallback view); the projection itself uses every index.

        Args:
            n: number of slices or frames available.
        """
        if n <= 0:
            return []
        k = 1 if (n == 1 or self.kind != "slices") else self.count
        picks = [int((i + 1) / (k + 1) * (n - 1) + 0.5) for i in range(k)]
        return sorted(set(picks))

    def __str__(self) -> str:
        return f"slices:{self.count}" if self.kind == "slices" else self.kind
