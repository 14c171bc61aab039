# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""What ran, in one place: the params, tags, run name and input datasets that describe a guard's audit run.

The CLI's ``screen``, the MONAI handler and a DICOM listener all describe their run with :func:`describe_guard`,
so the same settings give the same params and the same ``config.sha256`` whichever entry point ran them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DatasetDescription", "RunDescription", "describe_guard", "digest_images"]


@dataclass(frozen=True)
class DatasetDescription:
    """An input of the run, identified by content, never by path or patient data.

    Attributes:
        name: what it is, e.g. ``"reference images"``.
        digest: hex SHA-256 of its content.
        context: its role (``"reference"``, ``"screening"``).
        profile: counts, e.g. ``{"labels": 1, "images": 16}``.
    """

    name: str
    digest: str
    context: str
    profile: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDescription:
    """The description of one audit run of a guard.

    Attributes:
        params: every setting, nested (flattened to ``a.b.c`` by the audit logger).
        tags: ``tanl_guard.version``, ``encoder.id``, ``encoder.weights_sha256``, ``corpus.sha256``, ``detector``,
            ``mlflow.source.type`` and ``mlflow.source.name``, plus ``classifier.id`` when given.
        run_name: a name that says what ran, e.g. ``screen tanl surrogate 2026-05-01 22:40Z``.
        datasets: the inputs known when the run starts (the reference images).
    """

    params: dict[str, Any]
    tags: dict[str, str]
    run_name: str
    datasets: tuple[DatasetDescription, ...] = ()


def digest_images(images: Mapping[str, Sequence[Any]]) -> str:
    """SHA-256 over labels and pixel arrays (shape, dtype, bytes) of a mapping label -> images.

    Args:
        images: per label, numpy arrays or torch tensors.
    """
    import numpy as np

    digest = hashlib.sha256(b"tanl_guard.images.v1\n")
    for label in sorted(images):
        digest.update(f"{label}\n".encode())
        for image in images[label]:
            arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
            arr = np.ascontiguousarray(arr)
            digest.update(f"{arr.shape}{arr.dtype}\n".encode())
            digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def _detector_config(guard: Any) -> dict[str, Any]:
    if hasattr(guard, "detector_configs"):  # every gate's config, and the fusion's (a fused guard)
        return guard.detector_configs()
    config = getattr(guard.detector, "config", None)
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}


def describe_guard(
    guard: Any,
    *,
    entry_point: str = "python",
    reference_images: Mapping[str, Sequence[Any]] | None = None,
    classifier: str | None = None,
    **extras: Any,
) -> RunDescription:
    """Describe a guard's audit run: params, tags, a run name and the reference set as a dataset.

    Args:
        guard: a built :class:`~tanl_guard.guard.Guard`.
        entry_point: what runs the guard: ``"screen"`` (the CLI), ``"monai"`` (the handler), ``"listener"``;
            it names the run and the ``mlflow.source.name`` tag (``tanl-guard <entry_point>``).
        reference_images: the reference ID images the guard was built with (per label), logged as a dataset by
            digest; their count goes into the params.
        classifier: the classifier's id when one runs behind the guard (tag ``classifier.id``).
        extras: the entry point's own settings (view, batch size, order, MONAI settings ...), added to the
            params under their own keys. An extra named like a guard setting replaces it.

    Returns:
        The :class:`RunDescription`. Pass ``params``/``tags``/``run_name`` to ``AuditLogger.start`` and log each
        of ``datasets`` with ``AuditLogger.log_dataset``.
    """
    from tanl_guard import __version__

    encoder, corpus, policy = guard.encoder, guard.corpus, guard.policy
    detector_name = str(getattr(guard, "detector_name", guard.detector.name))  # "tanl+knn" for a fused guard
    anchors = guard.anchors
    labels = list(dict.fromkeys(getattr(anchors, "label_of", ()) or ()))
    n_reference = sum(len(v) for v in (reference_images or {}).values())
    params: dict[str, Any] = {
        "encoder": str(encoder.id),
        "detector": detector_name,
        "detector_config": _detector_config(guard),
        "corpus": getattr(corpus, "name", "") or "",
        "corpus_size": len(corpus),
        "id_labels": labels,
        "reference_images": n_reference,
        "threshold": str(policy.threshold),
        "study_policy": policy.study_policy,
        "view_reduction": policy.view_reduction,
        "top_negatives": policy.top_negatives,
        "seed": guard.seed,
        "modality_gap": guard.modality_gap,
        "device": str(getattr(encoder, "device", "cpu")),
    }
    if guard.calibration:
        params["calibration"] = dict(guard.calibration)
    if getattr(guard, "feature_calibration", None):  # the feature gate's operating point, held-out references
        params["feature_calibration"] = dict(guard.feature_calibration)
    params.update(extras)
    tags = {
        "tanl_guard.version": __version__,
        "encoder.id": str(encoder.id),
        "encoder.weights_sha256": str(getattr(encoder, "weights_sha256", "")),
        "corpus.sha256": str(getattr(corpus, "sha256", "")),
        "detector": detector_name,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": f"tanl-guard {entry_point}",
    }
    if classifier:
        tags["classifier.id"] = str(classifier)
    short_encoder = str(encoder.id).split(":", 1)[0]
    run_name = f"{entry_point} {detector_name} {short_encoder} {time.strftime('%Y-%m-%d %H:%MZ', time.gmtime())}"
    datasets: tuple[DatasetDescription, ...] = ()
    if reference_images:
        datasets = (
            DatasetDescription(
                name="reference images",
                digest=digest_images(reference_images),
                context="reference",
                profile={"labels": len(reference_images), "images": n_reference},
            ),
        )
    return RunDescription(params=params, tags=tags, run_name=run_name, datasets=datasets)
