# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The Guard: encoder + ID anchors + negative-label corpus + detectors + policy, turning images into verdicts.

A guard has a label gate (TANL or a baseline, on the joint image-text embeddings), a feature gate (kNN or
Mahalanobis on image features, fit on reference ID images), or both, fused (:mod:`.fusion`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..detectors import DETECTORS, Detector, DetectorStep, FeatureDetector, make_detector
from ..encoders.base import ImageEncoding
from ..noise import noise_images
from ..threshold import otsu_threshold
from .fusion import FusionConfig, GateScores, combined_margin, fused_score, refused_by
from .policy import GuardPolicy
from .verdicts import ACCEPT, REJECT, UNREADABLE, SeriesVerdict

__all__ = [
    "GateResult",
    "Guard",
    "make_detector",
    "detector_names",
    "split_detector_name",
    "DEFAULT_FUSED_DETECTOR",
    "FEATURE_SOURCES",
]

#: the detector ``Guard.build`` and ``tanl-guard screen`` use when reference images are given (docs/method.md)
DEFAULT_FUSED_DETECTOR = "tanl+knn"
#: where a feature gate's features come from: the encoder's image trunk (same forward pass as the embedding), the
#: joint embedding itself, or features the caller supplies (e.g. a MONAI classifier's penultimate layer)
FEATURE_SOURCES = ("trunk", "embedding", "external")

# How far saved ID columns may be from the rebuilt ones and still be adopted on load (encoder last-bit noise: 6e-8)
ID_EMBEDDING_TOLERANCE = 1e-4
_HISTORY_LEN = 20000  # guard-side score history for detectors without a threshold of their own
_HEALTH_BATCHES = 5  # batches without a single confident ID admission before the guard warns
_MIN_SPREAD = 1e-6

log = logging.getLogger(__name__)


def _kind(name: str) -> str:
    return DETECTORS[name].detector.input


def detector_names() -> tuple[str, ...]:
    """Every detector name a guard accepts: each registered detector, and every ``label+feature`` pair."""
    label = [name for name in DETECTORS if _kind(name) == "embeddings"]
    feature = [name for name in DETECTORS if _kind(name) == "features"]
    return tuple(label + feature + [f"{a}+{b}" for a in label for b in feature])


def split_detector_name(name: str) -> tuple[str | None, str | None]:
    """``"tanl+knn"`` -> ``("tanl", "knn")``; ``"tanl"`` -> ``("tanl", None)``; ``"knn"`` -> ``(None, "knn")``.

    Args:
        name: one of :func:`detector_names`.
    """
    parts = name.split("+")
    if name not in detector_names() or len(parts) > 2:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(detector_names())}")
    label = next((p for p in parts if _kind(p) == "embeddings"), None)
    feature = next((p for p in parts if _kind(p) == "features"), None)
    return label, feature


def _config_for(config: Any, name: str | None, names: Sequence[str]) -> Any:
    """The config of detector ``name`` from a single config (matched by type) or a mapping name -> config."""
    if name is None or config is None:
        return None
    if isinstance(config, Mapping):
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"configs given for detectors {unknown} that this guard does not have ({list(names)})")
        return config.get(name)
    matches = [n for n in names if isinstance(config, DETECTORS[n].config)]
    if not matches:
        raise TypeError(f"{type(config).__name__} configures none of {list(names)}")
    return config if name in matches else None


def _spread(history: torch.Tensor, threshold: float) -> float:
    """A label gate's score scale: median accepted score minus the threshold (the history's spread otherwise)."""
    above = history[history >= threshold]
    if above.numel():
        spread = float(above.median()) - threshold
    else:
        spread = float(history.std()) if history.numel() > 1 else 0.0
    return max(spread, _MIN_SPREAD)


@dataclass(frozen=True)
class GateResult:
    """A batch of images through the gate.

    Attributes:
        scores: (B,) id_scores, higher = more in-distribution (a fused guard: ``sigmoid`` of the fused margin).
        threshold: the threshold in force for this batch (a fused guard: 0.5, or the fixed policy value).
        accepted: (B,) ``scores >= threshold``.
        predictions: the most likely ID label of each image (from the label gate's anchors, else the feature gate).
        top_negatives: per image, the activated negative labels that fired most on it.
        step: the primary detector's own output (the label gate's when there is one), for audit and debugging.
        gates: each gate's scores, threshold and spread (one entry per gate; two for a fused guard).
        feature_step: the feature gate's output, when there is one.
    """

    scores: torch.Tensor
    threshold: float
    accepted: torch.Tensor
    predictions: tuple[str, ...]
    top_negatives: tuple[tuple[str, ...], ...]
    step: DetectorStep
    gates: tuple[GateScores, ...] = ()
    feature_step: DetectorStep | None = None

    def __len__(self) -> int:
        return int(self.scores.numel())


class Guard:
    """Turns images (or their embeddings and features) into accept/reject verdicts, and owns the detector state.

    Args:
        encoder: a :class:`~tanl_guard.encoders.VisionLanguageEncoder`.
        anchors: the ID anchors (``embeddings`` (C', D) and ``label_of`` naming each column's ID label).
        corpus: the negative-label corpus (``labels``, ``kinds``; its order matches ``corpus_embeddings``).
        corpus_embeddings: (N, D) unit-norm embeddings of the corpus labels.
        detector: a name from :func:`detector_names` (``tanl``, ``knn``, ``tanl+knn`` ...), or a built detector
            (a feature detector must be fit, or fit later with :meth:`fit_feature_gate`).
        policy: threshold and verdict rules.
        config: the detectors' configuration: one config (given to the detector it configures) or a mapping
            detector name -> config; defaults when None.
        seed: seeds every detector (their configs' ``seed`` fields) and TANL's cold start (noise images and
            queue orders), so runs are reproducible.
        modality_gap: ``"noise"`` (default) moves image-prototype anchors into the text region before they join
            the text labels as ID columns: ``normalize(p - mean(noise images) + mean(corpus labels))``. Image-image
            cosines run far higher than image-text ones (CLIP's modality gap; for the surrogate 0.5-0.8 against
            0.2-0.4), so an unshifted prototype out-scores every text negative for any image and the scores
            saturate near 1. ``"none"`` keeps the prototypes as they are.
        fusion: how a label gate and a feature gate combine (defaults of :class:`~.fusion.FusionConfig`).
        feature_source: what the feature gate reads, one of :data:`FEATURE_SOURCES` (default ``"trunk"`` when the
            encoder has trunk features, else ``"embedding"``).
        feature_detector: a built (fit) feature detector to pair with a built label ``detector``.

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
        *,
        fusion: FusionConfig | None = None,
        feature_source: str | None = None,
        feature_detector: FeatureDetector | None = None,
    ) -> None:
        if modality_gap not in ("noise", "none"):
            raise ValueError(f"modality_gap must be 'noise' or 'none', got {modality_gap!r}")
        self.encoder = encoder
        self.anchors = anchors
        self.corpus = corpus
        self.policy = policy if policy is not None else GuardPolicy()
        self.seed = seed
        self.fusion = fusion if fusion is not None else FusionConfig()
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

        self.label_detector: Detector | None = None
        self.feature_detector: FeatureDetector | None = feature_detector
        if isinstance(detector, str):
            label_name, feature_name = split_detector_name(detector)
            names = [n for n in (label_name, feature_name) if n]
            kinds = corpus.kind_ids() if hasattr(corpus, "kind_ids") and len(corpus) else None
            if label_name is not None:
                self.label_detector = make_detector(
                    label_name, self.id_embeddings, corpus_embeddings, encoder.logit_scale,
                    _config_for(config, label_name, names), kinds, seed=seed,
                )
            if feature_name is not None:
                self.feature_detector = make_detector(  # type: ignore[assignment]
                    feature_name, config=_config_for(config, feature_name, names), seed=seed
                )
        elif isinstance(detector, FeatureDetector):
            if feature_detector is not None:
                raise ValueError("give one feature detector, not two")
            self.feature_detector = detector
        else:
            self.label_detector = detector
        if self.feature_detector is not None:
            source = feature_source or ("trunk" if getattr(encoder, "feature_dim", None) else "embedding")
            if source not in FEATURE_SOURCES:
                raise ValueError(f"feature_source must be one of {FEATURE_SOURCES}, got {source!r}")
            if source == "trunk" and not getattr(encoder, "feature_dim", None):
                raise ValueError(f"encoder {encoder.id!r} gives no trunk features; use feature_source='embedding'")
            self.feature_source: str | None = source
        else:
            self.feature_source = None
        self.feature_labels: tuple[str, ...] = ()
        admits = bool(getattr(self.label_detector, "accepts_admission", False))
        #: the admission rule in force: "feature" only when fused and the label detector keeps queues (TANL)
        self.admission = self.fusion.admission if (self.fused and admits) else "label"
        self._lock = threading.RLock()
        self._history = torch.empty(0, dtype=torch.float64)
        self._cross = torch.empty(0, dtype=torch.float64)  # label scores of recent feature-accepted images
        self._label_in_force: float | None = None  # the label gate's threshold on the latest batch
        self.calibration: dict[str, Any] | None = None
        self.n_images = 0
        self._admissions: deque[int] = deque(maxlen=_HEALTH_BATCHES)  # confident-ID admissions per recent batch
        self._warned = False
        self.reset()

    # ------------------------------------------------------------------ naming
    @property
    def detector(self) -> Detector:
        """The primary detector: the label gate's, or the feature gate's when there is no label gate."""
        primary = self.label_detector if self.label_detector is not None else self.feature_detector
        assert primary is not None
        return primary

    @property
    def fused(self) -> bool:
        """Whether the guard has both a label gate and a feature gate."""
        return self.label_detector is not None and self.feature_detector is not None

    @property
    def detector_name(self) -> str:
        """``tanl``, ``knn``, ``tanl+knn`` ..."""
        return "+".join(d.name for d in (self.label_detector, self.feature_detector) if d is not None)

    @property
    def feature_calibration(self) -> dict[str, Any] | None:
        """The feature gate's operating point (target rate, method, folds, threshold ...), once fit."""
        return None if self.feature_detector is None else self.feature_detector.calibration

    def detector_configs(self) -> dict[str, Any]:
        """JSON-safe configuration of every gate (and of the fusion, for a fused guard), by name."""
        out: dict[str, Any] = {d.name: asdict(d.config) for d in (self.label_detector, self.feature_detector) if d}
        if self.fused:
            out["fusion"] = {**asdict(self.fusion), "admission": self.admission}
        if self.feature_detector is not None:
            out["feature_source"] = self.feature_source
        return out

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        encoder: Any = "biomedclip",
        labels: Sequence[str] = (),
        reference_images: Mapping[str, Sequence[Any]] | None = None,
        corpus: Any = "wordnet",
        detector: str | None = None,
        policy: GuardPolicy | None = None,
        config: Any = None,
        device: str = "cpu",
        cache_dir: str | None = None,
        templates: Sequence[str] | None = None,
        progress: bool | None = None,
        seed: int = 0,
        modality_gap: str = "noise",
        near_id_threshold: float | None = 0.95,
        *,
        reference_sources: Mapping[str, Sequence[str]] | None = None,
        reference_features: Mapping[str, torch.Tensor] | None = None,
        fusion: FusionConfig | None = None,
        feature_source: str | None = None,
    ) -> Guard:
        """Resolve the encoder, build the anchors and the corpus, fit and calibrate the feature gate.

        Args:
            encoder: an encoder spec (``biomedclip``, ``open_clip:ARCH:PRETRAINED``, ``surrogate``) or an encoder.
            labels: ID label names (text anchors).
            reference_images: per ID label, reference images: image anchors, the feature gate's references, and the
                references of ``calibrated`` thresholds. Draw them from the scanners and protocols you screen.
            corpus: a corpus spec (``wordnet``, ``dicom``, ``wordnet+dicom``, a file) or a loaded corpus.
            detector: a name from :func:`detector_names`; default :data:`DEFAULT_FUSED_DETECTOR` when reference
                images (or features) are given, else ``tanl``.
            policy: threshold and verdict rules; ``calibrated:RATE`` also sets the feature gate's target rate.
            config: the detectors' configuration (one config, or a mapping detector name -> config).
            device: where the encoder and the detectors run (``cpu``, ``cuda``, ``cuda:N``).
            cache_dir: where corpus embeddings are cached.
            templates: prompt templates of the text anchors (the encoders' defaults when None).
            progress: show progress bars (stderr) while embedding the corpus; ``None`` (default) shows them when
                stderr is a terminal (a first build of a large corpus takes minutes), ``False`` never.
            seed: seeds every detector and the cold start.
            modality_gap: how image-prototype anchors are placed beside text labels (see the class docs).
            near_id_threshold: drop corpus labels whose cosine to an ID text anchor exceeds this (synonyms of
                the ID labels, which would otherwise count as negatives); None keeps them all.
            reference_sources: per ID label, the source of each reference image (volume, series, study, folder),
                parallel to ``reference_images``; the feature gate is then calibrated leave-one-source-out
                (k-fold without sources, or with a single one).
            reference_features: per ID label, (n, F) features of its reference images from an external source
                (``feature_source="external"``, e.g. a classifier's penultimate layer).
            fusion: how the two gates of a fused detector combine.
            feature_source: one of :data:`FEATURE_SOURCES` (``"external"`` when ``reference_features`` is given).
        """
        from ..corpora import drop_near_id, embed_corpus, load_corpus
        from ..encoders import build_id_anchors, resolve

        if isinstance(encoder, str):
            encoder = resolve(encoder, device=device)
        if not labels and not reference_images:
            raise ValueError("give ID labels, reference ID images, or both")
        policy = policy if policy is not None else GuardPolicy()
        has_references = bool(reference_images) or bool(reference_features)
        name = detector or (DEFAULT_FUSED_DETECTOR if has_references else "tanl")
        label_name, feature_name = split_detector_name(name)
        if reference_features is not None:
            feature_source = feature_source or "external"
        if feature_name is not None:
            if not has_references:
                raise ValueError(f"detector {name!r} needs reference ID images to fit its feature gate")
            feature_source = feature_source or ("trunk" if getattr(encoder, "feature_dim", None) else "embedding")
            if feature_source == "external" and reference_features is None:
                raise ValueError("feature_source 'external' needs reference_features")

        # Encode the references once: anchors, feature gate and calibration all read this one pass.
        ref_embeddings: dict[str, torch.Tensor] = {}
        ref_features: dict[str, torch.Tensor] = dict(reference_features or {})
        for label, images in (reference_images or {}).items():
            if feature_name is not None and feature_source == "trunk":
                encoded = encoder.encode_images(images, return_features=True)
                ref_embeddings[label], ref_features[label] = encoded.embeddings, encoded.features
            else:
                ref_embeddings[label] = encoder.encode_images(images)
                if feature_name is not None and feature_source == "embedding":
                    ref_features[label] = ref_embeddings[label]
        anchor_kwargs: dict[str, Any] = {"labels": tuple(labels), "reference_embeddings": ref_embeddings or None}
        if templates is not None:
            anchor_kwargs["templates"] = tuple(templates)
        anchors = build_id_anchors(encoder, **anchor_kwargs)

        if isinstance(corpus, str):
            corpus = load_corpus(corpus)
        if label_name is None:  # a feature gate alone scores against no label: skip embedding the corpus
            corpus = corpus.subset([])
            corpus_embeddings = anchors.embeddings.new_empty(0, anchors.embeddings.shape[1])
        else:
            corpus = corpus.without_id_labels(list(labels) + list(reference_images or {}))
            corpus_embeddings = embed_corpus(encoder, corpus, cache_dir=cache_dir, progress=progress)
            text_columns = [i for i, kind in enumerate(anchors.kinds) if kind == "text"]
            if near_id_threshold is not None and text_columns:
                # With the encoder in use, drop labels that are synonyms of an ID label (CSP's rule); string
                # matching above only catches the label itself and its plurals.
                id_text = anchors.embeddings[text_columns].to(corpus_embeddings)
                kept = drop_near_id(corpus_embeddings, corpus, id_text, near_id_threshold)
                if len(kept) < len(corpus):
                    log.info("dropped %d corpus labels within cosine %.2f of an ID label", len(corpus) - len(kept),
                             near_id_threshold)
                    corpus, corpus_embeddings = corpus.subset(kept), corpus_embeddings[kept]

        if feature_name is not None and policy.threshold.mode == "calibrated":
            # calibrated:RATE is the target acceptance of every calibrated gate
            names = [n for n in (label_name, feature_name) if n]
            feature_config = _config_for(config, feature_name, names) or DETECTORS[feature_name].config()
            feature_config = replace(
                feature_config, calibration=replace(feature_config.calibration, rate=policy.threshold.value)
            )
            others = {n: _config_for(config, n, names) for n in names if n != feature_name}
            config = {**{n: c for n, c in others.items() if c is not None}, feature_name: feature_config}
        guard = cls(encoder, anchors, corpus, corpus_embeddings, name, policy, config, seed, modality_gap,
                    fusion=fusion, feature_source=feature_source)
        if guard.feature_detector is not None:
            order = list(ref_features)
            missing = [label for label in order if reference_sources and label not in reference_sources]
            if missing:
                raise ValueError(f"reference_sources lacks the labels {missing}")
            guard.fit_feature_gate(
                torch.cat([ref_features[label] for label in order]),
                [label for label in order for _ in range(len(ref_features[label]))],
                [s for label in order for s in reference_sources[label]] if reference_sources else None,
            )
        if policy.threshold.mode == "calibrated" and guard.label_detector is not None:
            if not ref_embeddings:
                raise ValueError("a calibrated threshold needs reference ID images")
            guard.calibrate(embeddings=torch.cat(list(ref_embeddings.values())))
        return guard

    def fit_feature_gate(
        self, features: torch.Tensor, labels: Sequence[str] | None = None, sources: Sequence[Any] | None = None
    ) -> dict[str, Any] | None:
        """Fit the feature gate on reference features and calibrate its threshold on held-out references.

        Args:
            features: (n, F) features of the reference ID images, from this guard's feature source.
            labels: per reference, its ID label name (None: all the first ID label).
            sources: per reference, its source (volume, series, study, folder): several sources calibrate
                leave-one-source-out; otherwise k-fold.

        Returns:
            the operating point (also in :attr:`feature_calibration` and the snapshot).
        """
        if self.feature_detector is None:
            raise ValueError(f"detector {self.detector_name!r} has no feature gate")
        labels = list(labels) if labels is not None else [self.anchors.labels[0]] * int(features.shape[0])
        if len(labels) != int(features.shape[0]):
            raise ValueError(f"{len(labels)} labels for {int(features.shape[0])} reference features")
        names = tuple(dict.fromkeys(labels))
        index = torch.tensor([names.index(label) for label in labels], dtype=torch.long)
        with self._lock:
            result = self.feature_detector.fit(features.to(self.encoder.device), index, sources)
            self.feature_labels = names
        if result is not None:
            log.info("feature gate %s: threshold %.4f accepts %.0f%% of held-out references (%s, %d folds)",
                     self.feature_detector.name, result["threshold"], 100 * result["held_out_accepted"],
                     result["method"], result["folds"])
            if result["method"] == "k-fold":
                log.warning("the feature gate was calibrated k-fold on references from a single source: images "
                            "from other scanners may fall below its threshold; give references from several "
                            "sources (subfolders, series or studies) drawn from the scanners you screen")
        return result

    def _embed_noise(self) -> torch.Tensor:
        """Embeddings of TANL's 15 seeded noise images (fed without mean/std normalisation, as the reference)."""
        size = int(getattr(getattr(self.encoder, "preprocess", None), "size", 224))
        noise = noise_images(per_kind=3, size=size, generator=torch.Generator().manual_seed(self.seed))
        return self.encoder.encode_images(noise, normalize_input=False)

    def reset(self) -> None:
        """Forget the stream: every detector's cold start (TANL: from noise images), and the score history."""
        with self._lock:
            for det in (self.label_detector, self.feature_detector):
                if det is not None:
                    det.reset(noise_features=self._noise_features, generator=torch.Generator().manual_seed(self.seed + 1))
            self._history = torch.empty(0, dtype=torch.float64)
            self._cross = torch.empty(0, dtype=torch.float64)
            self._label_in_force = None
            self.n_images = 0
            self._admissions = deque(maxlen=_HEALTH_BATCHES)
            self._warned = False

    # ------------------------------------------------------------------ scoring
    def encode(self, images: Any) -> ImageEncoding:
        """Embed images (and compute the feature gate's features in the same forward pass, when it reads them)."""
        if self.feature_detector is not None and self.feature_source == "trunk":
            return self.encoder.encode_images(images, return_features=True)
        if self.feature_detector is not None and self.feature_source == "external":
            raise ValueError(
                "this guard's feature gate reads features the caller supplies (feature source 'external'): call "
                "score_features(ImageEncoding(embeddings, features))"
            )
        return ImageEncoding(self.encoder.encode_images(images))

    def _label_threshold(self, step: DetectorStep | None, history: torch.Tensor) -> float:
        mode = self.policy.threshold.mode
        if mode == "fixed" and not self.fused:
            return float(self.policy.threshold.value)
        if mode == "calibrated":
            if self.calibration is None:
                raise RuntimeError("the calibrated threshold needs Guard.calibrate(reference ID images) first")
            return float(self.calibration["threshold"])
        if step is not None and step.threshold is not None:
            return float(step.threshold)
        return otsu_threshold(history) if len(history) else float("nan")

    @property
    def _cross_calibrated(self) -> bool:
        """Whether the label gate's threshold comes from the feature gate's verdicts on the stream."""
        # a fixed policy moves only the fused score's threshold; the gates keep theirs
        return self.fused and self.fusion.label_threshold == "feature" and self.policy.threshold.mode != "calibrated"

    def _cross_rate(self) -> float:
        assert self.feature_detector is not None
        return self.fusion.label_rate or self.feature_detector.config.calibration.rate

    def _cross_threshold(self, pool: torch.Tensor) -> float:
        return float(torch.quantile(pool, 1.0 - self._cross_rate(), interpolation="lower"))

    def label_warmup(self) -> dict[str, int] | None:
        """How far the label gate is from refusing anything, while its threshold comes from too few images.

        With ``label_threshold="feature"`` the label threshold is the score that accepts the target share of the
        feature-accepted images seen so far (their views, up to the fusion's window). Until there are enough of
        them, that score is their minimum and the label gate refuses nothing (at 95 %: 21 views). The pool is part
        of the saved state, so a site that resumes with ``--state`` warms up once.

        Returns:
            ``{"seen": n, "refuses_from": m}`` while ``n < m`` (``m`` may exceed the window: then it never
            refuses), else None; None too when the label threshold comes from elsewhere.
        """
        if not self._cross_calibrated:
            return None
        share = 1.0 - self._cross_rate()
        # the smallest pool whose quantile rank (the arithmetic of torch.quantile) passes the lowest score
        needed = next((n for n in range(2, self.fusion.window + 1) if math.floor((n - 1) * share) >= 1),
                      self.fusion.window + 1)
        seen = int(len(self._cross))
        return {"seen": seen, "refuses_from": needed} if seen < needed else None

    def _feature_threshold(self) -> float:
        assert self.feature_detector is not None
        if self.policy.threshold.mode == "fixed" and not self.fused:
            return float(self.policy.threshold.value)
        if self.feature_detector.threshold is None:
            raise RuntimeError("the feature gate has no threshold: fit it with calibration (Guard.fit_feature_gate)")
        return float(self.feature_detector.threshold)

    def score_features(self, features: torch.Tensor | ImageEncoding) -> GateResult:
        """Gate a batch (updates the online state).

        Args:
            features: (B, D) image embeddings from this guard's encoder, or an :class:`ImageEncoding` with the
                embeddings and the feature gate's (B, F) features (:meth:`encode` makes one).
        """
        encoding = features if isinstance(features, ImageEncoding) else ImageEncoding(features)
        with self._lock:
            feature_step = label_step = None
            gates: list[GateScores] = []
            if self.feature_detector is not None:
                if self.feature_source == "embedding":
                    feature_input = encoding.embeddings
                elif encoding.features is None:
                    raise ValueError(f"the feature gate reads {self.feature_source} features: pass an ImageEncoding "
                                     "with features (Guard.encode(images) computes them)")
                else:
                    feature_input = encoding.features
                feature_step = self.feature_detector.step(feature_input)
                spread = self.feature_detector.spread if self.feature_detector.spread is not None else 1.0
                gates.append(GateScores(self.feature_detector.name, "feature", feature_step.scores.double().cpu(),
                                        self._feature_threshold(), spread))
            primary_scores = None
            if self.label_detector is not None:
                kwargs: dict[str, Any] = {}
                if self.admission == "feature":
                    margin, cut = gates[0].margin(), self.fusion.admission_margin
                    kwargs["admit"] = (margin >= cut, margin < -cut)
                label_step = self.label_detector.step(encoding.embeddings, **kwargs)
                primary_scores = label_step.scores.detach()
                label_scores = primary_scores.double().cpu()
                history = torch.cat([self._history, label_scores])[-_HISTORY_LEN:]
                threshold = self._label_threshold(label_step, history)
                spread = _spread(history, threshold)
                if self._cross_calibrated:
                    feature = gates[0]
                    cross = torch.cat([self._cross, label_scores[feature.scores >= feature.threshold]])
                    self._cross = cross[-self.fusion.window :]
                    if len(self._cross):  # before any feature-accepted image: the label gate's own threshold
                        threshold = self._cross_threshold(self._cross)
                        spread = _spread(self._cross, threshold)
                gates.insert(0, GateScores(self.label_detector.name, "label", label_scores, threshold, spread))
                self._label_in_force = threshold
            else:
                assert feature_step is not None
                primary_scores = feature_step.scores.detach()
                history = torch.cat([self._history, primary_scores.double().cpu()])[-_HISTORY_LEN:]
            self._history = history
            self.n_images += int(primary_scores.numel())
            if label_step is not None:
                self._check_health(label_step)

        step = label_step if label_step is not None else feature_step
        assert step is not None
        if self.fused:
            scores = fused_score(combined_margin(gates[0].margin(), gates[1].margin(), self.fusion))
            threshold = float(self.policy.threshold.value) if self.policy.threshold.mode == "fixed" else 0.5
        else:
            scores, threshold = primary_scores, gates[0].threshold
        if label_step is not None:
            label_of = self.anchors.label_of
            predictions = tuple(label_of[int(i)] for i in label_step.predictions.tolist())
        else:
            names = self.feature_labels or tuple(self.anchors.labels)  # a feature detector fit outside the guard
            predictions = tuple(names[int(i)] if int(i) < len(names) else str(int(i)) for i in step.predictions.tolist())
        names = self.corpus.labels
        top = step.top_negatives
        k = self.policy.top_negatives
        top_names = tuple(
            tuple(names[int(i)] for i in row[:k]) for row in (top.tolist() if top is not None else [[]] * len(scores))
        )
        return GateResult(
            scores=scores,
            threshold=threshold,
            accepted=scores >= threshold,
            predictions=predictions,
            top_negatives=top_names,
            step=step,
            gates=tuple(gates),
            feature_step=feature_step,
        )

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
        return self.score_features(self.encode(images))

    def judge_series(
        self, series: str, modality: str, gate: GateResult, views: slice | Sequence[int]
    ) -> SeriesVerdict:
        """The verdict of one series whose views sit at ``views`` in a gated batch.

        The series' id_score is the reduction (``policy.view_reduction``) of its views' id_scores; a fused guard
        also reports each gate's reduced score, and names the gates whose reduced score is below their threshold.
        """
        index = list(range(len(gate)))[views] if isinstance(views, slice) else list(views)
        if not index:
            return SeriesVerdict(series=series, modality=modality, verdict=UNREADABLE, reason="no views")

        def reduce(values: torch.Tensor) -> float:
            values = values[index].double()
            return float(values.min() if self.policy.view_reduction == "min" else values.mean())

        view_scores = gate.scores[index].double()
        score = reduce(gate.scores)
        gate_fields: dict[str, Any] = {}
        refused: tuple[str, ...] = ()
        if len(gate.gates) == 2:
            label, feature = gate.gates
            reduced = [reduce(label.scores), reduce(feature.scores)]
            refused = tuple(refused_by(gate.gates, reduced))
            gate_fields = {"label_score": reduced[0], "label_threshold": label.threshold,
                           "feature_score": reduced[1], "feature_threshold": feature.threshold}
        accepted = score >= gate.threshold
        negatives: list[str] = []
        for i in sorted(index, key=lambda j: float(gate.scores[j])):
            negatives += [n for n in gate.top_negatives[i] if n not in negatives]
        prediction = max(set(gate.predictions[i] for i in index), key=[gate.predictions[i] for i in index].count)
        reason = None
        if not accepted:
            reason = f"id_score {score:.3f} < threshold {gate.threshold:.3f}"
            if gate_fields:
                details = [f"{g.name} score {s:.3f} < {g.threshold:.3f}"
                           for g, s in zip(gate.gates, (gate_fields["label_score"], gate_fields["feature_score"]))
                           if g.name in refused]
                reason += f": refused by {' and '.join(refused)} ({'; '.join(details)})" if refused else \
                    ": the combined score of its views is below the threshold"
        return SeriesVerdict(
            series=series,
            modality=modality,
            verdict=ACCEPT if accepted else REJECT,
            id_score=score,
            threshold=gate.threshold,
            views=len(index),
            view_scores=tuple(float(s) for s in view_scores),
            top_negatives=tuple(negatives[: self.policy.top_negatives]),
            reason=reason,
            prediction=prediction,
            refused_by=refused if gate_fields and not accepted else (),
            **gate_fields,
        )

    def calibrate(
        self,
        reference_images: Sequence[Any] | None = None,
        rate: float | None = None,
        batch_size: int = 64,
        *,
        embeddings: torch.Tensor | None = None,
    ) -> float:
        """Set the label gate's threshold that accepts ``rate`` of the reference ID images, without changing the
        online state.

        The reference images go through the label detector as a stream from the current state, which is restored
        afterwards; the operating point (rate, count, threshold) is kept in :attr:`calibration`.

        Args:
            reference_images: the reference ID images.
            rate: target ID acceptance (the policy's value, else 0.95).
            batch_size: images per step.
            embeddings: (n, D) reference embeddings already computed with this guard's encoder, instead of images.
        """
        rate = rate if rate is not None else (self.policy.threshold.value or 0.95)
        if self.label_detector is None:
            raise ValueError("calibrate() sets the label gate's threshold; a feature gate is calibrated when fit")
        if embeddings is None:
            if not reference_images:
                raise ValueError("calibration needs at least one reference ID image")
            embeddings = torch.cat([self.encoder.encode_images(list(reference_images[i : i + batch_size]))
                                    for i in range(0, len(reference_images), batch_size)])
        if len(embeddings) == 0:
            raise ValueError("calibration needs at least one reference ID image")
        with self._lock:
            saved = self.label_detector.state_dict()
            scores = [self.label_detector.step(embeddings[i : i + batch_size]).scores.double().cpu()
                      for i in range(0, len(embeddings), batch_size)]
            self.label_detector.load_state_dict(saved)
            all_scores = torch.cat(scores)
            threshold = float(torch.quantile(all_scores, 1.0 - rate, interpolation="lower"))
            self.calibration = {"rate": rate, "n_reference": int(all_scores.numel()), "threshold": threshold}
        return threshold

    # ------------------------------------------------------------------ state
    def snapshot(self, n_negatives: int = 20) -> dict[str, Any]:
        """JSON-safe summary of the state for the audit: thresholds in force, queues, leading activated
        negatives (corpus names), the feature gate's operating point, the fusion rule, the health check."""
        with self._lock:
            out: dict[str, Any] = {"detector": self.detector_name, "images_screened": self.n_images}
            if self.label_detector is not None:
                state = self.label_detector.snapshot(n_negatives)
                selected = state.pop("selected", None)
                state.pop("detector", None)
                state.pop("config", None)
                out.update(state)
                if selected is not None:
                    out["selected_negatives"] = [self.corpus.labels[int(i)] for i in selected]
                if self._label_in_force is not None:  # the label gate's threshold on the latest batch
                    out["threshold"] = self._label_in_force
                elif self.policy.threshold.mode == "fixed" and not self.fused:
                    out["threshold"] = float(self.policy.threshold.value)
                elif self.policy.threshold.mode == "calibrated" and self.calibration is not None:
                    out["threshold"] = float(self.calibration["threshold"])
            if self.feature_detector is not None:
                feature = self.feature_detector.snapshot()
                feature.pop("config", None)
                feature.update(source=self.feature_source, labels=list(self.feature_labels))
                out["feature_gate"] = feature
                if self.label_detector is None and self.feature_detector.threshold is not None:
                    out["threshold"] = self._feature_threshold()
            if self.fused:
                out["fusion"] = {**asdict(self.fusion), "admission": self.admission}
                warmup = self.label_warmup()
                if warmup is not None:
                    out["fusion"]["label_warmup"] = warmup
            if self.calibration is not None:
                out["calibration"] = dict(self.calibration)
            out["health"] = self.health()
            return out

    def state_dict(self) -> dict[str, Any]:
        """The detectors' state (the primary one under ``"detector"``), the score history and the calibration."""
        with self._lock:
            state = {
                "name": self.detector_name,
                "detector": self.detector.state_dict(),
                "history": self._history.clone(),
                "calibration": dict(self.calibration) if self.calibration else None,
                "n_images": self.n_images,
                "policy_threshold": str(self.policy.threshold),
                "admissions": list(self._admissions),
                "cross": self._cross.clone(),
                "label_threshold": self._label_in_force,
            }
            if self.fused:
                assert self.feature_detector is not None
                state["feature_detector"] = self.feature_detector.state_dict()
            if self.label_detector is not None:  # the ID columns as scored (text anchors and image prototypes)
                state["id_embeddings"] = self.label_detector.bank.id_text.detach().cpu().clone()
            return state

    def _adopt_id_embeddings(self, saved: Any) -> None:
        """Continue with the saved ID columns when they are this guard's up to the encoder's last-bit noise.

        Image prototypes are means of reference embeddings, which differ by about 6e-8 with the batch composition
        and the thread count; the label detector's state is tied to its exact label bank. Within
        :data:`ID_EMBEDDING_TOLERANCE` the saved columns replace the rebuilt ones, so the stream continues exactly
        as it would have in the process that saved it; further apart, the bank is left alone and the detector
        refuses the state (other labels, references or encoder).
        """
        if saved is None or self.label_detector is None:
            return
        bank = self.label_detector.bank
        saved = torch.as_tensor(saved)
        if saved.shape != bank.id_text.shape:
            return
        saved = saved.to(device=bank.device, dtype=bank.dtype)
        if torch.equal(saved, bank.id_text) or float((saved - bank.id_text).abs().max()) > ID_EMBEDDING_TOLERANCE:
            return
        bank.weights[: bank.n_id] = saved
        bank._fingerprint = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a guard built the same way (same detectors, references, encoder)."""
        with self._lock:
            name = state.get("name", state["detector"].get("detector"))
            if name != self.detector_name:
                raise ValueError(f"state is for detector {name!r}, not {self.detector_name!r}")
            self._adopt_id_embeddings(state.get("id_embeddings"))
            self.detector.load_state_dict(state["detector"])
            if self.fused:
                assert self.feature_detector is not None
                self.feature_detector.load_state_dict(state["feature_detector"])
            self._history = state["history"].to(torch.float64).clone()
            self._cross = state.get("cross", torch.empty(0)).to(torch.float64).clone()
            self._label_in_force = state.get("label_threshold")
            self.calibration = dict(state["calibration"]) if state.get("calibration") else None
            self.n_images = int(state["n_images"])
            self._admissions = deque((int(n) for n in state.get("admissions", ())), maxlen=_HEALTH_BATCHES)
            self._warned = len(self._admissions) == _HEALTH_BATCHES and sum(self._admissions) == 0
