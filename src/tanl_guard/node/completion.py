# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Study completion by idle timeout: a study is complete when nothing new arrived for it for a while.

DICOM has no end-of-study message; a modality or a PACS sends the instances of a study over one or several
associations, and the receiver decides when the study is whole. Orthanc calls such a study "stable" after
``StableAge`` seconds without a new instance; the listener does the same with ``--study-timeout``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["CompleteStudy", "StudyTracker"]


@dataclass(frozen=True)
class CompleteStudy:
    """A study that is complete (idle for the timeout).

    Attributes:
        key: the study's salted key (its spool folder).
        completed_at: when it became complete (``time.monotonic`` clock): its last arrival plus the timeout.
        instances: instances received for it.
    """

    key: str
    completed_at: float
    instances: int


class StudyTracker:
    """The studies being received, with their last arrival; bounded by the studies in the spool's intake.

    Not thread-safe on its own: the spool calls it under its lock.

    Args:
        timeout_s: seconds without a new instance after which a study is complete.
    """

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("the study timeout must be > 0 seconds")
        self.timeout_s = float(timeout_s)
        self._last: dict[str, float] = {}
        self._instances: dict[str, int] = {}

    def touch(self, key: str, instances: int = 1, now: float | None = None) -> None:
        """Record that ``instances`` arrived for study ``key`` (restarts its idle clock).

        Args:
            key: the study's salted key.
            instances: how many arrived.
            now: the arrival time (default ``time.monotonic()``).
        """
        self._last[key] = time.monotonic() if now is None else now
        self._instances[key] = self._instances.get(key, 0) + instances

    def complete(self, now: float | None = None) -> list[CompleteStudy]:
        """The studies idle for at least the timeout, earliest completed first.

        Args:
            now: the time to judge by (default ``time.monotonic()``).
        """
        now = time.monotonic() if now is None else now
        done = [CompleteStudy(key, last + self.timeout_s, self._instances[key])
                for key, last in self._last.items() if now - last >= self.timeout_s]
        return sorted(done, key=lambda s: (s.completed_at, s.key))

    def pop(self, key: str) -> None:
        """Forget study ``key`` (it was taken for judging).

        Args:
            key: the study's salted key.
        """
        self._last.pop(key, None)
        self._instances.pop(key, None)

    def __len__(self) -> int:
        return len(self._last)

    def instances(self) -> int:
        """Instances received for the studies not yet complete or taken."""
        return sum(self._instances.values())
