# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The small API every detector shares, and the label bank they score against."""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = ["LabelBank", "DetectorStep", "Detector", "LabelDetector", "MIN_GEMM_ROWS", "UNIT_NORM_TOLERANCE"]

# Matrix products over fewer rows take other BLAS kernels whose rounding differs (seen with MKL below 16 rows).
# Padding every product to at least this many rows makes a sample's logits independent of its batch, which is
# what lets a detector rebuild its caches from saved embeddings and continue bit-identically.
MIN_GEMM_ROWS = 16

# Encoders L2-normalise in float32 (|norm - 1| ~ 1e-7) or in half precision (~1e-3); anything farther from 1 is not
# an embedding (an all-zero row, raw features, a scaled or corrupted vector).
UNIT_NORM_TOLERANCE = 1e-2


def _check_matrix(name: str, x: Any, dim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (rows, dim), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]}, expected {dim} (the label embeddings' dimension)")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] > 0 and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class LabelBank:
    """ID label embeddings and corpus label embeddings as one (C + N, D) matrix, with the logit scale.

    Args:
        id_text: (C, D) unit-norm embeddings of the ID labels (text prompts and/or image prototypes).
        corpus: (N, D) unit-norm embeddings of the candidate negative labels.
        logit_scale: kappa, the encoder's logit scale (100 for CLIP).

    The bank's dtype and device are those of ``id_text``; every computation follows them.
    """

    def __init__(self, id_text: torch.Tensor, corpus: torch.Tensor, logit_scale: float) -> None:
        _check_matrix("id_text", id_text)
        _check_matrix("corpus", corpus, id_text.shape[1])
        if id_text.shape[0] == 0:
            raise ValueError("id_text must hold at least one ID label")
        if not (float(logit_scale) > 0.0 and torch.isfinite(torch.tensor(float(logit_scale)))):
            raise ValueError(f"logit_scale must be a positive finite number, got {logit_scale}")
        self.n_id = int(id_text.shape[0])
        self.logit_scale = float(logit_scale)
        self.weights = torch.cat([id_text, corpus.to(id_text)]).contiguous()
        self._fingerprint: str | None = None

    @classmethod
    def from_weights(cls, weights: torch.Tensor, n_id: int, logit_scale: float) -> LabelBank:
        """A bank over an existing (C + N, D) matrix, without copying it (AdaNeg's per-step proxies).

        Args:
            weights: (C + N, D) label embeddings, ID labels first.
            n_id: C.
            logit_scale: kappa.
        """
        bank = cls.__new__(cls)
        bank.n_id = int(n_id)
        bank.logit_scale = float(logit_scale)
        bank.weights = _check_matrix("weights", weights)
        bank._fingerprint = None
        return bank

    @property
    def n_corpus(self) -> int:
        return int(self.weights.shape[0] - self.n_id)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    @property
    def device(self) -> torch.device:
        return self.weights.device

    @property
    def id_text(self) -> torch.Tensor:
        return self.weights[: self.n_id]

    @property
    def corpus(self) -> torch.Tensor:
        return self.weights[self.n_id :]

    def fingerprint(self) -> str:
        """A hash of the embeddings and the logit scale, so saved state is never loaded against another bank."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(f"{self.n_id}:{tuple(self.weights.shape)}:{self.logit_scale!r}:{self.dtype}".encode())
            digest.update(self.weights.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def prepare(self, features: Any, name: str = "image_features") -> torch.Tensor:
        """Validate a (B, D) batch and move it to the bank's dtype and device.

        Every row must be finite, representable in the bank's dtype and unit-norm within
        ``UNIT_NORM_TOLERANCE`` (encoders L2-normalise their outputs; float16/bfloat16 outputs pass too). An
        all-zero row, raw unnormalised features or overflowing values raise ValueError, so nothing reaches a
        detector's state.
        """
        features = _check_matrix(name, features, self.dim)
        if features.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")
        converted = features.to(device=self.device, dtype=self.dtype)
        if converted is not features and not bool(torch.isfinite(converted).all()):
            raise ValueError(f"{name} has values outside the range of {self.dtype} (the label embeddings' dtype)")
        # float32 or wider: overflowing squares become inf and fail the check as they should
        norms = torch.linalg.vector_norm(converted, dim=1, dtype=torch.promote_types(converted.dtype, torch.float32))
        off = ~((norms - 1.0).abs() <= UNIT_NORM_TOLERANCE)
        if bool(off.any()):
            row = int(torch.nonzero(off)[0])
            raise ValueError(
                f"{name} must be unit-norm embeddings (L2 norm 1 within {UNIT_NORM_TOLERANCE}); row {row} has norm "
                f"{float(norms[row]):.6g} ({int(off.sum())} of {len(norms)} rows off)"
            )
        return converted

    def logits(self, features: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(kappa * V) @ W.T`` over all C + N labels (or the given columns), batch-independent per row."""
        weights = self.weights if columns is None else self.weights[columns]
        return _padded_product(self.logit_scale * features, weights)

    def _logits_into(self, features: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` over all labels, written into ``out`` (at least ``max(B, MIN_GEMM_ROWS)`` rows)."""
        return _padded_product(self.logit_scale * features, self.weights, out)


def _padded_product(scaled: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``scaled @ weights.T`` over at least ``MIN_GEMM_ROWS`` rows (zero rows appended), cut back to the input's."""
    rows = scaled.shape[0]
    if rows < MIN_GEMM_ROWS:
        scaled = torch.cat([scaled, scaled.new_zeros(MIN_GEMM_ROWS - rows, scaled.shape[1])])
    if out is None:
        return (scaled @ weights.T)[:rows]
    torch.mm(scaled, weights.T, out=out[: scaled.shape[0]])
    return out[:rows]


@dataclass(frozen=True, kw_only=True)
class DetectorStep:
    """What every detector returns for a batch.

    Attributes:
        scores: (B,) id_score, higher = more in-distribution.
        predictions: (B,) index of the most likely ID label.
        threshold: the detector's current decision threshold on ``scores``, if it has one of its own.
        top_negatives: (B, k) corpus indices of the negative labels that fired most on each image, or None.
    """

    scores: torch.Tensor
    predictions: torch.Tensor
    threshold: float | None = None
    top_negatives: torch.Tensor | None = None


class Detector(abc.ABC):
    """A streaming OOD detector: ``reset``, then ``step`` batch after batch; ``snapshot`` for the audit.

    Every detector has a config class (:attr:`config_class`), is built the same way (:meth:`from_config`, or
    :func:`~tanl_guard.detectors.make_detector` by registry name), and reads one kind of input (:attr:`input`):
    ``"embeddings"`` (the joint image-text space; label detectors such as TANL) or ``"features"`` (image features;
    feature detectors such as kNN, which must be :meth:`fit` on reference ID images first).
    """

    #: short registry name ("tanl", "neglabel", ...)
    name: ClassVar[str] = ""
    #: the paper the detector implements
    paper: ClassVar[str] = ""
    #: the frozen dataclass that configures it
    config_class: ClassVar[type]
    #: what :meth:`step` reads: ``"embeddings"`` or ``"features"``
    input: ClassVar[str] = "embeddings"
    #: whether :meth:`fit` must run on reference ID images before :meth:`step`
    needs_fit: ClassVar[bool] = False
    #: whether :meth:`step` takes ``admit=(confident_id, confident_ood)`` masks for its queues (TANL)
    accepts_admission: ClassVar[bool] = False

    config: Any

    @classmethod
    @abc.abstractmethod
    def from_config(
        cls,
        config: Any = None,
        *,
        id_embeddings: torch.Tensor | None = None,
        corpus_embeddings: torch.Tensor | None = None,
        logit_scale: float | None = None,
        corpus_kinds: torch.Tensor | None = None,
    ) -> Detector:
        """The one way every detector is built (what :func:`~tanl_guard.detectors.make_detector` calls).

        Args:
            config: an instance of :attr:`config_class` (its defaults when None).
            id_embeddings: (C, D) unit-norm ID label embeddings (label detectors).
            corpus_embeddings: (N, D) unit-norm corpus label embeddings (label detectors).
            logit_scale: the encoder's logit scale (label detectors).
            corpus_kinds: (N,) integer kind per corpus label (detectors that select per kind).
        """

    def reset(self, **kwargs: Any) -> None:  # noqa: B027 - stateless detectors have nothing to reset
        """Forget everything learnt from the stream.

        Args:
            **kwargs: cold-start inputs a detector may use (TANL: ``noise_features``, ``generator``); others ignore
                them, so a caller can reset any detector the same way.
        """

    def fit(self, features: torch.Tensor, labels: Any = None, sources: Any = None) -> dict[str, Any] | None:
        """Fit on reference ID images (feature detectors); label detectors have nothing to fit.

        Args:
            features: (n, F) reference features.
            labels: (n,) ID label index per reference (None: one label).
            sources: per reference, the source it came from (volume, series, study), for calibration.
        """
        raise TypeError(f"detector {self.name!r} is not fit on reference images")

    @abc.abstractmethod
    def step(self, image_features: torch.Tensor) -> DetectorStep:
        """Score one batch of (B, D) image embeddings or features (and learn from it, for online detectors)."""

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_header(state)

    def _check_state_header(self, state: dict[str, Any]) -> None:
        if state.get("detector") != self.name:
            raise ValueError(f"state is for detector {state.get('detector')!r}, not {self.name!r}")

    def snapshot(self, n_selected: int = 20) -> dict[str, Any]:
        """JSON-safe summary of the state for the audit (threshold, queue sizes, selected negative indices ...).

        Args:
            n_selected: how many selected corpus indices to list, strongest first (detectors that select).
        """
        return self.describe_state(self.state_dict(), n_selected)

    @classmethod
    def describe_state(cls, state: dict[str, Any], n_selected: int = 20) -> dict[str, Any]:
        """JSON-safe summary of a saved :meth:`state_dict`, without building the detector (``tanl-guard state``).

        Args:
            state: the saved state.
            n_selected: how many selected corpus indices to list.
        """
        out: dict[str, Any] = {"detector": state.get("detector")}
        if isinstance(state.get("config"), dict):
            out["config"] = state["config"]
        return out


class LabelDetector(Detector):
    """A detector that scores image embeddings against ID label and corpus label embeddings (a :class:`LabelBank`).

    Args:
        id_text: (C, D) unit-norm ID label embeddings.
        corpus: (N, D) unit-norm corpus label embeddings.
        logit_scale: kappa, the encoder's logit scale.

    Subclasses take ``(id_text, corpus, logit_scale, config=None, *, kinds=None)``: one constructor shape.
    """

    def __init__(self, id_text: torch.Tensor, corpus: torch.Tensor, logit_scale: float) -> None:
        self.bank = LabelBank(id_text, corpus, logit_scale)

    @classmethod
    def from_config(
        cls,
        config: Any = None,
        *,
        id_embeddings: torch.Tensor | None = None,
        corpus_embeddings: torch.Tensor | None = None,
        logit_scale: float | None = None,
        corpus_kinds: torch.Tensor | None = None,
    ) -> LabelDetector:
        if id_embeddings is None or corpus_embeddings is None or logit_scale is None:
            raise ValueError(f"detector {cls.name!r} needs id_embeddings, corpus_embeddings and logit_scale")
        return cls(id_embeddings, corpus_embeddings, logit_scale, config, kinds=corpus_kinds)  # type: ignore[call-arg]

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.name, "bank": self.bank.fingerprint()}

    def _check_state_header(self, state: dict[str, Any]) -> None:
        super()._check_state_header(state)
        if state.get("bank") != self.bank.fingerprint():
            raise ValueError("state was saved with other label embeddings (encoder, ID labels or corpus differ)")

    def top_negatives(self, logits: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor | None:
        """Among ``candidates`` (corpus indices), the k with the highest logit for each image."""
        k = min(k, int(candidates.numel()))
        if k == 0:
            return None
        negative_logits = logits[:, self.bank.n_id + candidates]
        return candidates[torch.topk(negative_logits, k, dim=1).indices]
