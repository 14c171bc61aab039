# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``OODAuditHandler``: an Ignite/MONAI engine handler that writes the gate's verdicts and state to the audit."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tanl_guard._optional import optional_import
from tanl_guard.pipeline.checkpoint import atomic_torch_save

from .verdicts import items_from_meta

__all__ = ["OODAuditHandler", "default_batch_transform", "default_output_transform"]

ignite_engine = optional_import("ignite.engine", "monai", "the MONAI integration (pytorch-ignite)")
monai_engines = optional_import("monai.engines", "monai", "the MONAI integration")
monai_utils = optional_import("monai.utils", "monai", "the MONAI integration")

Events = ignite_engine.Events
IterationEvents = monai_engines.IterationEvents
CommonKeys = monai_utils.CommonKeys

log = logging.getLogger(__name__)

_FILENAME_KEY = "filename_or_obj"


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


class OODAuditHandler:
    """Audit trail of a guarded MONAI engine: per-item verdicts, screening metrics and detector-state checkpoints.

    - On ``IterationEvents.FORWARD_COMPLETED`` (``ITERATION_COMPLETED`` on engines without MONAI's iteration
      events, or when ``event="iteration"``): reads the verdicts of the batch from the prediction's MetaTensor
      metadata (written by :class:`~tanl_guard.integrations.monai.GuardedInferer` or
      :class:`~tanl_guard.integrations.monai.GuardedClassifier`; their ``last_result`` is the fallback), the file
      names from ``engine.state.batch`` metadata, and logs one verdict record per item plus the screening
      metrics, stepped by items seen. File names are logged only as salted hashes (``study`` key), never as paths.
    - Every ``checkpoint_every`` items, on ``EPOCH_COMPLETED`` and on ``COMPLETED``: logs ``guard.snapshot()``
      (``state/step_<n>.json``), saves ``guard.state_dict()`` to ``state_path`` with ``torch.save`` and uploads
      it under ``state/``.
    - On ``STARTED`` it starts the audit run when the logger has not been started yet; on ``COMPLETED`` it
      flushes, and finishes the run when ``close_on_complete`` and it started the run.

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
        params: run parameters for ``logger.start`` (default: the guard's and the inferer's settings).
        tags: extra run tags for ``logger.start`` (encoder, corpus and classifier tags are added).
        event: ``"forward"`` (default, batched verdicts before decollation) or ``"iteration"``.
        close_on_complete: finish the audit run on ``COMPLETED`` when this handler started it.
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
    ) -> None:
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
        if event not in ("forward", "iteration"):
            raise ValueError(f"event must be 'forward' or 'iteration', got {event!r}")
        from tanl_guard.dicom.privacy import Hasher, resolve_salt

        self.logger = logger
        self.guard = guard
        self.batch_transform = batch_transform
        self.output_transform = output_transform
        self.checkpoint_every = int(checkpoint_every)
        self.state_path = Path(state_path) if state_path is not None else None
        self.params = dict(params) if params is not None else None
        self.tags = dict(tags or {})
        self.event = event
        self.close_on_complete = close_on_complete
        self._hash = Hasher(resolve_salt(salt))
        self._started_run = False
        self.items_seen = 0
        self.counts = {"accept": 0, "reject": 0, "flagged": 0, "classified": 0}
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
        """Start the audit run unless the logger was started already.

        Args:
            engine: the engine.
        """
        if self.logger is None or getattr(self.logger, "run_key", None) is not None:
            return
        params = self.params if self.params is not None else self._default_params(engine)
        self.logger.start(params=params, tags={**self._default_tags(engine), **self.tags})
        self._started_run = True

    def iteration(self, engine: Any) -> None:
        """Log the verdicts of the batch just gated.

        Args:
            engine: the engine.
        """
        items = self._verdict_items(engine)
        if items is None:
            log.warning("OODAuditHandler: no gate verdicts on iteration %s", engine.state.iteration)
            return
        names = _filenames(self.batch_transform(engine.state.batch), len(items))
        records = [self._record(item, name) for item, name in zip(items, names, strict=True)]
        before = self.items_seen
        self.items_seen += len(records)
        for item in items:
            self.counts["accept" if item["accepted"] else "reject"] += 1
            self.counts["flagged"] += int(item["flagged"])
            self.counts["classified"] += int(item["classified"])
        self.last_records = records
        if self.logger is not None:
            self.logger.log_verdicts(records, step=self.items_seen)
            self.logger.log_metrics(
                {"screen/flagged": self.counts["flagged"], "screen/classified": self.counts["classified"]},
                step=self.items_seen,
            )
        n = self.checkpoint_every
        if n and self.items_seen // n > before // n:
            self.checkpoint(engine)

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
            atomic_torch_save(self.state_path, guard.state_dict())  # a crash never leaves a torn checkpoint
            if self.logger is not None:
                self.logger.log_artifact_file(self.state_path, "state")

    def _verdict_items(self, engine: Any) -> list[dict[str, Any]] | None:
        preds = self.output_transform(engine.state.output)
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

    def _record(self, item: Mapping[str, Any], name: str | None) -> dict[str, Any]:
        accepted = bool(item["accepted"])
        score, threshold = float(item["id_score"]), float(item["threshold"])
        reason = None
        if not accepted:
            reason = f"id_score {score:.3f} < threshold {threshold:.3f}"
            reason += "; classified anyway" if item["flagged"] else "; not classified"
        return {
            "study": None if name is None else self._hash("path", name),
            "verdict": "accept" if accepted else "reject",
            "id_score": score,
            "threshold": threshold,
            "top_negatives": list(item.get("top_negatives") or []),
            "reason": reason,
            "series": [],
            "prediction": item.get("prediction"),
            "classified": bool(item["classified"]),
            "flagged": bool(item["flagged"]),
        }

    def _default_params(self, engine: Any) -> dict[str, Any]:
        guard = self._guard(engine)
        params: dict[str, Any] = {}
        inferer = getattr(engine, "inferer", None)
        if hasattr(inferer, "on_reject"):
            params["monai"] = {
                "on_reject": inferer.on_reject,
                "view": str(getattr(inferer, "view", "")),
                "base_inferer": type(getattr(inferer, "base_inferer", None)).__name__,
            }
        if guard is not None:
            policy = guard.policy
            params["guard"] = {
                "detector": getattr(guard.detector, "name", type(guard.detector).__name__),
                "threshold": str(policy.threshold),
                "view_reduction": policy.view_reduction,
                "top_negatives": policy.top_negatives,
                "seed": guard.seed,
            }
            config = getattr(guard.detector, "config", None)
            if dataclasses.is_dataclass(config) and not isinstance(config, type):
                params[params["guard"]["detector"]] = dataclasses.asdict(config)
        return params

    def _default_tags(self, engine: Any) -> dict[str, str]:
        tags: dict[str, str] = {}
        network = getattr(engine, "network", None)
        if network is not None:
            tags["classifier.id"] = type(network).__name__
        guard = self._guard(engine)
        if guard is not None:
            encoder, corpus = guard.encoder, guard.corpus
            tags["encoder.id"] = str(getattr(encoder, "id", type(encoder).__name__))
            try:
                tags["encoder.weights_sha256"] = str(encoder.weights_sha256)
            except Exception:  # an encoder without a weights hash: the tag is simply absent
                pass
            if hasattr(corpus, "sha256"):
                tags["corpus.sha256"] = str(corpus.sha256)
        return tags
