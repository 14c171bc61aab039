# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Verdict segments: append-only JSON-lines files of verdicts keyed by gate batch, read back exactly once each.

Each run (a first run or a resume) appends to a new segment file in the segments folder. Its first line names the
manifest and ``after_batch``, the last batch committed by the checkpoint it started from; every further line is
``{"batch": id, "verdict": {...}}``. A checkpoint commits every batch up to its ``last_batch`` after the segment
is flushed to disk, so the verdicts never live in the checkpoint (O(1) in the archive size).

Reading back (:func:`read_verdicts`) keeps, for each batch, the lines of the one segment that committed it: a
segment's batches count only from its ``after_batch + 1`` up to the ``after_batch`` of the first later segment
(which restarted from an earlier checkpoint and redid what came after) and the last committed batch. Lines of a
batch written after the last checkpoint by a run that then died, and a torn last line, are dropped: nothing is
lost or doubled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SEGMENT_FORMAT", "SegmentWriter", "read_verdicts", "clear_segments"]

SEGMENT_FORMAT = "tanl_guard.segment.v1"
_SUFFIX = ".jsonl"


def _segments(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{_SUFFIX}") if p.stem.isdigit())


class SegmentWriter:
    """Appends the verdict lines of one run to a new segment file.

    Args:
        folder: the segments folder (created if missing).
        manifest: the digest of the manifest being screened.
        after_batch: the last batch committed when this run started (-1 for a first run).
    """

    def __init__(self, folder: str | os.PathLike[str], manifest: str, after_batch: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = _segments(self.folder)
        number = int(existing[-1].stem) + 1 if existing else 1
        self.path = self.folder / f"{number:06d}{_SUFFIX}"
        self._file = open(self.path, "x", encoding="utf-8")  # never reuse (and so never rewrite) a segment
        self.last_batch = after_batch
        self._write({"format": SEGMENT_FORMAT, "manifest": manifest, "after_batch": after_batch})
        self.sync()

    def _write(self, obj: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def write_batch(self, batch_id: int, lines: Sequence[Mapping[str, Any]]) -> None:
        """Append the verdict lines of one batch (batches come in increasing order).

        Args:
            batch_id: the batch.
            lines: its verdict lines (``StudyVerdict.to_json()`` with ``step``), in position order.
        """
        if batch_id <= self.last_batch:
            raise ValueError(f"batch {batch_id} comes after batch {self.last_batch}: segments are append-only")
        for line in lines:
            self._write({"batch": batch_id, "verdict": line})
        self._file.flush()
        self.last_batch = batch_id

    def sync(self) -> None:
        """Flush and fsync: what was written survives a crash (called before every checkpoint)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close the file."""
        if not self._file.closed:
            self.sync()
            self._file.close()


def _header(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            head = json.loads(fh.readline())
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) and head.get("format") == SEGMENT_FORMAT else None


def read_verdicts(folder: str | os.PathLike[str], manifest: str, last_batch: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(batch_id, verdict line)`` for every committed batch up to ``last_batch``, each batch once.

    Args:
        folder: the segments folder.
        manifest: the manifest digest the segments must name (others are ignored).
        last_batch: the last committed batch (the checkpoint's), or the last batch written by a run without
            checkpoints.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    heads = [(p, h) for p in _segments(folder) if (h := _header(p)) is not None and h.get("manifest") == manifest]
    for i, (path, head) in enumerate(heads):
        low = int(head["after_batch"])
        high = min([last_batch] + [int(h["after_batch"]) for _, h in heads[i + 1:]])
        if high <= low:
            continue
        with open(path, encoding="utf-8") as fh:
            fh.readline()
            for text in fh:
                try:
                    entry = json.loads(text)
                except ValueError:  # a line torn by a crash: its batch was never committed
                    continue
                batch = int(entry["batch"])
                if batch > high:
                    break
                if batch > low:
                    yield batch, entry["verdict"]


def clear_segments(folder: str | os.PathLike[str]) -> None:
    """Remove the segment files of ``folder`` (a new screening starts; nothing else there is touched).

    Args:
        folder: the segments folder.
    """
    folder = Path(folder)
    if folder.is_dir():
        for path in _segments(folder):
            path.unlink()
