# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Configuration of ``tanl-guard listen``: network, spool, completion, batching, routes."""

from __future__ import annotations

from dataclasses import dataclass

from .peer import Peer

__all__ = ["ListenConfig"]


@dataclass(frozen=True)
class ListenConfig:
    """How the listener receives, judges and routes studies.

    Attributes:
        spool: the private spool folder (see :class:`~tanl_guard.node.spool.Spool`).
        state_path: the signed checkpoint: detector state, batch in hand, routes (restart continues from it).
        forward: where accepted studies go (None: they stay in the spool's ``forward`` outbox).
        quarantine: a DICOM node for rejected and unreadable studies.
        quarantine_dir: a folder for rejected and unreadable studies (instead of ``quarantine``). With neither,
            they are removed from the spool once their verdict is journaled.
        host: the address the SCP listens on.
        port: its port (0: any free port).
        ae_title: this node's AE title (also the calling AE title of its forwards).
        study_timeout_s: a study is complete after this many seconds without a new instance.
        batch_wait_s: once a study is complete, wait up to this long for more complete studies to gate with it
            (unless ``batch_size`` instances are complete already).
        batch_size: views per gate batch, as in ``screen``.
        view: the view spec, as in ``screen``.
        seed: seed of the shuffled order within each batch (and of TANL's cold start).
        max_spool_bytes: the spool's size cap (0: none); instances beyond it are refused, out of resources.
        json_log: a file that gets one ``screen --json`` line per judged study (None: none).
        snapshot_every: log a detector-state snapshot to MLflow after at least this many newly judged studies.
        retry_backoff_s: first delay before a failed delivery is tried again (doubled per failure).
        max_backoff_s: the longest retry delay.
        network_timeout_s: timeouts of the forwards' associations.
        poll_s: how often the intake and the outboxes are looked at.
    """

    spool: str
    state_path: str
    forward: Peer | None = None
    quarantine: Peer | None = None
    quarantine_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "TANLGUARD"
    study_timeout_s: float = 30.0
    batch_wait_s: float = 2.0
    batch_size: int = 32
    view: str = "slices:3"
    seed: int = 0
    max_spool_bytes: int = 0
    json_log: str | None = None
    snapshot_every: int = 50
    retry_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    network_timeout_s: float = 30.0
    poll_s: float = 0.1

    def __post_init__(self) -> None:
        if self.quarantine is not None and self.quarantine_dir is not None:
            raise ValueError("give a quarantine node or a quarantine folder, not both")
        if self.study_timeout_s <= 0 or self.batch_wait_s < 0 or self.poll_s <= 0:
            raise ValueError("study_timeout_s and poll_s must be > 0, batch_wait_s >= 0")
        if self.batch_size < 1 or self.snapshot_every < 1:
            raise ValueError("batch_size and snapshot_every must be >= 1")
        if self.max_spool_bytes < 0 or self.retry_backoff_s <= 0 or self.max_backoff_s < self.retry_backoff_s:
            raise ValueError("max_spool_bytes must be >= 0, and 0 < retry_backoff_s <= max_backoff_s")
