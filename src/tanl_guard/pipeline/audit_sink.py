# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""What the screening pipeline asks of an audit trail: the :class:`AuditSink` protocol, and the timer of its calls.

:class:`~tanl_guard.integrations.mlflow.AuditLogger` satisfies it; so does the DICOM listener's
:class:`~tanl_guard.node.gate.DeferredAudit`, which holds the calls of a batch back until the batch is committed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

__all__ = ["AuditSink", "timed"]


@runtime_checkable
class AuditSink(Protocol):
    """The audit calls of :class:`~tanl_guard.pipeline.Screener` (records carry salted keys only)."""

    @property
    def wants_thumbnails(self) -> bool:
        """Whether the sink takes thumbnails of rejected studies (the screener decodes none for it otherwise)."""
        ...

    def log_verdicts(self, records: Iterable[Mapping[str, Any]], step: int | None = None) -> None:
        """Record per-study verdict records (``screen --json`` lines).

        Args:
            records: the records.
            step: studies screened so far, including these.
        """
        ...

    def log_state(self, snapshot: Mapping[str, Any], step: int | None = None, save_snapshot: bool = True) -> None:
        """Record a snapshot of the detector state.

        Args:
            snapshot: ``guard.snapshot()``.
            step: studies screened so far.
            save_snapshot: also keep the whole snapshot, not only its metrics.
        """
        ...

    def log_final_state(self, path: str | os.PathLike[str]) -> None:
        """Record the run's saved state file (a signed checkpoint).

        Args:
            path: the local state file.
        """
        ...

    def log_dataset(self, name: str, digest: str, context: str, profile: Mapping[str, Any] | None = None) -> None:
        """Record an input of the run by its digest, never by its paths.

        Args:
            name: what it is, e.g. ``"screened folder"``.
            digest: a hex digest of its content.
            context: its role (``"screening"``, ``"reference"``).
            profile: counts shown beside it.
        """
        ...

    def log_thumbnail(self, image: Any, study_key: str) -> Any:
        """Record a thumbnail of a rejected study (only asked when :attr:`wants_thumbnails`).

        Args:
            image: the view (a 2D or HxWx3 array).
            study_key: the study's salted key.
        """
        ...


@contextmanager
def timed(seconds: MutableMapping[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to ``seconds[key]`` (also when the block raises).

    Args:
        seconds: the running totals, e.g. a report's ``seconds``.
        key: the total to add to.
    """
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] += time.perf_counter() - start
