# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The small API every detector shares, and the label bank they score against."""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = ["LabelBank", "DetectorStep", "Detector", "MIN_GEMM_ROWS", "UNIT_NORM_TOLERANCE"]

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
    """A streaming OOD detector over image embeddings: ``reset`` then ``step`` batch after batch."""

    #: short registry name ("tanl", "neglabel", ...)
    name: ClassVar[str] = ""
    #: the paper the detector implements
    paper: ClassVar[str] = ""

    def __init__(self, id_text: torch.Tensor, corpus: torch.Tensor, logit_scale: float) -> None:
        self.bank = LabelBank(id_text, corpus, logit_scale)

    def reset(self, **kwargs: Any) -> None:  # noqa: B027 - stateless detectors have nothing to reset
        """Forget everything learnt from the stream."""

    @abc.abstractmethod
    def step(self, image_features: torch.Tensor) -> DetectorStep:
        """Score one batch of (B, D) unit-norm image embeddings (and learn from it, for online detectors)."""

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.name, "bank": self.bank.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_header(state)

    def _check_state_header(self, state: dict[str, Any]) -> None:
        if state.get("detector") != self.name:
            raise ValueError(f"state is for detector {state.get('detector')!r}, not {self.name!r}")
        if state.get("bank") != self.bank.fingerprint():
            raise ValueError("state was saved with other label embeddings (encoder, ID labels or corpus differ)")

    def top_negatives(self, logits: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor | None:
        """Among ``candidates`` (corpus indices), the k with the highest logit for each image."""
        k = min(k, int(candidates.numel()))
        if k == 0:
            return None
        negative_logits = logits[:, self.bank.n_id + candidates]
        return candidates[torch.topk(negative_logits, k, dim=1).indices]
