# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Local write-ahead journal of one audit run: JSON Lines, fsync'd per append, with a separate delivery marker.

Layout in the journal folder, per run key ``K``:

- ``K.jsonl``: one JSON object per line, append-only. Line 0 is the ``start`` header (store, experiment, run
  name, resume run id). Later lines are ``params``, ``tags``, ``metrics``, ``verdicts``, ``state``, ``artifact``
  and ``end`` entries. Every append is flushed and fsync'd before the call returns.
- ``K.delivered.json``: the delivery marker: how many leading lines reached MLflow (``offset``), the run id once
  the run exists, counters of delayed/failed entries and ``complete``. Replaced atomically (write, fsync, rename).
- ``K.files/``: copies of files to upload (final state, thumbnails), so they survive until delivered; removed
  once the journal is complete.
- ``K.lock``: an advisory ``flock`` held by the live logger; back-fills skip journals that are locked.
  Removed with the last unlock of a complete journal.

A crash while appending leaves at most a torn last line, which readers ignore. A crash after delivery but
before the marker update re-delivers entries that are idempotent in MLflow (same params/tags, metrics with
their journalled timestamps, artifacts at fixed paths, the verdict table merged by ``record_id``).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:  # POSIX only; elsewhere journals are simply not locked.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "DeliveryMarker", "new_run_key", "now_ms"]


def now_ms() -> int:
    """Wall-clock time in milliseconds, MLflow's timestamp unit."""
    return int(time.time() * 1000)


def new_run_key() -> str:
    """A sortable, unique local key for one run: ``<UTC time>-<8 hex>``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass
class DeliveryMarker:
    """What of a journal has reached MLflow.

    Args:
        offset: number of leading journal lines delivered.
        run_id: the MLflow run id, once the run exists.
        resumed: whether a resumed run has been set back to RUNNING.
        delayed_records: verdict records that reached MLflow after a failed attempt or through a back-fill.
        delayed_entries: journal entries (any kind) delivered late.
        failed_entries: entries MLflow refused as invalid (logged as warnings, never retried).
        failed_offset: lines pending when a delivery attempt last failed; lines below it count as delayed.
        table_size: byte size of the verdict table this journal last uploaded (to skip re-downloading it).
        complete: the ``end`` entry (or, after a crash, a KILLED status) has been delivered.
    """

    offset: int = 0
    run_id: str | None = None
    resumed: bool = False
    delayed_records: int = 0
    delayed_entries: int = 0
    failed_entries: int = 0
    failed_offset: int = 0
    table_size: int = -1
    complete: bool = False


class Journal:
    """One run's journal file with its marker, blob folder and lock (see the module docstring).

    Args:
        path: the ``<run key>.jsonl`` file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key = self.path.name[: -len(".jsonl")] if self.path.name.endswith(".jsonl") else self.path.stem
        self.marker_path = self.path.with_name(self.key + ".delivered.json")
        self.files_dir = self.path.with_name(self.key + ".files")
        self.lock_path = self.path.with_name(self.key + ".lock")
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, directory: str | Path, key: str, header: Mapping[str, Any]) -> Journal:
        """Create a new journal with its ``start`` header line and take its lock.

        Args:
            directory: the journal folder (created if missing).
            key: the run key.
            header: fields of the ``start`` entry.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        journal = cls(directory / f"{key}.jsonl")
        if journal.path.exists():
            raise FileExistsError(f"journal {journal.path} already exists")
        if not journal.try_lock():
            raise RuntimeError(f"could not lock journal {journal.path}")
        journal.append([{"kind": "start", **header}])
        marker = DeliveryMarker(run_id=header.get("run_id"))
        journal.save_marker(marker)
        return journal

    @staticmethod
    def scan(directory: str | Path) -> list[Journal]:
        """All journals in ``directory``, oldest first.

        Args:
            directory: the journal folder.
        """
        directory = Path(directory)
        if not directory.is_dir():
            return []
        return [Journal(p) for p in sorted(directory.glob("*.jsonl"))]

    # ---- lines -------------------------------------------------------------------------------------------
    def append(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append entries (one line each, with a write time ``t``) and fsync before returning.

        Args:
            entries: JSON-safe mappings with a ``kind``.
        """
        t = now_ms()
        text = "".join(json.dumps({"t": t, **entry}, separators=(",", ":")) + "\n" for entry in entries)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete line; a torn last line (no newline) is ignored, a corrupt line reads as ``invalid``."""
        try:
            data = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = data.split("\n")[:-1]  # the part after the last newline is torn or empty
        out: list[dict[str, Any]] = []
        for line in lines:
            try:
                entry = json.loads(line)
                out.append(entry if isinstance(entry, dict) else {"kind": "invalid"})
            except json.JSONDecodeError:
                out.append({"kind": "invalid"})
        return out

    def header(self) -> dict[str, Any]:
        """The ``start`` entry (line 0); empty when the journal is unreadable."""
        lines = self.read()
        return lines[0] if lines and lines[0].get("kind") == "start" else {}

    # ---- marker ------------------------------------------------------------------------------------------
    def load_marker(self) -> DeliveryMarker:
        """The delivery marker; a missing or unreadable marker means nothing was delivered."""
        try:
            data = json.loads(self.marker_path.read_text(encoding="utf-8"))
            fields = DeliveryMarker.__dataclass_fields__
            return DeliveryMarker(**{k: v for k, v in data.items() if k in fields})
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return DeliveryMarker(run_id=self.header().get("run_id"))

    def save_marker(self, marker: DeliveryMarker) -> None:
        """Replace the marker atomically: write a temporary file, fsync, rename.

        Args:
            marker: the new marker.
        """
        tmp = self.marker_path.with_name(self.marker_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(asdict(marker), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.marker_path)

    # ---- lock --------------------------------------------------------------------------------------------
    def try_lock(self) -> bool:
        """Take the journal's advisory lock without waiting; ``False`` when another holder has it."""
        if self._lock_fd is not None:
            return True
        if fcntl is None:  # pragma: no cover - Windows
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock taken by :meth:`try_lock` (no-op when not held)."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        if self.load_marker().complete:  # nothing left to guard: tidy up while still holding the lock
            self.lock_path.unlink(missing_ok=True)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
