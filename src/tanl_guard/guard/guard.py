# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The Guard: encoder + ID anchors + negative-label corpus + detector + policy, turning images into verdicts."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..config import AdaNegConfig, MCMConfig, NegLabelConfig, TANLConfig
from ..detectors import DETECTORS, Detector, DetectorStep, TANLDetector
from ..noise import noise_images
from ..threshold import otsu_threshold
from .policy import GuardPolicy
from .verdicts import ACCEPT, REJECT, UNREADABLE, SeriesVerdict

__all__ = ["GateResult", "Guard", "make_detector"]

_DEFAULT_CONFIGS = {"tanl": TANLConfig, "neglabel": NegLabelConfig, "mcm": MCMConfig, "adaneg": AdaNegConfig}
_HISTORY_LEN = 20000  # guard-side score history for detectors without a threshold of their own
_HEALTH_BATCHES = 5  # batches without a single confident ID admission before the guard warns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """A batch of images through the gate.

    Attributes:
        scores: (B,) id_scores, higher = more in-distribution.
        threshold: the threshold in force for this batch.
        accepted: (B,) ``scores >= threshold``.
        predictions: the most likely ID label of each image (zero-shot, from the anchors).
        top_negatives: per image, the activated negative labels that fired most on it.
        step: the detector's own output, for audit and debugging.
    """

    scores: torch.Tensor
    threshold: float
    accepted: torch.Tensor
    predictions: tuple[str, ...]
    top_negatives: tuple[tuple[str, ...], ...]
    step: DetectorStep

    def __len__(self) -> int:
        return int(self.scores.numel())


def make_detector(
    name: str,
    id_embeddings: torch.Tensor,
    corpus_embeddings: torch.Tensor,
    logit_scale: float,
    config: Any = None,
    corpus_kinds: torch.Tensor | None = None,
) -> Detector:
    """Build a detector by registry name (``tanl``, ``neglabel``, ``mcm``, ``adaneg``)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}")
    config = config if config is not None else _DEFAULT_CONFIGS[name]()
    cls = DETECTORS[name]
    if name in ("neglabel", "adaneg"):
        return cls(id_embeddings, corpus_embeddings, logit_scale, config, kinds=corpus_kinds)
    return cls(id_embeddings, corpus_embeddings, logit_scale, config)


class Guard:
    """Turns images (or their embeddings) into accept/reject verdicts, and owns the online detector state.

    Args:
        encoder: a :class:`~tanl_guard.encoders.VisionLanguageEncoder`.
        anchors: the ID anchors (``embeddings`` (C', D) and ``label_of`` naming each column's ID label).
        corpus: the negative-label corpus (``labels``, ``kinds``; its order matches ``corpus_embeddings``).
        corpus_embeddings: (N, D) unit-norm embeddings of the corpus labels.
        detector: registry name of the detector, or a built detector over the same anchors and corpus.
        policy: threshold and verdict rules.
        config: the detector's configuration (its default when None).
        seed: seeds TANL's cold start (noise images and queue orders), so runs are reproducible.
        modality_gap: ``"noise"`` (default) moves image-prototype anchors into the text region before they join
            the text labels as ID columns: ``normalize(p - mean(noise images) + mean(corpus labels))``. Image-image
            cosines run far higher than image-text ones (CLIP's modality gap; for the surrogate 0.5-0.8 against
            0.2-0.4), so an unshifted prototype out-scores every text negative for any image and the scores
            saturate near 1. ``"none"`` keeps the prototypes as they are.

    The guard is the single owner of the detector state: calls are serialised by a lock, so it may be shared by
    threads of one process; never copy it into DataLoader workers or transforms.
    """

    def __init__(
        self,
        encoder: Any,
        anchors: Any,
        corpus: Any,
        corpus_embeddings: torch.Tensor,
        detector: str | Detector = "tanl",
        policy: GuardPolicy | None = None,
        config: Any = None,
        seed: int = 0,
        modality_gap: str = "noise",
    ) -> None:
        if modality_gap not in ("noise", "none"):
            raise ValueError(f"modality_gap must be 'noise' or 'none', got {modality_gap!r}")
        self.encoder = encoder
        self.anchors = anchors
        self.corpus = corpus
        self.policy = policy if policy is not None else GuardPolicy()
        self.seed = seed
        id_embeddings = anchors.embeddings.to(encoder.device)
        corpus_embeddings = corpus_embeddings.to(device=encoder.device, dtype=id_embeddings.dtype)
        self._noise_features = self._embed_noise()
        image_columns = [i for i, kind in enumerate(getattr(anchors, "kinds", ())) if kind == "image"]
        if modality_gap == "noise" and image_columns and len(corpus_embeddings):
            gap = self._noise_features.mean(dim=0) - corpus_embeddings.mean(dim=0)
            id_embeddings = id_embeddings.clone()
            id_embeddings[image_columns] = torch.nn.functional.normalize(id_embeddings[image_columns] - gap, dim=1)
        self.id_embeddings = id_embeddings
        self.modality_gap = modality_gap
        if isinstance(detector, str):
            kinds = corpus.kind_ids() if hasattr(corpus, "kind_ids") else None
            detector = make_detector(detector, self.id_embeddings, corpus_embeddings, encoder.logit_scale, config, kinds)
        self.detector = detector
        self._lock = threading.RLock()
        self._history = torch.empty(0, dtype=torch.float64)
        self.calibration: dict[str, Any] | None = None
        self.last_result: GateResult | None = None  # the latest gated batch, for integrations that need it
        self.n_images = 0
        self._admissions: deque[int] = deque(maxlen=_HEALTH_BATCHES)  # confident-ID admissions per recent batch
        self._warned = False
        self.reset()

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        encoder: Any = "biomedclip",
        labels: Sequence[str] = (),
        reference_images: Mapping[str, Sequence[Any]] | None = None,
        corpus: Any = "wordnet",
        detector: str = "tanl",
        policy: GuardPolicy | None = None,
        config: Any = None,
        device: str = "cpu",
        cache_dir: str | None = None,
        templates: Sequence[str] | None = None,
        progress: bool = False,
        seed: int = 0,
        modality_gap: str = "noise",
        near_id_threshold: float | None = 0.95,
    ) -> Guard:
        """Resolve the encoder, build the anchors and the corpus, and return a ready guard.

        Args:
            encoder: an encoder spec (``biomedclip``, ``open_clip:ARCH:PRETRAINED``, ``surrogate``) or an encoder.
            labels: ID label names (text anchors).
            reference_images: per ID label, reference images (image anchors; also used by ``calibrated``).
            corpus: a corpus spec (``wordnet``, ``dicom``, ``wordnet+dicom``, a file) or a loaded corpus.
            detector: ``tanl`` (default), ``neglabel``, ``mcm`` or ``adaneg``.
            policy: threshold and verdict rules.
            config: the detector's configuration.
            device: where the encoder and the detector run (``cpu``, ``cuda``, ``cuda:N``).
            cache_dir: where corpus embeddings are cached.
            templates: prompt templates of the text anchors (the encoders' defaults when None).
            progress: show progress bars (stderr) while embedding the corpus.
            seed: seeds the cold start.
            modality_gap: how image-prototype anchors are placed beside text labels (see the class docs).
            near_id_threshold: drop corpus labels whose cosine to an ID text anchor exceeds this (synonyms of
                the ID labels, which would otherwise count as negatives); None keeps them all.
        """
        from ..corpora import drop_near_id, embed_corpus, load_corpus
        from ..encoders import build_id_anchors, resolve

        if isinstance(encoder, str):
            encoder = resolve(encoder, device=device)
        if not labels and not reference_images:
            raise ValueError("give ID labels, reference ID images, or both")
        anchor_kwargs: dict[str, Any] = {"labels": tuple(labels), "reference_images": reference_images}
        if templates is not None:
            anchor_kwargs["templates"] = tuple(templates)
        anchors = build_id_anchors(encoder, **anchor_kwargs)
        if isinstance(corpus, str):
            corpus = load_corpus(corpus)
        corpus = corpus.without_id_labels(list(labels) + list(reference_images or {}))
        corpus_embeddings = embed_corpus(encoder, corpus, cache_dir=cache_dir, progress=progress)
        text_columns = [i for i, kind in enumerate(anchors.kinds) if kind == "text"]
        if near_id_threshold is not None and text_columns:
            # With the encoder in use, drop labels that are synonyms of an ID label (CSP's rule); string matching
            # above only catches the label itself and its plurals.
            id_text = anchors.embeddings[text_columns].to(corpus_embeddings)
            kept = drop_near_id(corpus_embeddings, corpus, id_text, near_id_threshold)
            if len(kept) < len(corpus):
                log.info("dropped %d corpus labels within cosine %.2f of an ID label", len(corpus) - len(kept),
                         near_id_threshold)
                corpus, corpus_embeddings = corpus.subset(kept), corpus_embeddings[kept]
        guard = cls(encoder, anchors, corpus, corpus_embeddings, detector, policy, config, seed, modality_gap)
        if guard.policy.threshold.mode == "calibrated":
            if not reference_images:
                raise ValueError("a calibrated threshold needs reference ID images")
            guard.calibrate([img for imgs in reference_images.values() for img in imgs])
        return guard

    def _embed_noise(self) -> torch.Tensor:
        """Embeddings of TANL's 15 seeded noise images (fed without mean/std normalisation, as the reference)."""
        size = int(getattr(getattr(self.encoder, "preprocess", None), "size", 224))
        noise = noise_images(per_kind=3, size=size, generator=torch.Generator().manual_seed(self.seed))
        return self.encoder.encode_images(noise, normalize_input=False)

    def reset(self) -> None:
        """Forget the stream: TANL's cold start from noise images, and the guard's score history."""
        with self._lock:
            if isinstance(self.detector, TANLDetector):
                generator = torch.Generator().manual_seed(self.seed + 1)
                self.detector.reset(noise_features=self._noise_features, generator=generator)
            else:
                self.detector.reset()
            self._history = torch.empty(0, dtype=torch.float64)
            self.n_images = 0
            self._admissions = deque(maxlen=_HEALTH_BATCHES)
            self._warned = False

    # ------------------------------------------------------------------ scoring
    def _threshold(self, step: DetectorStep, history: torch.Tensor) -> float:
        mode = self.policy.threshold.mode
        if mode == "fixed":
            return float(self.policy.threshold.value)
        if mode == "calibrated":
            if self.calibration is None:
                raise RuntimeError("the calibrated threshold needs Guard.calibrate(reference ID images) first")
            return float(self.calibration["threshold"])
        return float(step.threshold) if step.threshold is not None else otsu_threshold(history)

    def score_features(self, features: torch.Tensor) -> GateResult:
        """Gate a batch of (B, D) image embeddings from this guard's encoder (updates the online state)."""
        with self._lock:
            step = self.detector.step(features)
            scores = step.scores.detach()
            history = torch.cat([self._history, scores.double().cpu()])[-_HISTORY_LEN:]
            threshold = self._threshold(step, history)
            self._history = history
            self.n_images += int(scores.numel())
            self._check_health(step)
        names = self.corpus.labels
        label_of = self.anchors.label_of
        top = step.top_negatives
        k = self.policy.top_negatives
        top_names = tuple(
            tuple(names[int(i)] for i in row[:k]) for row in (top.tolist() if top is not None else [[]] * len(scores))
        )
        result = GateResult(
            scores=scores,
            threshold=threshold,
            accepted=scores >= threshold,
            predictions=tuple(label_of[int(i)] for i in step.predictions.tolist()),
            top_negatives=top_names,
            step=step,
        )
        self.last_result = result
        return result

    def _check_health(self, step: DetectorStep) -> None:
        """Warn when TANL stops learning what in-distribution looks like: nothing admitted as confident ID.

        It happens when the ID anchors do not match the images (text labels the encoder cannot read, say): the
        cold-start history then pins the threshold and every image looks OOD, and the scores alone do not show it.
        """
        confident = getattr(step, "confident_id", None)
        if confident is None:
            return
        self._admissions.append(int(confident.sum()))
        stalled = len(self._admissions) == _HEALTH_BATCHES and sum(self._admissions) == 0
        if stalled and not self._warned:
            log.warning(
                "TANL admitted no confident in-distribution image in the last %d batches: the ID anchors may not "
                "match the images (add reference ID images, or check the labels and the encoder)", _HEALTH_BATCHES
            )
        self._warned = stalled

    def health(self) -> dict[str, Any]:
        """Whether the online adaptation is learning: ``{"ok": bool, "recent_confident_id": [...], ...}``."""
        recent = list(self._admissions)
        ok = not (len(recent) == _HEALTH_BATCHES and sum(recent) == 0)
        out: dict[str, Any] = {"ok": ok, "recent_confident_id": recent}
        if not ok:
            out["problem"] = f"no confident in-distribution admission in the last {_HEALTH_BATCHES} batches"
        return out

    def score_images(self, images: Any) -> GateResult:
        """Embed images (a (B, C, H, W) tensor in [0, 1], or a list of (H, W) / (H, W, 3) arrays) and gate them."""
        return self.score_features(self.encoder.encode_images(images))

    def judge_series(
        self, series: str, modality: str, gate: GateResult, views: slice | Sequence[int]
    ) -> SeriesVerdict:
        """The verdict of one series whose views sit at ``views`` in a gated batch."""
        index = list(range(len(gate)))[views] if isinstance(views, slice) else list(views)
        if not index:
            return SeriesVerdict(series=series, modality=modality, verdict=UNREADABLE, reason="no views")
        view_scores = gate.scores[index].double()
        score = float(view_scores.min() if self.policy.view_reduction == "min" else view_scores.mean())
        accepted = score >= gate.threshold
        negatives: list[str] = []
        for i in sorted(index, key=lambda j: float(gate.scores[j])):
            negatives += [n for n in gate.top_negatives[i] if n not in negatives]
        prediction = max(set(gate.predictions[i] for i in index), key=[gate.predictions[i] for i in index].count)
        return SeriesVerdict(
            series=series,
            modality=modality,
            verdict=ACCEPT if accepted else REJECT,
            id_score=score,
            threshold=gate.threshold,
            views=len(index),
            view_scores=tuple(float(s) for s in view_scores),
            top_negatives=tuple(negatives[: self.policy.top_negatives]),
            reason=None if accepted else f"id_score {score:.3f} < threshold {gate.threshold:.3f}",
            prediction=prediction,
        )

    def calibrate(self, reference_images: Sequence[Any], rate: float | None = None, batch_size: int = 64) -> float:
        """Set the threshold that accepts ``rate`` of the reference ID images, without changing the online state.

        The reference images go through the detector as a stream from the current state, which is restored
        afterwards; the operating point (rate, count, threshold) is kept in :attr:`calibration`.
        """
        rate = rate if rate is not None else (self.policy.threshold.value or 0.95)
        if not reference_images:
            raise ValueError("calibration needs at least one reference ID image")
        with self._lock:
            saved = self.detector.state_dict()
            scores = []
            for start in range(0, len(reference_images), batch_size):
                features = self.encoder.encode_images(list(reference_images[start : start + batch_size]))
                scores.append(self.detector.step(features).scores.double().cpu())
            self.detector.load_state_dict(saved)
            all_scores = torch.cat(scores)
            threshold = float(torch.quantile(all_scores, 1.0 - rate, interpolation="lower"))
            self.calibration = {"rate": rate, "n_reference": int(all_scores.numel()), "threshold": threshold}
        return threshold

    # ------------------------------------------------------------------ state
    def snapshot(self, n_negatives: int = 20) -> dict[str, Any]:
        """JSON-safe summary of the online state for the audit: threshold, queues, leading activated negatives."""
        with self._lock:
            out: dict[str, Any] = {"detector": self.detector.name, "images_screened": self.n_images}
            if isinstance(self.detector, TANLDetector):
                pos, neg = self.detector.queue_sizes
                out.update(
                    threshold=self.detector.threshold,
                    pos_queue=pos,
                    neg_queue=neg,
                    selected_negatives=[self.corpus.labels[int(i)] for i in self.detector.selected[:n_negatives]],
                )
            elif len(self._history):
                out["threshold"] = otsu_threshold(self._history)
            if self.calibration is not None:
                out["calibration"] = dict(self.calibration)
            out["health"] = self.health()
            return out

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "detector": self.detector.state_dict(),
                "history": self._history.clone(),
                "calibration": dict(self.calibration) if self.calibration else None,
                "n_images": self.n_images,
                "policy_threshold": str(self.policy.threshold),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.detector.load_state_dict(state["detector"])
            self._history = state["history"].to(torch.float64).clone()
            self.calibration = dict(state["calibration"]) if state.get("calibration") else None
            self.n_images = int(state["n_images"])
