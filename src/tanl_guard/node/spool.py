# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The listener's spool: a private folder where every acknowledged instance is on disk before Success is sent.

Layout (all folders mode 0700; names are salted keys, never UIDs)::

    SPOOL/tmp/                               instances being written (removed at start)
    SPOOL/incoming/<study>/<instance>.dcm    received; the study is not complete yet
    SPOOL/batches/<batch>/<study>/...        complete studies taken for one gate batch, being judged
    SPOOL/outbox/<route>/<batch>-<study>/    judged, waiting for delivery to a route (forward, quarantine)

A study moves between these folders by ``rename`` (atomic on one file system), so after a crash every study is
in exactly one place and the listener knows what is left to do with it: receive more, judge, or deliver. An
instance is written to ``tmp/``, fsync'd and renamed into ``incoming/``; only then does the SCP answer Success.
The spool has a size cap: an instance that would exceed it is refused (the SCP answers "out of resources").
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ..privacy import Hasher, resolve_salt
from .completion import CompleteStudy, StudyTracker

__all__ = ["Spool", "SpoolFull", "INSTANCE_SUFFIX", "VERDICT_FILE"]

log = logging.getLogger(__name__)

INSTANCE_SUFFIX = ".dcm"
VERDICT_FILE = "_verdict.json"  # beside the instances of a judged study: its ``screen --json`` line


class SpoolFull(OSError):
    """Storing an instance would exceed the spool's size cap."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Spool:
    """The listener's private, crash-safe store of received studies.

    Args:
        root: the spool folder (created mode 0700; an existing one is made 0700).
        max_bytes: the size cap of all instances in the spool (``0``: no cap).
        study_timeout_s: a study is complete after this many seconds without a new instance.
        salt: salt of the study and instance keys (default: the installation's, as ``screen`` uses; the study
            keys then equal the ``study`` of the verdicts).
    """

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = 0, study_timeout_s: float = 30.0,
                 salt: str | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.root = _private_dir(Path(root))
        self.max_bytes = int(max_bytes)
        self._salt = resolve_salt(salt)
        self.tmp = self.root / "tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)  # partial writes of a process that died: never acknowledged
        for folder in ("tmp", "incoming", "batches", "outbox"):
            _private_dir(self.root / folder)
        self.incoming = self.root / "incoming"
        self.batches = self.root / "batches"
        self.outbox = self.root / "outbox"
        self._lock = threading.Lock()
        self.tracker = StudyTracker(study_timeout_s)
        self._bytes = _tree_bytes(self.root)
        self.received = 0
        self.refused = 0
        now = time.monotonic()
        for study in sorted(self.incoming.iterdir()):  # received before a restart: complete one timeout from now
            n = sum(1 for _ in study.glob("*" + INSTANCE_SUFFIX))
            if n:
                self.tracker.touch(study.name, n, now)

    # ------------------------------------------------------------------ keys
    def study_key(self, study_uid: str) -> str:
        """The salted key of a Study Instance UID: the spool folder name and the ``study`` of its verdict.

        Args:
            study_uid: the raw UID (never logged or written anywhere but hashed).
        """
        return Hasher(self._salt)("study", study_uid)  # a fresh hasher: its memo would grow with every study

    # ------------------------------------------------------------------ intake
    @property
    def bytes_used(self) -> int:
        """Bytes of the instances in the spool (as counted by the spool since it opened)."""
        return self._bytes

    def store(self, data: bytes, study_uid: str, sop_uid: str) -> str:
        """Persist one received instance: write, fsync, rename into its study's intake folder.

        Args:
            data: the instance in the DICOM file format, as received (its own transfer syntax).
            study_uid: its Study Instance UID.
            sop_uid: its SOP Instance UID (a second copy replaces the first).

        Returns:
            The study's salted key.

        Raises:
            SpoolFull: when the instance would exceed the size cap (nothing is written).
            OSError: when it cannot be written (nothing is acknowledged then either).
        """
        size = len(data)
        with self._lock:
            if self.max_bytes and self._bytes + size > self.max_bytes:
                self.refused += 1
                raise SpoolFull(f"spool full: {self._bytes} of {self.max_bytes} bytes used, instance of {size}")
            self._bytes += size  # reserved while it is written outside the lock
        key = self.study_key(study_uid)
        name = Hasher(self._salt)("instance", sop_uid) + INSTANCE_SUFFIX
        try:
            fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                with self._lock:
                    folder = self.incoming / key
                    created = not folder.is_dir()
                    if created:
                        folder.mkdir(mode=0o700)
                    target = folder / name
                    replaced = target.stat().st_size if target.exists() else 0
                    os.replace(tmp, target)
                    self._bytes -= replaced
                    self.tracker.touch(key, 0 if replaced else 1)
                    self.received += 1
                _fsync_dir(folder)
                if created:
                    _fsync_dir(self.incoming)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except BaseException:
            with self._lock:
                self._bytes -= size
            raise
        return key

    # ------------------------------------------------------------------ completion
    def complete(self, now: float | None = None) -> list[CompleteStudy]:
        """The complete studies waiting in the intake, earliest first (see :class:`StudyTracker`).

        Args:
            now: the time to judge by (``time.monotonic`` clock).
        """
        with self._lock:
            return self.tracker.complete(now)

    def receiving(self) -> tuple[int, int]:
        """Studies and instances in the intake that are not complete or taken yet."""
        with self._lock:
            return len(self.tracker), self.tracker.instances()

    def take(self, keys: list[str], batch: int) -> Path:
        """Move complete studies from the intake into a new batch folder, atomically per study.

        An instance of such a study that arrives afterwards starts a new intake folder of that study, judged
        with a later batch.

        Args:
            keys: the studies' keys.
            batch: the batch number (increasing).

        Returns:
            The batch folder.
        """
        folder = _private_dir(self.batches / f"{batch:09d}")
        with self._lock:
            for key in keys:
                self.tracker.pop(key)
                source = self.incoming / key
                if source.is_dir():
                    os.rename(source, folder / key)
        _fsync_dir(folder)
        _fsync_dir(self.incoming)
        return folder

    def pending_batches(self) -> list[tuple[int, Path]]:
        """Batch folders left in the spool (judged or not), in batch order."""
        out = []
        for path in self.batches.iterdir():
            if path.is_dir() and path.name.isdigit():
                out.append((int(path.name), path))
        return sorted(out)

    # ------------------------------------------------------------------ routing and delivery
    def route(self, study_folder: Path, route: str, batch: int, verdict_line: str) -> Path:
        """Move a judged study from its batch folder to a route's outbox, with its verdict line beside it.

        Idempotent: a study already moved (a restart after a crash mid-routing) is left where it is.

        Args:
            study_folder: ``batches/<batch>/<study>``.
            route: the outbox name (``forward``, ``quarantine``).
            batch: its batch number (outbox entries are delivered in batch order).
            verdict_line: its ``screen --json`` line, written as ``_verdict.json``.
        """
        box = _private_dir(self.outbox / route)
        target = box / f"{batch:09d}-{study_folder.name}"
        if study_folder.is_dir():
            verdict = study_folder / VERDICT_FILE
            verdict.write_text(verdict_line + "\n", encoding="utf-8")
            with self._lock:
                self._bytes += verdict.stat().st_size
            os.rename(study_folder, target)
            _fsync_dir(box)
        return target

    def outbox_entries(self, route: str) -> list[Path]:
        """The studies waiting in a route's outbox, in batch order."""
        box = self.outbox / route
        if not box.is_dir():
            return []
        return sorted(p for p in box.iterdir() if p.is_dir() and not p.name.startswith("."))

    def discard(self, path: Path) -> None:
        """Remove a delivered file (or a finished folder) and release its bytes.

        Args:
            path: a file or folder inside the spool.
        """
        if path.is_dir():
            size = _tree_bytes(path)
            shutil.rmtree(path)
        else:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return
            path.unlink()
        with self._lock:
            self._bytes = max(0, self._bytes - size)

    def remove_empty_batch(self, folder: Path) -> None:
        """Remove a batch folder once all of its studies were routed.

        Args:
            folder: ``batches/<batch>``.
        """
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass

    def counts(self) -> dict[str, int]:
        """Studies per place (receiving, judging, each outbox), instances received and refused, bytes used."""
        receiving, instances = self.receiving()
        out = {"receiving_studies": receiving, "receiving_instances": instances,
               "judging_studies": sum(sum(1 for _ in p.iterdir()) for _, p in self.pending_batches()),
               "received_instances": self.received, "refused_instances": self.refused, "bytes": self._bytes}
        for box in sorted(self.outbox.iterdir()) if self.outbox.is_dir() else []:
            out[f"outbox_{box.name}"] = len(self.outbox_entries(box.name))
        return out
