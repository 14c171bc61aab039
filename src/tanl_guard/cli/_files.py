# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Output files of ``screen``: an exclusive lock per state file, and a report checked and locked up front.

Two screens sharing a ``--state`` or a ``--report`` would overwrite each other's work silently; the second one is
refused instead. Locks are ``flock`` locks (POSIX; released by the kernel when the process dies, so a crash
leaves no stale lock). The lock file ``<state>.lock`` is removed when its holder is done; a process that locked
a lock file just removed (it opened it before the removal) sees that the path no longer names its file, and
tries again.
"""

from __future__ import annotations

import os
from pathlib import Path

try:  # POSIX only; elsewhere the files are not locked.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["OutputBusy", "StateLock", "LockedReport", "inside"]


class OutputBusy(RuntimeError):
    """Another process holds the lock on an output file."""


def _lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved) lies in ``folder`` (resolved).

    Args:
        path: a file or folder that may not exist yet.
        folder: the folder.
    """
    return path.expanduser().resolve().is_relative_to(folder.expanduser().resolve())


class StateLock:
    """An exclusive lock on a state (checkpoint) file, held through ``<state>.lock``.

    Args:
        state: the state file.

    Raises:
        OutputBusy: when another process holds it.
        OSError: when the lock file cannot be created (the state's folder is not writable).
    """

    def __init__(self, state: Path) -> None:
        self.path = state.with_name(state.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock(fd):
                try:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                except OSError:
                    holder = ""
                os.close(fd)
                who = f" (process {holder})" if holder.isdigit() else ""
                raise OutputBusy(f"another tanl-guard screen is using the state file {state}{who}: wait for it to "
                                 "finish, or give this one another --state")
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:  # still the file the path names: the lock is ours
                self._fd = fd
                break
            os.close(fd)  # its holder removed it meanwhile: lock the new one
        if self._fd is None:  # pragma: no cover - five removals in a row
            raise OutputBusy(f"could not lock the state file {state}: its lock keeps changing")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def close(self) -> None:
        """Release the lock and remove the lock file (idempotent)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can have locked it meanwhile
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class LockedReport:
    """The ``--report`` file, opened and locked before screening so that an unwritable path fails first.

    The file is not truncated until :meth:`write`; when the run ends without writing, a file this object created
    is removed again and an existing one is left as it was.

    Args:
        path: the report file (its folder is created if missing).

    Raises:
        OutputBusy: when another process is writing it.
        OSError: when it cannot be opened for writing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._created = not path.exists()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        if not _lock(self._fd):
            os.close(self._fd)
            self._fd = None
            raise OutputBusy(f"another tanl-guard screen is writing the report {path}: give this one another --report")
        self._written = False

    def write(self, text: str) -> None:
        """Replace the report's content with ``text`` and fsync it.

        Args:
            text: the JSON lines.

        Raises:
            OSError: when writing fails (disk full ...).
        """
        if self._fd is None:
            raise OSError("the report is closed")
        data = text.encode("utf-8")
        os.ftruncate(self._fd, 0)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(self._fd, view[offset:], offset)
        os.fsync(self._fd)
        self._written = True

    def close(self) -> None:
        """Release the lock; remove the file if this run created it and wrote nothing (idempotent)."""
        if self._fd is None:
            return
        if self._created and not self._written:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
