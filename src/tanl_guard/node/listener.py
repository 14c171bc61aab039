# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The listener service: receive studies (C-STORE), judge complete ones in batches, route them, restart-safe.

One batch, in order, each step durable before the next::

    take      complete studies move from the intake to batches/<n>/            (rename per study)
    judge     the screening pipeline gates batches/<n> with the long-lived guard (seeded shuffled order)
    log       their ``screen --json`` lines are appended to --json-log and fsync'd
    commit    signed checkpoint: guard state, n, each study's route and line, the log's length
    audit     the batch's audit records go to the MLflow run (after the commit: never twice)
    route     each study moves to the outbox of its route; the forwarders deliver from there

A restart reads the checkpoint: the log is cut back to the committed length, the routing of batch n is
finished, later batch folders are judged again from the committed state (the same verdicts: the state, the
studies and the seeded order are the same), the intake's studies complete one timeout later, and the outboxes
are delivered. Nothing acknowledged is lost at any point: every instance is in exactly one spool folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..dicom import DicomScanConfig
from ..guard import StudyVerdict
from ..guard.verdicts import ACCEPT, REJECT, UNREADABLE
from ..pipeline.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ListenConfig
from .forwarder import FolderDestination, Forwarder, PeerDestination
from .gate import DeferredAudit, judge_folder
from .scp import StorageSCP
from .spool import Spool

__all__ = ["Listener", "LISTENER_CHECKPOINT", "FORWARD", "QUARANTINE"]

log = logging.getLogger(__name__)

LISTENER_CHECKPOINT = "listener"  # the ``folder`` of a listener's checkpoint (a screening checkpoint's key)
FORWARD, QUARANTINE, DROP = "forward", "quarantine", "drop"


def _batch_seed(seed: int, batch: int) -> int:
    return (seed * 1_000_003 + batch) % 2**31


class Listener:
    """A DICOM node that gates studies with a long-lived :class:`~tanl_guard.guard.Guard`.

    Example::

        listener = Listener(guard, ListenConfig(spool="/var/spool/tg", state_path="/var/lib/tg/state.pt",
                                                forward=Peer.parse("AINODE@10.0.0.5:104")), audit=audit_logger)
        listener.start()
        listener.run()            # until request_stop(), e.g. from a SIGTERM handler

    Args:
        guard: the guard; its state carries over from batch to batch and across restarts (checkpoint).
        config: network, spool, batching and routes.
        audit: a started :class:`~tanl_guard.integrations.mlflow.AuditLogger`, or None.
        dicom_config: scan and decode settings (default: ``DicomScanConfig(view=config.view)``).
        salt: salt of the study keys (default: the installation's).
    """

    def __init__(self, guard: Any, config: ListenConfig, audit: Any = None,
                 dicom_config: DicomScanConfig | None = None, salt: str | None = None) -> None:
        self.guard = guard
        self.config = config
        self.audit = audit
        self.dicom_config = dicom_config if dicom_config is not None else DicomScanConfig(view=config.view, salt=salt)
        self.spool = Spool(config.spool, config.max_spool_bytes, config.study_timeout_s, salt=salt)
        self.scp = StorageSCP(self.spool, config.ae_title, config.host, config.port)
        self.forwarders: dict[str, Forwarder] = {}
        destinations: dict[str, Any] = {}
        if config.forward is not None:
            destinations[FORWARD] = PeerDestination(config.forward, config.ae_title, config.network_timeout_s)
        if config.quarantine is not None:
            destinations[QUARANTINE] = PeerDestination(config.quarantine, config.ae_title, config.network_timeout_s)
        elif config.quarantine_dir is not None:
            destinations[QUARANTINE] = FolderDestination(config.quarantine_dir)
        for route, destination in destinations.items():
            self.forwarders[route] = Forwarder(self.spool, route, destination, config.retry_backoff_s,
                                               config.max_backoff_s, poll_s=max(config.poll_s, 0.05))
        self.step = 0  # studies judged since the state was new
        self.batch = 0  # the last committed batch
        # plain string keys: they go into the checkpoint, which loads weights_only
        self.counts: dict[str, int] = {ACCEPT.value: 0, REJECT.value: 0, UNREADABLE.value: 0, "orphan_files": 0}
        self.resumed = False
        self.started_at = time.time()
        self.last_batch_latency_s: float | None = None
        self.seconds: dict[str, float] = dict.fromkeys(("ingest", "encode", "gate", "audit", "commit", "route"), 0.0)
        self._json_offset = 0
        self._since_snapshot = 0
        self._stop = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        """Stop after the batch in hand (safe from a signal handler): it is judged, committed and routed."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def start(self) -> Listener:
        """Recover from the spool and the checkpoint, then start the forwarders and the SCP."""
        self._recover()
        for forwarder in self.forwarders.values():
            forwarder.start()
        self.scp.start()
        self._started = True
        log.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.scp.port)
        return self

    def run(self) -> dict[str, int]:
        """Receive, judge and route until :meth:`request_stop`; then finish the batch in hand and shut down.

        Returns:
            The verdict counts since the state was new.
        """
        if not self._started:
            self.start()
        try:
            while not self._stop.is_set():
                if not self.step_once():
                    self._stop.wait(self.config.poll_s)
        finally:
            self.close()
        return dict(self.counts)

    def step_once(self, now: float | None = None) -> bool:
        """Judge one batch if one is due (a batch folder left by a restart, or complete studies).

        Args:
            now: the time to judge completion by (``time.monotonic`` clock).

        Returns:
            Whether a batch was judged.
        """
        left = [(n, p) for n, p in self.spool.pending_batches() if n > self.batch]
        if left:  # received and taken before a restart, not committed: judge it again, same state, same order
            self._judge(*left[0])
            return True
        now = time.monotonic() if now is None else now
        complete = self.spool.complete(now)
        if not complete:
            return False
        waited = now - complete[0].completed_at
        if waited < self.config.batch_wait_s and sum(c.instances for c in complete) < self.config.batch_size:
            return False
        batch = self.batch + 1
        folder = self.spool.take([c.key for c in complete], batch)
        self._judge(batch, folder, now - complete[0].completed_at)
        return True

    def close(self) -> None:
        """Stop the SCP and the forwarders, snapshot the state to the audit run (idempotent)."""
        if not self._started:
            return
        self._started = False
        self.scp.stop()
        for forwarder in self.forwarders.values():
            forwarder.stop(self.config.network_timeout_s)
        if self.audit is not None:
            self.audit.log_state(self.guard.snapshot(), step=self.step)
            self.audit.log_final_state(self.config.state_path)

    # ------------------------------------------------------------------ recovery and commit
    def _recover(self) -> None:
        path = Path(self.config.state_path)
        if path.exists():
            checkpoint = load_checkpoint(path)
            if not isinstance(checkpoint.get("listener"), dict):
                raise CheckpointError(f"{path.name} is a checkpoint of a folder screening, not of a listener")
            self.guard.load_state_dict(checkpoint["guard"])
            state = checkpoint["listener"]
            self.step, self.batch = int(checkpoint["step"]), int(state["batch"])
            self.counts.update(state.get("counts", {}))
            self._json_offset = int(state.get("json_log_offset", 0))
            self.resumed = True
            log_path = self.config.json_log
            if log_path and os.path.exists(log_path):
                if state.get("json_log") != self._json_log_id():  # another log than the checkpoint's: append to it
                    self._json_offset = os.path.getsize(log_path)
                elif os.path.getsize(log_path) > self._json_offset:  # lines of a batch never committed
                    os.truncate(log_path, self._json_offset)
            self._finish_routing(self.batch, state.get("routes", {}))
            log.info("resumed from the checkpoint: %d studies judged, batch %d", self.step, self.batch)
        else:
            self._json_offset = os.path.getsize(self.config.json_log) if (
                self.config.json_log and os.path.exists(self.config.json_log)) else 0
            self._commit({})  # from now on the log's committed length is known
        stale = [n for n, _ in self.spool.pending_batches() if n < self.batch]
        if stale:  # cannot happen with this module; never judge them silently with a later state
            raise CheckpointError(f"the spool holds batches older than the checkpoint ({len(stale)}): wrong --state?")

    def _commit(self, routes: dict[str, list[str]]) -> None:
        save_checkpoint(self.config.state_path, {
            # the keys a screening checkpoint needs (v2: folder, verdicts; v3: manifest, last_batch), so that
            # `tanl-guard state show` reads it; the listener's own state is under "listener"
            "folder": LISTENER_CHECKPOINT, "manifest": LISTENER_CHECKPOINT, "last_batch": self.batch,
            "order": ["shuffled", self.config.seed], "guard": self.guard.state_dict(), "verdicts": {},
            "step": self.step,
            "metadata": {"run_id": getattr(self.audit, "run_id", None)},
            "listener": {"batch": self.batch, "routes": routes, "json_log": self._json_log_id(),
                         "json_log_offset": self._json_offset, "counts": dict(self.counts)},
        })

    def _json_log_id(self) -> str | None:
        """Which JSON log the checkpoint's offset belongs to: a digest of its path (the checkpoint goes to MLflow,
        and paths may hold names)."""
        if not self.config.json_log:
            return None
        return hashlib.sha256(os.path.abspath(self.config.json_log).encode()).hexdigest()[:16]

    def _finish_routing(self, batch: int, routes: dict[str, list[str]]) -> None:
        folder = self.spool.batches / f"{batch:09d}"
        if not folder.is_dir():
            return
        for study in sorted(p for p in folder.iterdir() if p.is_dir()):
            route, line = routes.get(study.name, [QUARANTINE, json.dumps(StudyVerdict(
                study=study.name, verdict=UNREADABLE, reason="arrived after its batch was judged").to_json())])
            self._route(study, route, batch, line)
        self.spool.remove_empty_batch(folder)
        for forwarder in self.forwarders.values():
            forwarder.wake()

    def _route(self, study: Path, route: str, batch: int, line: str) -> None:
        if route in self.forwarders:
            self.spool.route(study, route, batch, line)
        else:  # no destination for this route: the verdict is journaled, the instances are let go
            self.spool.discard(study)

    # ------------------------------------------------------------------ one batch
    def _judge(self, batch: int, folder: Path, waited_s: float | None = None) -> None:
        start = time.perf_counter()
        deferred = DeferredAudit(self.audit.wants_thumbnails) if self.audit is not None else None

        def on_batch(step: int) -> None:  # the detector's state curves, as `screen` logs them
            if deferred is not None:
                deferred.log_state(self.guard.snapshot(), step=step, save_snapshot=False)

        result = judge_folder(self.guard, folder, self.config.view, self.config.batch_size,
                             _batch_seed(self.config.seed, batch), self.dicom_config, deferred, on_batch)
        for phase, seconds in result.seconds.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        studies = {p.name for p in folder.iterdir() if p.is_dir()}
        routes: dict[str, list[str]] = {}
        lines: list[dict[str, Any]] = []
        judged = 0
        for verdict in result.verdicts + [StudyVerdict(study=key, verdict=UNREADABLE, reason="no readable instance")
                                          for key in sorted(studies - {v.study for v in result.verdicts})]:
            line = verdict.to_json()
            lines.append(line)
            judged += 1
            self.counts[verdict.verdict] += 1
            if verdict.step is None and deferred is not None:  # not seen by the screener: audit it here
                deferred.log_verdicts([{**line, "step": judged}], step=judged)
            if verdict.study in studies:
                routes[verdict.study] = [FORWARD if verdict.verdict == ACCEPT else QUARANTINE, json.dumps(line)]
        for orphan in result.orphans:
            lines.append(orphan.to_json())
            self.counts["orphan_files"] += 1
        if self.config.json_log and lines:
            with open(self.config.json_log, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(line) + "\n" for line in lines))
                handle.flush()
                os.fsync(handle.fileno())
                self._json_offset = handle.tell()
        before = self.step
        self.step += judged
        self.batch = batch
        t = time.perf_counter()
        self._commit(routes)
        if deferred is not None:
            deferred.replay(self.audit, before)
            self._since_snapshot += judged
            if self._since_snapshot >= self.config.snapshot_every:
                self.audit.log_state(self.guard.snapshot(), step=self.step)
                self._since_snapshot = 0
        self.seconds["commit"] += time.perf_counter() - t
        t = time.perf_counter()
        self._finish_routing(batch, routes)
        self.seconds["route"] += time.perf_counter() - t
        self.last_batch_latency_s = (waited_s or 0.0) + time.perf_counter() - start
        log.info("batch %d: %d studies (%s)", batch, judged,
                 ", ".join(f"{n} {v}" for v, n in self._batch_counts(lines).items()))

    @staticmethod
    def _batch_counts(lines: list[dict[str, Any]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in lines:
            if line.get("study") is not None:
                out[line["verdict"]] = out.get(line["verdict"], 0) + 1
        return out

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What an operator asks a running listener: health, counts, threshold, queues, leading negatives."""
        snapshot = self.guard.snapshot(n_negatives=8)
        out: dict[str, Any] = {
            "ok": bool(snapshot.get("health", {}).get("ok", True)) and self.scp._server is not None,
            "ae_title": self.config.ae_title, "port": self.scp.port,
            "uptime_s": round(time.time() - self.started_at, 1),
            "studies_judged": self.step, "batches": self.batch, "verdicts": dict(self.counts),
            "spool": self.spool.counts(),
            "routes": {route: {"pending": f.pending(), "delivered": f.delivered, "failures": f.failures,
                               "last_error": f.last_error} for route, f in self.forwarders.items()},
            "last_batch_latency_s": self.last_batch_latency_s,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }
        for key in ("threshold", "pos_queue", "neg_queue", "selected_negatives", "images_screened", "health"):
            if key in snapshot:
                out[key] = snapshot[key]
        if "label_warmup" in snapshot.get("fusion", {}):  # a fresh fused guard's label gate refuses nothing yet
            out["label_warmup"] = snapshot["fusion"]["label_warmup"]
        return out
