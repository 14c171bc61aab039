# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Delivering judged studies: to a DICOM node (C-STORE SCU) or to a folder, retried with back-off until done.

Each route (``forward``, ``quarantine``) has an outbox in the spool and a :class:`Forwarder` thread that empties
it in batch order. A study is sent whole, over one association, each instance unchanged: its bytes as stored,
proposed with its own transfer syntax (no transcoding; a node that does not accept that transfer syntax refuses
the study, which then waits in the outbox and is logged). Each instance is removed from the spool as soon as the
node answered Success for it, so a restart resends nothing that was acknowledged; only the one instance in
flight when the process died may be sent again, which a DICOM node stores once (by its SOP Instance UID). A
failed delivery is retried with exponential back-off; other studies of the outbox are tried meanwhile.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from .._optional import optional_import
from .peer import Peer
from .spool import INSTANCE_SUFFIX, Spool

__all__ = ["Destination", "PeerDestination", "FolderDestination", "Forwarder", "DeliveryError"]

log = logging.getLogger(__name__)

_OK_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # success, and the warnings that still mean "stored"
_MAX_CONTEXTS = 128  # presentation contexts one association may propose


class DeliveryError(RuntimeError):
    """A study could not be delivered now (it stays in the outbox and is retried). One line, no PHI."""


class Destination(Protocol):
    """Where a route's studies go."""

    def deliver(self, entry: Path, spool: Spool) -> None:
        """Deliver the study in ``entry`` (removing what was delivered from the spool) or raise DeliveryError."""

    def describe(self) -> str:
        """A short name for logs."""


class PeerDestination:
    """A DICOM node that receives studies by C-STORE.

    Args:
        peer: the node.
        calling_ae: this node's AE title.
        timeout_s: network, association and DIMSE timeouts in seconds.
    """

    def __init__(self, peer: Peer, calling_ae: str = "TANLGUARD", timeout_s: float = 30.0) -> None:
        self.peer = peer
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return str(self.peer)

    def deliver(self, entry: Path, spool: Spool) -> None:
        """Send every instance of the study in ``entry`` over one association (more past 128 contexts).

        Args:
            entry: the study's outbox folder.
            spool: the spool (each instance acknowledged by the node is removed from it).

        Raises:
            DeliveryError: the node is down, refused the association or a transfer syntax, or a store failed.
        """
        pynetdicom = optional_import("pynetdicom", "node", "forwarding studies")
        from pydicom.filereader import read_file_meta_info

        # Send the stored bytes from the file as they are, never decoded and re-encoded.
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
        files: dict[tuple[str, str], list[Path]] = {}
        for path in sorted(entry.glob("*" + INSTANCE_SUFFIX)):
            meta = read_file_meta_info(path)
            context = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            files.setdefault(context, []).append(path)
        contexts = sorted(files)
        for start in range(0, len(contexts), _MAX_CONTEXTS):
            chunk = contexts[start : start + _MAX_CONTEXTS]
            ae = pynetdicom.AE(ae_title=self.calling_ae)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
            ae.connection_timeout = self.timeout_s
            for sop_class, syntax in chunk:
                ae.add_requested_context(sop_class, syntax)
            assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
            if not assoc.is_established:
                raise DeliveryError(f"{self.peer}: no association ({'rejected' if assoc.is_rejected else 'no answer'})")
            try:
                accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
                for context in chunk:
                    if context not in accepted:
                        raise DeliveryError(f"{self.peer} refused {_uid_name(context[0])} in {_uid_name(context[1])}")
                    for path in files[context]:
                        status = assoc.send_c_store(path)
                        code = int(getattr(status, "Status", -1)) if status else -1
                        if code not in _OK_STATUSES:
                            raise DeliveryError(f"{self.peer}: C-STORE answered "
                                                + (f"0x{code:04X}" if code >= 0 else "nothing (aborted or timed out)"))
                        spool.discard(path)
            finally:
                if assoc.is_established:
                    assoc.release()


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


class FolderDestination:
    """A folder that receives whole study folders (instances + ``_verdict.json``), e.g. a quarantine.

    A study is copied to ``<folder>/.<name>.part``, fsync'd and renamed to ``<folder>/<name>`` (mode 0700), then
    removed from the spool; a restart after a crash in between finds the finished copy and only removes the
    spool's.

    Args:
        folder: the target folder (created mode 0700).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def describe(self) -> str:
        return "folder"

    def deliver(self, entry: Path, spool: Spool) -> None:
        """Copy the study in ``entry`` into the folder, then remove it from the spool.

        Args:
            entry: the study's outbox folder.
            spool: the spool.

        Raises:
            DeliveryError: when the folder cannot be written.
        """
        target = self.folder / entry.name
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not target.exists():
                part = self.folder / f".{entry.name}.part"
                shutil.rmtree(part, ignore_errors=True)
                shutil.copytree(entry, part)
                os.chmod(part, 0o700)
                for path in part.iterdir():
                    with open(path, "rb+") as handle:
                        os.fsync(handle.fileno())
                os.rename(part, target)
        except OSError as exc:
            raise DeliveryError(f"quarantine folder not writable ({exc.strerror or type(exc).__name__})") from None
        spool.discard(entry)


class Forwarder:
    """Empties one outbox of the spool into its destination, in a background thread.

    Args:
        spool: the spool.
        route: the outbox name.
        destination: where the studies go.
        backoff_s: first retry delay after a failure; doubled per failure of the same study up to ``max_backoff_s``.
        max_backoff_s: the longest retry delay.
        poll_s: how often an empty outbox is looked at.
    """

    def __init__(self, spool: Spool, route: str, destination: Any, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, poll_s: float = 0.2) -> None:
        self.spool = spool
        self.route = route
        self.destination = destination
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self._retry: dict[str, tuple[int, float]] = {}  # entry name -> (failures, next attempt); outbox-bounded
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Forwarder:
        """Start the delivery thread."""
        self._thread = threading.Thread(target=self._loop, name=f"tanl-guard-{self.route}", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the outbox now (new studies were routed)."""
        self._wake.set()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the study in hand; what is left stays in the outbox for the next start.

        Args:
            timeout_s: the longest to wait for the thread.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def pending(self) -> int:
        """Studies waiting in the outbox."""
        return len(self.spool.outbox_entries(self.route))

    def run_once(self, now: float | None = None) -> float:
        """Try every study of the outbox that is due; return the seconds until the next one is due.

        Args:
            now: the time to judge by (``time.monotonic`` clock).
        """
        entries = self.spool.outbox_entries(self.route)
        names = {e.name for e in entries}
        self._retry = {k: v for k, v in self._retry.items() if k in names}
        wait = self.poll_s
        for entry in entries:
            if self._stop.is_set():
                break
            now = time.monotonic()
            failures, due = self._retry.get(entry.name, (0, 0.0))
            if due > now:
                wait = min(wait, due - now)
                continue
            try:
                self.destination.deliver(entry, self.spool)
            except DeliveryError as exc:
                self._fail(entry.name, failures, str(exc))
                continue
            except Exception as exc:  # an unexpected error: keep the study, say what kind, retry later
                self._fail(entry.name, failures, f"{type(exc).__name__} while delivering")
                continue
            self.delivered += 1  # counted before the entry goes: an empty outbox means all were counted
            self._retry.pop(entry.name, None)
            if entry.exists():
                self.spool.discard(entry)
            if failures:
                log.info("%s: study %s delivered to %s after %d failed attempt(s)", self.route,
                         entry.name.split("-", 1)[-1], self.destination.describe(), failures)
        return wait

    def _fail(self, name: str, failures: int, error: str) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**failures)
        self._retry[name] = (failures + 1, time.monotonic() + delay)
        self.failures += 1
        self.last_error = error
        log.warning("%s: study %s not delivered (%s); retry in %.1fs", self.route, name.split("-", 1)[-1],
                    error, delay)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.run_once()
            self._wake.wait(max(0.01, wait))
            self._wake.clear()
