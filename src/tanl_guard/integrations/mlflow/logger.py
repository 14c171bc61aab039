# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``AuditLogger``: one MLflow run per screening, journalled locally first, delivered in bounded batches."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tanl_guard._offline import disable_telemetry
from tanl_guard._optional import optional_import

from ...guard.counts import COUNT_METRICS, StudyCounts, is_orphan_file
from ...privacy import check_hashed_key, check_no_phi
from .backfill import backfill_journals
from .config import AuditConfig
from .delivery import RUN_KEY_TAG, DeliveryResult, deliver, make_client
from .journal import DeliveryMarker, Journal, new_run_key
from .params import MAX_TAG_VALUE_LENGTH, config_sha256, flatten_params, package_version, truncate
from .records import normalise_verdict_record
from .snapshot import FINAL_STATE_ARTIFACT, state_metrics, to_json_safe
from .thumbnails import THUMBNAIL_FOLDER, write_thumbnail

__all__ = ["AuditLogger", "RUN_STATUSES"]

logger = logging.getLogger(__name__)

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
END_REASON_TAG = "audit.end_reason"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST = re.compile(r"^[0-9a-f]{8,128}$")


class AuditLogger:
    """Audit trail of one screening run in MLflow; nothing is lost when MLflow is slow or down.

    Every call writes to a local JSON Lines journal first (fsync'd) and returns; entries go to MLflow in
    batches from a background thread, with retries and back-off. ``flush``, ``start`` and ``finish`` wait at
    most ``config.flush_timeout_s``: whatever has not arrived by then stays pending in the journal and is
    delivered by a later flush, or back-filled by the next run (:meth:`backfill`) into its original run.

    Example::

        description = describe_guard(guard, entry_point="nightly")        # tanl_guard.guard.describe
        with AuditLogger(AuditConfig(run_name="nightly")) as audit:
            audit.start(params=description.params, tags=description.tags)
            audit.log_verdicts(records, step=64)
            audit.log_state(guard.snapshot(), step=64)
            audit.log_final_state("tanl_guard_state.pt")                  # -> state/final.pt

    A run whose caller raised inside the ``with`` block ends ``FAILED`` and releases its journal.

    Args:
        config: where and how to log; the default logs to ``sqlite:///<cwd>/mlflow.db``.
    """

    def __init__(self, config: AuditConfig | None = None) -> None:
        disable_telemetry()  # the only connections made are to the tracking URI
        optional_import("mlflow", "mlflow", "the MLflow audit trail")  # fail here, not silently in a thread
        self.config = config or AuditConfig()
        self.tracking_uri = self.config.resolved_tracking_uri()
        self.journal_dir = self.config.resolved_journal_dir()
        self.last_error: str | None = None
        self._journal: Journal | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._worker_done = threading.Event()
        self._worker_done.set()
        self._dirty = False
        self._finished = False
        self._release_when_idle = False
        self._run_id: str | None = None
        self._delivered = 0  # journal lines delivered (the marker offset)
        # (kind, verdict records) per journal line not yet delivered; _lines_base is the offset of its first line,
        # so a long-lived run (the DICOM listener) keeps only what MLflow has not received yet
        self._lines: list[tuple[str, int]] = []
        self._lines_base = 0
        self._counts = {verdict.value: 0 for verdict in COUNT_METRICS}
        self._orphans = 0
        self._screened = 0
        self._unflushed = 0
        self._prev_negatives: list[str] | None = None
        self._state_metrics_step: int | None = None
        self._n_files = 0

    # ---- properties --------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The MLflow run id; ``None`` before ``start`` or while MLflow could not be reached to create it."""
        return self._run_id

    @property
    def run_key(self) -> str | None:
        """The local run key naming the journal (``<journal_dir>/<run_key>.jsonl``)."""
        return None if self._journal is None else self._journal.key

    @property
    def journal_path(self) -> Path | None:
        """Path of this run's journal file."""
        return None if self._journal is None else self._journal.path

    @property
    def pending(self) -> dict[str, int]:
        """Journal entries not yet in MLflow: ``entries`` (all kinds), ``records`` (verdict records) and one
        count per entry kind (``start``, ``params``, ``tags``, ``verdicts``, ``metrics``, ``state``,
        ``artifact``, ``end``)."""
        out = {"entries": 0, "records": 0}
        self._forget_delivered()
        for kind, records in self._lines:
            out["entries"] += 1
            out["records"] += records
            out[kind] = out.get(kind, 0) + 1
        return out

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(
        self,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        resume_run_id: str | None = None,
        run_name: str | None = None,
    ) -> str | None:
        """Open the run: back-fill earlier pending journals, journal the params and tags, create the run
        (waiting at most ``config.start_timeout_s``).

        Tags added automatically: ``tanl_guard.version``, ``config.sha256`` (always of ``params``, so the same
        settings give the same digest whoever starts the run) and ``tanl_guard.run_key``. Describe a guard with
        :func:`tanl_guard.guard.describe_guard`, which gives the params, the encoder, corpus and source tags and a
        run name in one place.

        Args:
            params: every setting, nested mappings allowed (flattened to ``a.b.c`` keys).
            tags: run tags (values are converted to text).
            resume_run_id: log into this existing run instead of creating one (``screen --resume``).
            run_name: the run name when ``config.run_name`` is not set.

        Returns:
            The run id, or ``None`` when MLflow could not be reached within ``start_timeout_s``; the run is then
            created by a later flush or back-fill, and everything logged meanwhile goes to it.

        Raises:
            RuntimeError: when called twice.
            ValueError: for patient-identifying keys in ``params`` or ``tags``.
        """
        if self._journal is not None:
            raise RuntimeError("AuditLogger.start() was already called; use one logger per run")
        params = dict(params or {})
        tags = dict(tags or {})
        check_no_phi(params, "params")
        check_no_phi(tags, "tags")
        flat = flatten_params(params)
        if self.config.backfill_on_start:
            self.backfill()
        key = new_run_key()
        run_tags = {"tanl_guard.version": package_version()}
        run_tags.update({str(k): truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in tags.items()})
        run_tags["config.sha256"] = config_sha256(params)
        run_tags[RUN_KEY_TAG] = key
        header = {
            "tracking_uri": self.tracking_uri,
            "experiment": self.config.experiment,
            "run_name": self.config.run_name or run_name,
            "artifact_location": self.config.resolved_artifact_location(),
            "run_id": resume_run_id,
            "resume_run_id": resume_run_id,
        }
        self._journal = Journal.create(self.journal_dir, key, header)
        self._run_id = resume_run_id
        self._lines.append(("start", 0))
        entries: list[dict[str, Any]] = []
        if flat:
            entries.append({"kind": "params", "params": flat})
        entries.append({"kind": "tags", "tags": run_tags})
        self._append(entries)
        if params:
            self.log_dict(params, "config/run_params.json")
        if resume_run_id:
            self._seed_counts(resume_run_id)
        self.flush(timeout_s=self.config.start_timeout_s)
        return self._run_id

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> bool:
        """Close the run: journal the end status, flush (bounded) and release the journal.

        Also uploads ``corpus/selected_negatives.txt`` when :meth:`log_state` saw ``selected_negatives``.

        Args:
            status: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.
            reason: why the run ended that way, as tag ``audit.end_reason`` (e.g. ``"SIGTERM"`` or an exception's
                type name; never an exception text, which may hold paths).

        Returns:
            ``True`` when everything reached MLflow; ``False`` when entries stay pending for a back-fill.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        if self._journal is None or self._finished:
            return self.pending["entries"] == 0
        if self._prev_negatives is not None:
            self._log_text("\n".join(self._prev_negatives) + "\n", "corpus/selected_negatives.txt")
        if reason:
            self._append([{"kind": "tags", "tags": {END_REASON_TAG: truncate(str(reason), 250)}}])
        self._append([{"kind": "end", "status": status}])
        self._finished = True
        self.flush()
        self._worker_done.wait(self.config.flush_timeout_s)
        with self._lock:
            if self._worker is None:
                self._journal.unlock()
            else:  # delivery still running: the worker releases the journal when it stops
                self._release_when_idle = True
        pending = self.pending
        if pending["entries"]:
            logger.warning(
                "audit run %s: %d journal entries (%d verdict records) not yet in MLflow; kept in %s and "
                "back-filled by the next run",
                self.run_key,
                pending["entries"],
                pending["records"],
                self._journal.path,
            )
        return pending["entries"] == 0

    def __enter__(self) -> AuditLogger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._journal is not None and not self._finished:
            if exc_type is None:
                self.finish("FINISHED")
            else:
                self.fail(exc_type)

    def fail(self, error: BaseException | type[BaseException] | str | None = None) -> bool:
        """End the run ``FAILED`` (``KILLED`` for a keyboard interrupt), release the journal and say so.

        For callers whose work raised: the run does not stay ``RUNNING`` and the journal lock is released. The
        warning and the ``audit.end_reason`` tag name the exception type only (its text may hold paths).

        Args:
            error: the exception (or its type, or a short reason).

        Returns:
            Whether everything reached MLflow (as :meth:`finish`).
        """
        if isinstance(error, BaseException):
            error = type(error)
        name = error.__name__ if isinstance(error, type) else (str(error) if error else "error")
        status = "KILLED" if name == "KeyboardInterrupt" else "FAILED"
        if self._journal is None or self._finished:
            return self.pending["entries"] == 0
        logger.warning("audit run %s ended %s (%s)", self._run_id or self.run_key, status, name)
        return self.finish(status, reason=f"exception: {name}" if isinstance(error, type) else name)

    # ---- logging -----------------------------------------------------------------------------------------
    def log_verdicts(self, records: Iterable[Mapping[str, Any]], step: int | None = None) -> None:
        """Journal per-study verdict records and the screening metrics at ``step``.

        Metrics logged (step = studies screened): ``screen/accepted``, ``screen/rejected``,
        ``screen/unreadable`` (cumulative counts of studies), ``screen/studies``, ``screen/orphan_files``
        (unreadable files of no study: ``"study": null``; not studies, as in
        :func:`tanl_guard.guard.count_studies`), ``screen/reject_rate`` (rejected over
        accepted + rejected: unreadable studies are not judged), ``gate/id_score_mean`` (this batch) and
        ``gate/threshold`` (the last threshold in this batch), unless ``config.auto_metrics`` is off. Flushes
        when ``batch_size`` records are waiting.

        Args:
            records: study records in the ``screen --json`` format (hashed study/series keys only).
            step: studies screened so far, including these; defaults to the running count.

        Raises:
            ValueError: for patient-identifying keys, raw UIDs or malformed records (nothing is journalled).
        """
        self._require_started()
        recs = [normalise_verdict_record(r) for r in records]
        if not recs:
            return
        orphans = sum(1 for r in recs if is_orphan_file(r))
        studies = len(recs) - orphans
        step = self._screened + studies if step is None else int(step)
        self._screened = max(self._screened + studies, step)
        for rec in recs:
            if rec.get("step") is None:
                rec["step"] = step
            if not is_orphan_file(rec):
                self._counts[rec["verdict"]] += 1
        self._orphans += orphans
        metrics = StudyCounts(studies=sum(self._counts.values()), orphan_files=self._orphans, **self._counts).metrics()
        scores = [r["id_score"] for r in recs if r.get("id_score") is not None]
        if scores:
            metrics["gate/id_score_mean"] = sum(scores) / len(scores)
        thresholds = [r["threshold"] for r in recs if r.get("threshold") is not None]
        if thresholds:
            metrics["gate/threshold"] = thresholds[-1]
        entries: list[dict[str, Any]] = [{"kind": "verdicts", "step": step, "records": recs}]
        if self.config.auto_metrics:
            entries.append({"kind": "metrics", "step": step, "metrics": metrics})
        self._append(entries)
        self._unflushed += len(recs)
        if self._unflushed >= self.config.batch_size:
            self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Journal extra metrics at ``step`` (default: studies screened so far).

        Args:
            metrics: metric name -> number (non-numeric values are refused; NaN is allowed).
            step: the step.
        """
        self._require_started()
        check_no_phi(dict(metrics), "metrics")
        values = {str(k): float(v) for k, v in metrics.items()}
        if values:
            self._append(
                [{"kind": "metrics", "step": self._screened if step is None else int(step), "metrics": values}]
            )

    def log_state(self, snapshot: Mapping[str, Any], step: int | None = None, save_snapshot: bool = True) -> None:
        """Journal the detector metrics of a snapshot and (by default) the snapshot itself.

        The snapshot is uploaded as ``state/step_<n>.json`` (n zero-padded to 6 digits) unless ``save_snapshot``
        is off: call it with ``save_snapshot=False`` after every gate batch for the metric curves, and with the
        default at checkpoints. Metrics (unless ``config.auto_metrics`` is off; at most once per step):
        ``state/threshold``; ``state/negatives_churn`` (Jaccard distance of ``selected_negatives`` to the previous
        call's, see :func:`selection_churn`); ``state/pos_queue`` and ``state/neg_queue`` (from ``pos_queue``/
        ``neg_queue`` or ``queue_sizes: {"pos", "neg"}``); ``state/images_screened``.

        Args:
            snapshot: any JSON-safe mapping (numpy/torch values are converted), e.g. ``guard.snapshot()``.
            step: studies screened when it was taken (default: the running count).
            save_snapshot: also upload the snapshot as an artifact.
        """
        self._require_started()
        check_no_phi(snapshot, "state snapshot")
        data = to_json_safe(dict(snapshot))
        step = self._screened if step is None else int(step)
        entries: list[dict[str, Any]] = []
        if save_snapshot:
            entries.append({"kind": "state", "step": step, "snapshot": data})
        if self._state_metrics_step != step:  # a checkpoint right after a batch adds no second point
            metrics, self._prev_negatives = state_metrics(data, self._prev_negatives)
            if metrics and self.config.auto_metrics:
                entries.append({"kind": "metrics", "step": step, "metrics": metrics})
            self._state_metrics_step = step
        if entries:
            self._append(entries)

    def log_artifact_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Journal a file for upload under its own name (for the saved state use :meth:`log_final_state`).

        The file is copied into the journal folder first, so it survives until delivered.

        Args:
            path: the local file.
            artifact_path: folder in the run's artifacts (``None``: the root).
        """
        self._require_started()
        self._journal_file(Path(path), Path(path).name, artifact_path)

    def log_final_state(self, path: str | Path) -> None:
        """Journal the run's saved state (a signed checkpoint or guard state) as ``state/final.pt``.

        Whatever the local file is called, it is uploaded at :data:`FINAL_STATE_ARTIFACT`, where
        :func:`download_state`, :func:`audit_summary` and ``tanl-guard state show RUN_ID`` look for it. A later
        call replaces the earlier upload.

        Args:
            path: the local state file (``tanl_guard.pipeline.save_checkpoint`` or ``tanl_guard.guard.state_file.save_guard_state``).
        """
        self._require_started()
        folder, _, name = FINAL_STATE_ARTIFACT.rpartition("/")
        self._journal_file(Path(path), name, folder)

    def log_dataset(self, name: str, digest: str, context: str, profile: Mapping[str, Any] | None = None) -> None:
        """Journal an input of the run as an MLflow dataset: a name, a content digest and counts, never a path.

        Args:
            name: what it is, e.g. ``"screened folder"`` or ``"reference images"``.
            digest: a hex digest of its content (e.g. SHA-256 over the salted study keys).
            context: its role, tag ``mlflow.data.context`` (``"screening"``, ``"reference"``).
            profile: counts shown beside it (numbers only), e.g. ``{"studies": 18, "files": 25}``.

        Raises:
            ValueError: for a digest that is not hex, or a profile with non-numeric values.
        """
        self._require_started()
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError(f"a dataset digest must be 8-128 lower-case hex characters, got {digest!r}")
        counts = dict(profile or {})
        check_no_phi(counts, "dataset profile")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in counts.values()):
            raise ValueError("a dataset profile holds numbers only")
        self._append([{"kind": "dataset", "name": truncate(str(name), 500), "digest": digest[:36],
                       "context": str(context), "profile": counts}])

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Journal a JSON artifact, e.g. ``config/tanl_config.json``.

        Args:
            obj: a JSON-safe mapping (converted with :func:`to_json_safe`).
            artifact_file: run-relative path ending in ``.json``.
        """
        self._require_started()
        check_no_phi(obj, artifact_file)
        self._log_text(json.dumps(to_json_safe(dict(obj)), sort_keys=True, indent=1), artifact_file)

    @property
    def wants_thumbnails(self) -> bool:
        """Whether thumbnails of rejected studies are uploaded (``config.log_thumbnails``)."""
        return self.config.log_thumbnails

    def log_thumbnail(self, image: Any, study_key: str) -> bool:
        """Upload ``audit/rejected/<study_key>.png`` when ``config.log_thumbnails`` is on; otherwise do nothing.

        Off by default: pixels can carry burned-in patient data. Log thumbnails of rejected studies only.

        Args:
            image: 2D grey or 3D colour array (H, W[, C] or C, H, W; numpy or torch); non-uint8 values are
                min-max scaled to 0-255.
            study_key: the study's hashed key.

        Returns:
            Whether a thumbnail was journalled.
        """
        self._require_started()
        if not self.config.log_thumbnails:
            return False
        check_hashed_key(study_key, "study_key")
        rel = self._blob_path(f"{study_key}.png")
        target = self._journal.files_dir / rel
        write_thumbnail(image, target)
        self._fsync_file(target)
        self._append([{"kind": "artifact", "file": rel, "artifact_path": THUMBNAIL_FOLDER}])
        return True

    # ---- delivery ----------------------------------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:
        """Send pending entries to MLflow, waiting at most ``timeout_s`` (default ``config.flush_timeout_s``).

        When a delivery is already running (MLflow slow or down) this returns at once: that delivery picks up
        the new entries when it finishes.

        Args:
            timeout_s: the longest to wait for a delivery started by this call.

        Returns:
            ``True`` when nothing is pending afterwards.
        """
        if self._journal is None:
            return True
        self._unflushed = 0
        with self._lock:
            self._dirty = True
            started = self._worker is None
            if started:
                self._worker_done.clear()
                self._worker = threading.Thread(target=self._deliver_loop, name="tanl-guard-audit", daemon=True)
                self._worker.start()
        if started:
            self._worker_done.wait(self.config.flush_timeout_s if timeout_s is None else timeout_s)
        return self.pending["entries"] == 0

    def backfill(self, timeout_s: float | None = None) -> list[DeliveryResult]:
        """Deliver entries left pending by earlier runs to their original runs (creating runs never created).

        Scans the journal folder; skips complete journals and journals locked by a live logger. A journal
        whose writer died without ``finish`` is delivered and its run closed as ``KILLED``. Each journal goes
        to the store recorded in its header; one that cannot be delivered (store down, a tracking URI that is
        not valid) is reported and skipped, and the others are still delivered. Waits at most ``timeout_s``
        (default ``config.backfill_timeout_s``); the rest continues in the background.

        Args:
            timeout_s: the longest to wait.

        Returns:
            One result per journal processed within the wait (``error`` set for the skipped ones).
        """

        def client_for(uri: str) -> Any:
            return self._client if uri == self.tracking_uri and self._client else make_client(uri)

        return backfill_journals(
            self.journal_dir,
            self.tracking_uri,
            own=None if self._journal is None else self._journal.path,
            client_for=client_for,
            max_retries=self.config.max_retries,
            backoff_s=self.config.retry_backoff_s,
            timeout_s=self.config.backfill_timeout_s if timeout_s is None else timeout_s,
        )

    # ---- internals ---------------------------------------------------------------------------------------
    def _require_started(self) -> None:
        if self._journal is None:
            raise RuntimeError("call AuditLogger.start() first")
        if self._finished:
            raise RuntimeError("the audit run is finished")

    def _forget_delivered(self) -> None:
        # in the caller's thread: the delivery thread only moves the _delivered offset
        drop = self._delivered - self._lines_base
        if drop > 0:
            del self._lines[:drop]
            self._lines_base += drop

    def _append(self, entries: list[dict[str, Any]]) -> None:
        self._journal.append(entries)
        self._forget_delivered()
        self._lines.extend((e["kind"], len(e.get("records") or []) if e["kind"] == "verdicts" else 0) for e in entries)

    def _journal_file(self, source: Path, name: str, artifact_path: str | None) -> None:
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        rel = self._blob_path(name)
        shutil.copyfile(source, self._journal.files_dir / rel)
        self._fsync_file(self._journal.files_dir / rel)
        self._append([{"kind": "artifact", "file": rel, "artifact_path": artifact_path}])

    def _blob_path(self, name: str) -> str:
        self._n_files += 1
        rel = f"{self._n_files:06d}/{_SAFE_NAME.sub('_', name)}"
        (self._journal.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        return rel

    @staticmethod
    def _fsync_file(path: Path) -> None:
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())

    def _log_text(self, text: str, artifact_file: str) -> None:
        folder, _, name = artifact_file.rpartition("/")
        rel = self._blob_path(name)
        target = self._journal.files_dir / rel
        target.write_text(text, encoding="utf-8")
        self._fsync_file(target)
        self._append([{"kind": "artifact", "file": rel, "artifact_path": folder or None}])

    def _seed_counts(self, run_id: str) -> None:
        # Continue the cumulative counts of a resumed run; bounded, and harmless to skip when MLflow is down.
        box: dict[str, Any] = {}

        def read() -> None:
            try:
                box["metrics"] = self._get_client().get_run(run_id).data.metrics
            except Exception as exc:
                box["error"] = exc

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(self.config.flush_timeout_s)
        metrics = box.get("metrics")
        if metrics is None:
            logger.warning("could not read run %s to resume its counts; counting from 0", run_id)
            return
        counts = StudyCounts.from_metrics(metrics)
        self._counts = {verdict.value: getattr(counts, verdict.value) for verdict in COUNT_METRICS}
        self._orphans = counts.orphan_files
        self._screened = int(metrics.get("screen/studies", counts.studies))

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.tracking_uri)
        return self._client

    def _on_progress(self, marker: DeliveryMarker) -> None:
        self._delivered = marker.offset
        self._run_id = marker.run_id or self._run_id

    def _deliver_loop(self) -> None:
        while True:
            with self._lock:
                self._dirty = False
            try:
                result = deliver(
                    self._journal,
                    self._get_client(),
                    max_retries=self.config.max_retries,
                    backoff_s=self.config.retry_backoff_s,
                    on_progress=self._on_progress,
                )
                self.last_error = result.error
                self._run_id = result.run_id or self._run_id
            except Exception as exc:  # e.g. mlflow missing: keep everything journalled
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning("audit delivery failed: %s", self.last_error)
                result = None
            with self._lock:
                if result is not None and result.error is None and self._dirty:
                    continue  # entries arrived while delivering: go round again
                self._worker = None
                if self._release_when_idle and self._journal is not None:
                    self._journal.unlock()
                self._worker_done.set()
                return
