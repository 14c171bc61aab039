# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``OODAuditHandler``: an Ignite/MONAI engine handler that writes the gate's verdicts and state to the audit."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tanl_guard._optional import optional_import
from tanl_guard.guard.describe import describe_guard
from tanl_guard.guard.state_file import save_guard_state
from tanl_guard.guard.verdicts import ACCEPT, REJECT

from .verdicts import items_from_meta

__all__ = ["OODAuditHandler", "HashedFilenames", "default_batch_transform", "default_output_transform"]

ignite_engine = optional_import("ignite.engine", "monai", "the MONAI integration (pytorch-ignite)")
monai_engines = optional_import("monai.engines", "monai", "the MONAI integration")
monai_utils = optional_import("monai.utils", "monai", "the MONAI integration")

Events = ignite_engine.Events
IterationEvents = monai_engines.IterationEvents
CommonKeys = monai_utils.CommonKeys

log = logging.getLogger(__name__)

_FILENAME_KEY = "filename_or_obj"
# A per-item classifier output with more values than this (a segmentation map, say) is not copied into the record.
MAX_PREDICTION_VALUES = 64


def _meta_of(item: Any, image_key: str) -> Any:
    if not isinstance(item, Mapping):
        return getattr(item, "meta", None)
    image = item.get(image_key)
    if image is not None and hasattr(image, "meta"):
        return image.meta
    return item.get(f"{image_key}_meta_dict")


def default_batch_transform(batch: Any, image_key: str = CommonKeys.IMAGE) -> Any:
    """The image metadata of ``engine.state.batch``: batched (one dict) or decollated (one dict per item).

    Looks at the MetaTensor under ``image_key`` first, then at ``"<image_key>_meta_dict"``.

    Args:
        batch: ``engine.state.batch`` (a dict, or a list of per-item dicts after decollation).
        image_key: the image key.
    """
    if isinstance(batch, Mapping) or hasattr(batch, "meta"):
        return _meta_of(batch, image_key)
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        return [_meta_of(item, image_key) for item in batch]
    return None


def default_output_transform(output: Any) -> Any:
    """The prediction(s) of ``engine.state.output``: the batched ``pred`` tensor, or one per decollated item.

    Args:
        output: ``engine.state.output``.
    """
    if isinstance(output, Mapping):
        return output.get(CommonKeys.PRED)
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        return [o.get(CommonKeys.PRED) if isinstance(o, Mapping) else o for o in output]
    return output


def _filenames(meta: Any, n: int) -> list[str | None]:
    if isinstance(meta, Mapping):
        names = meta.get(_FILENAME_KEY)
        if isinstance(names, (list, tuple)) and len(names) == n:
            return [None if v is None else str(v) for v in names]
        if n == 1 and isinstance(names, (str, os.PathLike)):
            return [str(names)]
    elif isinstance(meta, Sequence) and len(meta) == n:
        out: list[str | None] = []
        for m in meta:
            v = m.get(_FILENAME_KEY) if isinstance(m, Mapping) else None
            out.append(None if v is None else str(v))
        return out
    return [None] * n


def _study_hasher(salt: str | None) -> Callable[[str], str]:
    from tanl_guard.privacy import Hasher, resolve_salt

    hasher = Hasher(resolve_salt(salt))
    # The absolute path, so that "./data/a.npy" and "/srv/data/a.npy" get one key (names alone would collide).
    return lambda name: hasher("path", os.path.abspath(name))


class HashedFilenames:
    """A ``batch_transform`` for MONAI savers (``ClassificationSaver``) that names each item by the salted hash of its
    absolute path, the ``study`` key of :class:`OODAuditHandler`'s records, instead of the path.

    File names of exports often hold patient names, so nothing this package writes carries them; with the same salt
    the rows of a predictions CSV join the audit records on that key.

    Example code::

        ClassificationSaver(output_dir="eval", batch_transform=HashedFilenames(), output_transform=from_engine(["pred"]))

    Args:
        salt: the salt (``None``: ``$TANL_GUARD_SALT`` or the per-installation salt, as the handler).
        batch_transform: ``engine.state.batch -> metadata`` holding ``filename_or_obj`` (default: the image's).
    """

    def __init__(self, salt: str | None = None, batch_transform: Callable[[Any], Any] = default_batch_transform) -> None:
        self._hash = _study_hasher(salt)
        self.batch_transform = batch_transform

    def __call__(self, batch: Any) -> list[dict[str, Any]]:
        """One metadata dict per item, ``{"filename_or_obj": key}`` (None where the item has no file name).

        Args:
            batch: ``engine.state.batch``.
        """
        meta = self.batch_transform(batch)
        n = _batch_len(meta)
        return [{_FILENAME_KEY: None if name is None else self._hash(name)} for name in _filenames(meta, n)]


def _batch_len(meta: Any) -> int:
    if isinstance(meta, Mapping):
        names = meta.get(_FILENAME_KEY)
        if isinstance(names, (list, tuple)):
            return len(names)
        return 1 if names is not None else 0
    return len(meta) if isinstance(meta, Sequence) else 0


def _prediction_rows(preds: Any, n: int) -> list[Any]:
    """Each item's classifier output as a plain tensor row, or None when it cannot be told apart per item."""
    if isinstance(preds, torch.Tensor) and preds.ndim > 0 and preds.shape[0] == n:
        rows: list[Any] = list(preds)
    elif isinstance(preds, (list, tuple)) and len(preds) == n:
        rows = list(preds)
    else:
        return [None] * n
    return [r.as_tensor() if hasattr(r, "as_tensor") else r for r in rows]


def _prediction_fields(row: Any) -> dict[str, Any]:
    """``prediction`` (the output's values) and ``predicted_class`` (their argmax) for a small output row."""
    if not isinstance(row, torch.Tensor) or row.numel() == 0 or row.numel() > MAX_PREDICTION_VALUES:
        return {}
    values = [float(v) for v in row.detach().to("cpu", torch.float64).flatten().tolist()]
    if not all(math.isfinite(v) for v in values):
        return {}
    out: dict[str, Any] = {"prediction": [round(v, 6) for v in values]}
    if len(values) > 1:
        out["predicted_class"] = max(range(len(values)), key=values.__getitem__)
    return out


class OODAuditHandler:
    """Audit trail of a guarded MONAI engine: per-item verdicts, screening metrics and detector-state checkpoints.

    - On ``IterationEvents.FORWARD_COMPLETED`` (``ITERATION_COMPLETED`` on engines without MONAI's iteration
      events, or when ``event="iteration"``): reads the verdicts of the batch from the prediction's MetaTensor
      metadata (written by :class:`~tanl_guard.integrations.monai.GuardedInferer` or
      :class:`~tanl_guard.integrations.monai.GuardedClassifier`; their ``last_result`` is the fallback), the file
      names from ``engine.state.batch`` metadata, and logs one verdict record per item plus the screening
      metrics, stepped by items seen. File names are logged only as salted hashes of their absolute paths (``study``
      key), never as paths.
    - After every batch: logs the detector's state metrics (threshold, queue sizes, churn) at the items seen.
    - Every ``checkpoint_every`` items, on ``EPOCH_COMPLETED`` and on ``COMPLETED``: logs ``guard.snapshot()``
      (``state/step_<n>.json``), saves ``guard.state_dict()`` signed to ``state_path``
      (:func:`~tanl_guard.guard.state_file.save_guard_state`; read it back with ``load_guard_state``) and uploads it as
      ``state/final.pt``, where ``tanl-guard state show RUN_ID`` and ``audit summary`` find it.
    - On ``STARTED`` it starts the audit run when the logger has not been started yet (params, tags and run name
      from :meth:`describe`, built by :func:`~tanl_guard.guard.describe_guard` as for ``tanl-guard screen``); on
      ``COMPLETED`` it flushes, and finishes the run when ``close_on_complete`` and it started the run; on
      ``EXCEPTION_RAISED`` it ends that run FAILED and re-raises.

    A record holds ``study``, ``verdict``, ``id_score``, ``threshold``, ``reason``, ``top_negatives``, ``id_label``
    (the ID label the gate matched best), ``classified``, ``flagged`` and, for items the classifier ran on,
    ``prediction`` (the values of its output row; at most 64 values, so not for segmentation maps) and
    ``predicted_class`` (their argmax). With ``event="forward"`` the output is the network's, before
    postprocessing (logits); with ``event="iteration"`` it is the postprocessed one (e.g. probabilities).

    It shares a run with MONAI's ``MLFlowHandler`` when both use the same tracking URI, experiment and run name:
    attach this handler first, so its run exists when ``MLFlowHandler`` looks for an active run of that name.

    Example code::

        audit = AuditLogger(AuditConfig(tracking_uri="sqlite:////data/mlflow.db", run_name="nightly"))
        OODAuditHandler(audit, guard, checkpoint_every=500, state_path="guard_state.pt").attach(evaluator)

    Args:
        logger: the :class:`~tanl_guard.integrations.mlflow.AuditLogger`; ``None`` logs nothing to MLflow (the
            records of the last batch stay on :attr:`last_records`, counts on :attr:`counts`, and state is still
            saved to ``state_path``).
        guard: the guard whose state is checkpointed; ``None`` takes ``engine.inferer.guard`` (or
            ``engine.network.guard``).
        batch_transform: ``engine.state.batch -> metadata`` (a batched dict or a list of per-item dicts) holding
            ``filename_or_obj``; the default reads the ``image`` MetaTensor's metadata.
        output_transform: ``engine.state.output -> prediction(s)`` whose metadata carries the verdicts; the
            default takes ``pred``.
        checkpoint_every: checkpoint after every this many items (0: only at epoch end and completion).
        state_path: where ``guard.state_dict()`` is saved (``None``: not saved nor uploaded).
        salt: salt of the file-name hashes (``None``: ``$TANL_GUARD_SALT`` or the per-installation salt).
        params: run parameters for ``logger.start`` (default: :meth:`describe`).
        tags: extra run tags for ``logger.start`` (added to those of :meth:`describe`).
        event: ``"forward"`` (default, batched verdicts before decollation) or ``"iteration"``.
        close_on_complete: finish the audit run on ``COMPLETED`` when this handler started it.
        report_path: also write every record as one JSON line to this file (emptied on ``STARTED``), like
            ``tanl-guard screen --report``; ``None`` writes none.
    """

    def __init__(
        self,
        logger: Any = None,
        guard: Any = None,
        batch_transform: Callable[[Any], Any] = default_batch_transform,
        output_transform: Callable[[Any], Any] = default_output_transform,
        checkpoint_every: int = 0,
        state_path: str | os.PathLike | None = None,
        salt: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        event: str = "forward",
        close_on_complete: bool = True,
        report_path: str | os.PathLike | None = None,
    ) -> None:
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
        if event not in ("forward", "iteration"):
            raise ValueError(f"event must be 'forward' or 'iteration', got {event!r}")
        self.logger = logger
        self.guard = guard
        self.batch_transform = batch_transform
        self.output_transform = output_transform
        self.checkpoint_every = int(checkpoint_every)
        self.state_path = Path(state_path) if state_path is not None else None
        self.report_path = Path(report_path) if report_path is not None else None
        self.params = dict(params) if params is not None else None
        self.tags = dict(tags or {})
        self.event = event
        self.close_on_complete = close_on_complete
        self._hash = _study_hasher(salt)
        self._started_run = False
        self.items_seen = 0
        self.counts = {ACCEPT.value: 0, REJECT.value: 0, "flagged": 0, "classified": 0}
        self.last_records: list[dict[str, Any]] = []
        self.last_checkpoint_step: int | None = None

    # ------------------------------------------------------------------ wiring
    def attach(self, engine: Any) -> None:
        """Register the handlers on ``engine`` (a MONAI workflow or any Ignite engine).

        Args:
            engine: the engine.
        """
        event = Events.ITERATION_COMPLETED
        if self.event == "forward" and IterationEvents.FORWARD_COMPLETED in getattr(engine, "_allowed_events", []):
            event = IterationEvents.FORWARD_COMPLETED
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self.iteration, event):
            engine.add_event_handler(event, self.iteration)
        if not engine.has_event_handler(self.epoch_completed, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)
        if not engine.has_event_handler(self.exception_raised, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def _guard(self, engine: Any) -> Any:
        if self.guard is not None:
            return self.guard
        for owner in (getattr(engine, "inferer", None), getattr(engine, "network", None)):
            guard = getattr(owner, "guard", None)
            if guard is not None:
                return guard
        return None

    # ------------------------------------------------------------------ events
    def started(self, engine: Any) -> None:
        """Empty the report file, and start the audit run unless the logger was started already.

        Args:
            engine: the engine.
        """
        if self.report_path is not None:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            self.report_path.write_text("", encoding="utf-8")
        if self.logger is None or getattr(self.logger, "run_key", None) is not None:
            return
        params, tags = self.describe(engine)
        guard = self._guard(engine)
        run_name = describe_guard(guard, entry_point="monai").run_name if guard is not None else None
        self.logger.start(params=self.params if self.params is not None else params, tags={**tags, **self.tags},
                          run_name=run_name)
        self._started_run = True

    def iteration(self, engine: Any) -> None:
        """Log the verdicts of the batch just gated.

        Args:
            engine: the engine.
        """
        preds = self.output_transform(engine.state.output)
        items = self._verdict_items(engine, preds)
        if items is None:
            log.warning("OODAuditHandler: no gate verdicts on iteration %s", engine.state.iteration)
            return
        names = _filenames(self.batch_transform(engine.state.batch), len(items))
        rows = _prediction_rows(preds, len(items))
        records = [self._record(*args) for args in zip(items, names, rows, strict=True)]
        before = self.items_seen
        self.items_seen += len(records)
        for item in items:
            self.counts[(ACCEPT if item["accepted"] else REJECT).value] += 1
            self.counts["flagged"] += int(item["flagged"])
            self.counts["classified"] += int(item["classified"])
        self.last_records = records
        if self.report_path is not None:
            with self.report_path.open("a", encoding="utf-8") as report:
                report.writelines(json.dumps({**r, "step": self.items_seen}, sort_keys=True) + "\n" for r in records)
        if self.logger is not None:
            self.logger.log_verdicts(records, step=self.items_seen)
            self.logger.log_metrics(
                {"screen/flagged": self.counts["flagged"], "screen/classified": self.counts["classified"]},
                step=self.items_seen,
            )
        n = self.checkpoint_every
        if n and self.items_seen // n > before // n:
            self.checkpoint(engine)
        elif self.logger is not None:  # the detector's metrics at every batch; its snapshot file at checkpoints
            guard = self._guard(engine)
            if guard is not None:
                self.logger.log_state(guard.snapshot(), step=self.items_seen, save_snapshot=False)

    def epoch_completed(self, engine: Any) -> None:
        """Checkpoint the detector state at the end of an epoch.

        Args:
            engine: the engine.
        """
        self.checkpoint(engine)

    def completed(self, engine: Any) -> None:
        """Final checkpoint, flush, and close the run when this handler opened it.

        Args:
            engine: the engine.
        """
        self.checkpoint(engine)
        if self.logger is None:
            return
        if self.close_on_complete and self._started_run:
            self.logger.finish()
        else:
            self.logger.flush()

    def exception_raised(self, engine: Any, error: BaseException) -> None:
        """End the run this handler started as FAILED (releasing its journal lock), then re-raise ``error``.

        Ignite stops propagating an exception once an ``EXCEPTION_RAISED`` handler exists, so this one raises it
        again: the engine's caller still sees the error.

        Args:
            engine: the engine.
            error: what the engine raised.
        """
        if self.logger is not None and self._started_run:
            self.logger.fail(error)
            self._started_run = False
        raise error

    # ------------------------------------------------------------------ work
    def checkpoint(self, engine: Any) -> None:
        """Log ``guard.snapshot()`` and save/upload ``guard.state_dict()`` at the current step (once per step).

        Args:
            engine: the engine (used to find the guard when none was given).
        """
        step = self.items_seen
        if self.last_checkpoint_step == step:
            return
        guard = self._guard(engine)
        if guard is None:
            log.warning("OODAuditHandler: no guard to checkpoint")
            return
        self.last_checkpoint_step = step
        if self.logger is not None:
            snapshot = dict(guard.snapshot())
            self.logger.log_state(snapshot, step=step)
        if self.state_path is not None:
            save_guard_state(self.state_path, guard.state_dict())  # signed, atomic: never a torn checkpoint
            if self.logger is not None:
                self.logger.log_final_state(self.state_path)

    def _verdict_items(self, engine: Any, preds: Any) -> list[dict[str, Any]] | None:
        items = None
        if isinstance(preds, torch.Tensor) and hasattr(preds, "meta"):
            items = items_from_meta(preds.meta)
        elif isinstance(preds, (list, tuple)) and preds and all(hasattr(p, "meta") for p in preds):
            items = items_from_meta([p.meta for p in preds])
        if items is None:
            for owner in (getattr(engine, "inferer", None), getattr(engine, "network", None)):
                result = getattr(owner, "last_result", None)
                if result is not None:
                    return result.items()
        return items

    def _record(self, item: Mapping[str, Any], name: str | None, output: Any) -> dict[str, Any]:
        accepted = bool(item["accepted"])
        score, threshold = float(item["id_score"]), float(item["threshold"])
        reason = None
        if not accepted:
            reason = f"id_score {score:.3f} < threshold {threshold:.3f}"
            reason += "; classified anyway" if item["flagged"] else "; not classified"
        record = {
            "study": None if name is None else self._hash(name),
            "verdict": (ACCEPT if accepted else REJECT).value,
            "id_score": score,
            "threshold": threshold,
            "reason": reason,
            "top_negatives": list(item.get("top_negatives") or []),
            "id_label": item.get("prediction"),
            "classified": bool(item["classified"]),
            "flagged": bool(item["flagged"]),
        }
        if record["classified"]:
            record.update(_prediction_fields(output))
        return record

    def describe(self, engine: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """The run's params and tags: what ran (ID labels, corpus, encoder, detector, threshold) and how.

        The guard's part comes from :func:`~tanl_guard.guard.describe_guard`, as for ``tanl-guard screen`` (same
        settings, same ``config.sha256``); this handler adds ``monai`` (``on_reject``, ``view``,
        ``base_inferer``) to the params and ``classifier.id`` (the network's class) to the tags.

        Args:
            engine: the engine (its inferer and network, and the guard when none was given).
        """
        params: dict[str, Any] = {}
        inferer = getattr(engine, "inferer", None)
        if hasattr(inferer, "on_reject"):
            params["monai"] = {
                "on_reject": inferer.on_reject,
                "view": str(getattr(inferer, "view", "")),
                "base_inferer": type(getattr(inferer, "base_inferer", None)).__name__,
            }
        network = getattr(engine, "network", None)
        classifier = type(network).__name__ if network is not None else None
        guard = self._guard(engine)
        if guard is None:
            return params, ({"classifier.id": classifier} if classifier else {})
        anchors = guard.anchors
        image_columns = [i for i, kind in enumerate(anchors.kinds) if kind == "image"]
        n_reference = sum(anchors.support[i] for i in image_columns) if anchors.support else len(image_columns)
        description = describe_guard(guard, entry_point="monai", classifier=classifier, **params)
        # the reference images themselves are not known here, only how many the guard was built with
        params = {**description.params, "reference_images": n_reference}
        return params, {k: v for k, v in description.tags.items() if v}
