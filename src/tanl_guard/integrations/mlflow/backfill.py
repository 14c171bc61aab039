# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Back-fill: deliver the journals that earlier runs left pending, each to its own store and run.

A journal that cannot be delivered (a store that is down, a tracking URI that is no longer valid, a corrupt
header) is reported and skipped; the others are still delivered, so one bad journal never blocks the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import check_tracking_uri
from .delivery import DeliveryResult, deliver, make_client
from .journal import Journal

__all__ = ["backfill_journals"]

logger = logging.getLogger(__name__)


def _skipped(journal: Journal, error: str) -> DeliveryResult:
    lines = journal.read()
    marker = journal.load_marker()
    pending = lines[marker.offset :]
    records = sum(len(e.get("records") or []) for e in pending if e.get("kind") == "verdicts")
    return DeliveryResult(journal=str(journal.path), run_key=journal.key, run_id=marker.run_id, delivered_entries=0,
                          delivered_records=0, pending_entries=len(pending), pending_records=records, complete=False,
                          error=error)


def backfill_journals(
    journal_dir: Path,
    default_uri: str,
    *,
    own: Path | None = None,
    client_for: Callable[[str], Any] | None = None,
    max_retries: int = 2,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
) -> list[DeliveryResult]:
    """Deliver every incomplete, unlocked journal of ``journal_dir`` to the store in its header.

    Runs in a background thread and waits at most ``timeout_s``; the rest goes on in the background. A journal
    whose delivery fails is reported (a warning and a result with ``error``) and the next one is tried.

    Args:
        journal_dir: the journal folder.
        default_uri: the store for journals whose header names none.
        own: the caller's own journal, never touched here.
        client_for: ``uri -> MlflowClient`` (default :func:`~.delivery.make_client`).
        max_retries: retries per journal.
        backoff_s: first back-off between attempts.
        timeout_s: the longest to wait.

    Returns:
        One result per journal processed within the wait.
    """
    results: list[DeliveryResult] = []
    done = threading.Event()
    make = client_for or make_client

    def work() -> None:
        clients: dict[str, Any] = {}
        try:
            journals = Journal.scan(journal_dir)
        except OSError as exc:
            logger.warning("audit back-fill could not read %s: %s", journal_dir, exc)
            done.set()
            return
        for journal in journals:
            try:
                if journal.path == own or journal.load_marker().complete:
                    continue
                if not journal.try_lock():  # a live logger (here or in another process) owns it
                    continue
            except OSError as exc:
                logger.warning("audit back-fill skips %s: %s", journal.path.name, exc)
                continue
            try:
                uri = journal.header().get("tracking_uri") or default_uri
                check_tracking_uri(uri)
                if uri not in clients:
                    clients[uri] = make(uri)
                result = deliver(journal, clients[uri], max_retries=max_retries, backoff_s=backoff_s,
                                 backfill=True, close_abandoned=True)
            except Exception as exc:  # this journal cannot be delivered now: report it, go on with the others
                result = _skipped(journal, f"{type(exc).__name__}: {exc}")
            finally:
                journal.unlock()
            if result.error:
                logger.warning("audit back-fill skipped journal %s (%d records pending): %s", journal.key,
                               result.pending_records, result.error)
            results.append(result)
        done.set()

    threading.Thread(target=work, name="tanl-guard-backfill", daemon=True).start()
    done.wait(timeout_s)
    return list(results)
