# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Methods under test: how the evaluation builds a gate from one fold's references and lets it decide.

A method builds, for one fold, a :class:`Gate` from the encoder, the ID labels and the reference ID images of the
training groups, under a threshold policy; the harness then resets the gate at the start of every stream and feeds
it the stream batch by batch, recording its scores and its own accept/reject decisions.

* :class:`GuardMethod` is the product: ``tanl_guard.guard.Guard.build`` with a detector registry name, its
  defaults (modality-gap shift of the image prototypes, the 0.95 cosine filter of the corpus) and the policy's
  threshold (``adaptive``: the detector's own Otsu threshold; ``calibrated``: ``Guard.calibrate`` on the
  references; ``fixed``: a number). Decisions are ``GateResult.accepted``. A new detector name (``tanl+knn``, say)
  needs no change here: ``GuardMethod("tanl+knn")``, or ``--methods tanl+knn`` on the command line.
* :class:`ThumbnailTemplate` is a floor with no learned weights: the cosine of a 32 x 32 grey-level thumbnail to
  the mean thumbnail of the references, with the same three policies.

When ``Guard.build`` accepts the references' groups (a parameter named in :data:`GROUP_PARAMETERS`), they are
passed, so a guard that calibrates leave-one-source-out inside ``build`` gets them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from tanl_guard.guard import Guard, GuardPolicy, ThresholdPolicy
from tanl_guard.threshold import otsu_threshold

__all__ = [
    "GROUP_PARAMETERS",
    "Batch",
    "Gate",
    "References",
    "Method",
    "GuardMethod",
    "ThumbnailTemplate",
    "make_method",
    "policy_of",
]

#: Names under which ``Guard.build`` may accept the reference images' groups (volumes / scanners / sources).
GROUP_PARAMETERS = ("reference_groups", "reference_sources")


@dataclass(frozen=True)
class References:
    """The reference ID images of one fold and the group (volume / template space) each comes from."""

    images: list[np.ndarray]
    groups: list[str]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.groups):
            raise ValueError("one group per reference image")

    def by_group(self) -> dict[str, list[np.ndarray]]:
        out: dict[str, list[np.ndarray]] = {}
        for img, g in zip(self.images, self.groups):
            out.setdefault(g, []).append(img)
        return out


@dataclass(frozen=True)
class Batch:
    """A gate's answer for one batch: scores (higher = more ID), its decisions and the threshold in force."""

    scores: np.ndarray
    accepted: np.ndarray
    threshold: float


class Gate(Protocol):
    """What the harness needs from a built method."""

    def reset(self) -> None:
        """Forget the stream (the start of every stream)."""

    def score(self, images: list[np.ndarray]) -> Batch:
        """Score and decide one batch (updates the online state)."""

    def calibrate(self, images: list[np.ndarray], rate: float) -> float:
        """The threshold accepting ``rate`` of ``images`` as the method's calibrated policy sets it (state kept)."""


class Method(Protocol):
    """Builds a :class:`Gate` for one fold.

    Attributes:
        name: the name in results.
        policies_share_scores: True when a threshold policy changes only the final threshold, not the scores: the
            harness then builds one adaptive gate per fold and derives the other policies' decisions from its
            scores (see :func:`benchmarks.protocol.run_method`).
    """

    name: str
    policies_share_scores: bool

    def build(self, encoder: Any, labels: Sequence[str], references: References, policy: ThresholdPolicy,
              context: Mapping[str, Any]) -> Gate:
        """Build from the fold's references only (``context``: corpus, cache_dir, seed of the run)."""

    def describe(self) -> dict[str, Any]:
        """What the method is, for the result file."""


def policy_of(name: str, value: float | None = None) -> ThresholdPolicy:
    """``adaptive``, ``calibrated`` (rate ``value``, default 0.95) or ``fixed`` (``value``) as a ThresholdPolicy."""
    if name == "adaptive":
        return ThresholdPolicy("adaptive")
    if name == "calibrated":
        return ThresholdPolicy("calibrated", 0.95 if value is None else value)
    if name == "fixed":
        return ThresholdPolicy("fixed", value)
    raise ValueError(f"unknown policy {name!r}")


class _GuardGate:
    def __init__(self, guard: Guard, harness_threshold: float | None) -> None:
        self.guard = guard
        self.harness_threshold = harness_threshold

    def reset(self) -> None:
        self.guard.reset()

    def snapshot(self) -> dict[str, Any]:
        """The guard's audit snapshot (threshold, queues, leading activated negatives)."""
        return self.guard.snapshot()

    def calibrate(self, images: list[np.ndarray], rate: float) -> float:
        """``Guard.calibrate``: what ``Guard.build`` runs on the references for a calibrated policy."""
        return float(self.guard.calibrate(list(images), rate=rate))

    def score(self, images: list[np.ndarray]) -> Batch:
        result = self.guard.score_images(images)
        scores = result.scores.detach().double().cpu().numpy()
        if self.harness_threshold is not None:  # a fixed threshold outside the policy's [0, 1] (see GuardMethod)
            return Batch(scores, scores >= self.harness_threshold, self.harness_threshold)
        return Batch(scores, result.accepted.detach().cpu().numpy().astype(bool), float(result.threshold))


@dataclass(frozen=True)
class GuardMethod:
    """The shipped guard with one detector.

    Args:
        detector: the ``Guard.build`` detector name (``tanl``, ``neglabel``, ``mcm``, ``adaneg``, or any name the
            guard accepts).
        config: the detector's configuration (its default when None).
        build_kwargs: further ``Guard.build`` arguments (the defaults when empty).
        name: the name in results (the detector name when empty).
        policies_share_scores: True (label detectors) when the threshold policy changes only the threshold:
            ``Guard.build`` with a calibrated policy runs ``Guard.calibrate`` on the references after building the
            same detector, and a fixed policy compares the same scores with a number, so one guard per fold serves
            every policy. False builds one guard per policy: guards with a feature gate (``knn``, ``tanl+knn``), whose
            calibrated policy changes how the gates set their thresholds (:func:`make_method` sets it).
    """

    detector: str
    config: Any = None
    build_kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    policies_share_scores: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.detector)

    def build(self, encoder: Any, labels: Sequence[str], references: References, policy: ThresholdPolicy,
              context: Mapping[str, Any]) -> Gate:
        kwargs: dict[str, Any] = dict(self.build_kwargs)
        params = inspect.signature(Guard.build).parameters
        for name in GROUP_PARAMETERS:
            if name in params and name not in kwargs:  # per ID label, the group of each reference image
                kwargs[name] = {labels[0]: list(references.groups)}
        harness_threshold = None
        if policy.mode == "fixed" and not 0.0 <= float(policy.value) <= 1.0:
            # ThresholdPolicy takes fixed thresholds in [0, 1]; AdaNeg's scores reach 1.1. Build the guard
            # adaptive and apply the same rule (score >= threshold) here.
            harness_threshold, policy = float(policy.value), ThresholdPolicy("adaptive")
        guard = Guard.build(
            encoder=encoder,
            labels=tuple(labels),
            reference_images={labels[0]: list(references.images)},
            corpus=context["corpus"],
            detector=self.detector,
            policy=GuardPolicy(threshold=policy),
            config=self.config,
            cache_dir=context.get("cache_dir"),
            seed=int(context.get("seed", 0)),
            **kwargs,
        )
        return _GuardGate(guard, harness_threshold)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "tanl_guard.guard.Guard (as shipped)",
            "detector": self.detector,
            "config": None if self.config is None else repr(self.config),
            "build_kwargs": {k: repr(v) for k, v in self.build_kwargs.items()},
        }


_THUMBS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (id(image), size) -> (image, thumbnail)


def _thumbnail(image: np.ndarray, size: int = 32) -> np.ndarray:
    hit = _THUMBS.get((id(image), size))
    if hit is not None and hit[0] is image:
        return hit[1]
    thumb = _compute_thumbnail(image, size)
    _THUMBS[(id(image), size)] = (image, thumb)
    return thumb


def _compute_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    img = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if img.ndim == 3:
        img = img.mean(dim=-1)
    small = torch.nn.functional.interpolate(img[None, None], size=(size, size), mode="area")[0, 0]
    return torch.nn.functional.normalize(small.flatten(), dim=0).numpy().astype(np.float64)


class _TemplateGate:
    def __init__(self, prototype: np.ndarray, policy: ThresholdPolicy, calibration: float | None, size: int) -> None:
        self.prototype, self.policy, self.calibration, self.size = prototype, policy, calibration, size
        self.history = np.empty(0)

    def reset(self) -> None:
        self.history = np.empty(0)

    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        return np.array([_thumbnail(img, self.size) @ self.prototype for img in images])

    def calibrate(self, images: list[np.ndarray], rate: float) -> float:
        return float(np.quantile(self.scores(images), 1.0 - rate, method="lower"))

    def score(self, images: list[np.ndarray]) -> Batch:
        s = self.scores(images)
        self.history = np.r_[self.history, s][-20000:]
        if self.policy.mode == "fixed":
            thr = float(self.policy.value)
        elif self.policy.mode == "calibrated":
            thr = float(self.calibration)
        else:  # the guard's rule for detectors without a threshold of their own: Otsu over the score history
            thr = otsu_threshold(torch.as_tensor(self.history))
        return Batch(s, s >= thr, thr)


@dataclass(frozen=True)
class ThumbnailTemplate:
    """Floor: cosine of a ``size`` x ``size`` grey-level thumbnail to the references' mean thumbnail (no weights).

    Decisions follow the guard's rules: ``adaptive`` = Otsu over its score history, ``calibrated`` = the score
    that accepts ``rate`` of the references (scored by the template they built), ``fixed`` = a number.

    Args:
        size: thumbnail side in pixels.
        name: the name in results.
    """

    size: int = 32
    name: str = "thumbnail_template"
    policies_share_scores: bool = True

    def build(self, encoder: Any, labels: Sequence[str], references: References, policy: ThresholdPolicy,
              context: Mapping[str, Any]) -> Gate:
        thumbs = np.stack([_thumbnail(img, self.size) for img in references.images])
        proto = thumbs.mean(axis=0)
        proto /= np.linalg.norm(proto)
        gate = _TemplateGate(proto, policy, None, self.size)
        if policy.mode == "calibrated":
            gate.calibration = gate.calibrate(references.images, float(policy.value))
        return gate

    def describe(self) -> dict[str, Any]:
        return {"kind": "floor: pixel template, no learned weights, no corpus",
                "feature": f"{self.size} x {self.size} grey-level thumbnail (area resize), L2-normalised",
                "score": "cosine to the mean thumbnail of the references"}


def _fusion_value(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def make_method(name: str) -> Method:
    """``thumbnail`` for the floor, anything else is a ``Guard.build`` detector name.

    A fused detector name may carry its fusion rule: ``tanl+knn:decision=score/admission=label`` builds the guard
    with ``FusionConfig(decision="score", admission="label")`` (the defaults for the fields not named).

    Args:
        name: the method's name in results.
    """
    if name in ("thumbnail", "thumbnail_template"):
        return ThumbnailTemplate()
    from tanl_guard.guard import FusionConfig, split_detector_name

    detector, sep, rule = name.partition(":")
    # a feature gate sets its own threshold from a calibrated policy: one guard per policy
    share = split_detector_name(detector)[1] is None
    if not sep:
        return GuardMethod(name, policies_share_scores=share)

    fields = dict(item.split("=", 1) for item in rule.split("/") if item)
    fusion = FusionConfig(**{k: _fusion_value(v) for k, v in fields.items()})
    return GuardMethod(detector, build_kwargs={"fusion": fusion}, name=name, policies_share_scores=share)
