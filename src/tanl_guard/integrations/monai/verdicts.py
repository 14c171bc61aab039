# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Per-item gate verdicts of one batch, and how they travel in MetaTensor metadata.

Metadata keys (one value per batch item, so MONAI's ``decollate_batch`` splits them into per-item scalars):

- ``ood_id_score`` (float): the item's id_score (for volumes, the reduction of its views' scores).
- ``ood_accepted`` (bool): ``ood_id_score >= ood_threshold``.
- ``ood_threshold`` (float): the threshold in force for the batch.
- ``ood_classified`` (bool): the output row is a real classifier prediction (False: NaN, no prediction).
- ``ood_flagged`` (bool): rejected but classified anyway (``on_reject="pass"``).
- ``ood_prediction`` (str): the most likely ID label (zero-shot, from the anchors).
- ``ood_top_negatives`` (str): the activated negative labels that fired most, joined by ``"|"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ON_REJECT_MODES",
    "OOD_ID_SCORE",
    "OOD_ACCEPTED",
    "OOD_THRESHOLD",
    "OOD_CLASSIFIED",
    "OOD_FLAGGED",
    "OOD_PREDICTION",
    "OOD_TOP_NEGATIVES",
    "OOD_META_KEYS",
    "BatchVerdicts",
    "items_from_meta",
]

ON_REJECT_MODES = ("skip", "nan", "pass")

OOD_ID_SCORE = "ood_id_score"
OOD_ACCEPTED = "ood_accepted"
OOD_THRESHOLD = "ood_threshold"
OOD_CLASSIFIED = "ood_classified"
OOD_FLAGGED = "ood_flagged"
OOD_PREDICTION = "ood_prediction"
OOD_TOP_NEGATIVES = "ood_top_negatives"
OOD_META_KEYS = (
    OOD_ID_SCORE,
    OOD_ACCEPTED,
    OOD_THRESHOLD,
    OOD_CLASSIFIED,
    OOD_FLAGGED,
    OOD_PREDICTION,
    OOD_TOP_NEGATIVES,
)
_NEGATIVES_SEP = "|"


@dataclass(frozen=True)
class BatchVerdicts:
    """The gate's verdicts on one batch of classifier inputs, one entry per item.

    Attributes:
        scores: (B,) float32 id_scores on the CPU, higher = more in-distribution.
        threshold: the threshold in force for this batch.
        accepted: (B,) bool, ``scores >= threshold``.
        classified: (B,) bool, whether the item's output row holds a classifier prediction.
        flagged: (B,) bool, rejected but classified anyway (``on_reject="pass"``).
        predictions: per item, the most likely ID label (zero-shot, from the anchors).
        top_negatives: per item, the activated negative labels that fired most on its views.
        view_scores: (B, K) float32 id_scores of each item's views (K = 1 for 2D inputs).
        on_reject: the policy applied: ``skip``, ``nan`` or ``pass``.
        gate: the guard's :class:`~tanl_guard.guard.GateResult` over all B * K views.
    """

    scores: torch.Tensor
    threshold: float
    accepted: torch.Tensor
    classified: torch.Tensor
    flagged: torch.Tensor
    predictions: tuple[str, ...]
    top_negatives: tuple[tuple[str, ...], ...]
    view_scores: torch.Tensor
    on_reject: str
    gate: Any = None

    def __len__(self) -> int:
        return int(self.scores.numel())

    @property
    def n_accepted(self) -> int:
        """How many items were accepted."""
        return int(self.accepted.sum())

    @property
    def n_rejected(self) -> int:
        """How many items were rejected."""
        return len(self) - self.n_accepted

    def to_meta(self) -> dict[str, Any]:
        """The batched metadata entries (see the module docstring), one value per item."""
        n = len(self)
        return {
            OOD_ID_SCORE: self.scores.detach().to("cpu", torch.float32).clone(),
            OOD_ACCEPTED: self.accepted.detach().cpu().clone(),
            OOD_THRESHOLD: torch.full((n,), float(self.threshold), dtype=torch.float32),
            OOD_CLASSIFIED: self.classified.detach().cpu().clone(),
            OOD_FLAGGED: self.flagged.detach().cpu().clone(),
            OOD_PREDICTION: list(self.predictions),
            OOD_TOP_NEGATIVES: [_NEGATIVES_SEP.join(names) for names in self.top_negatives],
        }

    def items(self) -> list[dict[str, Any]]:
        """One plain dict per item: ``id_score``, ``accepted``, ``threshold``, ``classified``, ``flagged``,
        ``prediction``, ``top_negatives`` (a list)."""
        return [
            {
                "id_score": float(self.scores[i]),
                "accepted": bool(self.accepted[i]),
                "threshold": float(self.threshold),
                "classified": bool(self.classified[i]),
                "flagged": bool(self.flagged[i]),
                "prediction": self.predictions[i],
                "top_negatives": list(self.top_negatives[i]),
            }
            for i in range(len(self))
        ]


def _value(v: Any, i: int | None) -> Any:
    if i is not None:
        v = v[i]
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    return v


def items_from_meta(meta: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Read per-item verdicts back from metadata: batched (one meta dict, values per item) or decollated (a list
    of per-item meta dicts). Returns ``None`` when the metadata carries no verdicts.

    Args:
        meta: a batched MetaTensor's ``meta``, or the ``meta`` of each decollated item.

    Returns:
        one dict per item with the keys of :meth:`BatchVerdicts.items`, or ``None``.
    """
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        if OOD_ID_SCORE not in meta:
            return None
        scores = meta[OOD_ID_SCORE]
        n = int(scores.numel()) if isinstance(scores, torch.Tensor) else len(scores)
        per_item: list[Mapping[str, Any]] = [
            {k: _value(meta[k], i) for k in OOD_META_KEYS if k in meta} for i in range(n)
        ]
    else:
        per_item = [dict(m or {}) for m in meta]
        if not per_item or any(OOD_ID_SCORE not in m for m in per_item):
            return None
    out = []
    for m in per_item:
        negatives = _value(m.get(OOD_TOP_NEGATIVES, ""), None) or ""
        out.append(
            {
                "id_score": float(_value(m[OOD_ID_SCORE], None)),
                "accepted": bool(_value(m.get(OOD_ACCEPTED, True), None)),
                "threshold": float(_value(m.get(OOD_THRESHOLD, float("nan")), None)),
                "classified": bool(_value(m.get(OOD_CLASSIFIED, True), None)),
                "flagged": bool(_value(m.get(OOD_FLAGGED, False), None)),
                "prediction": _value(m.get(OOD_PREDICTION), None),
                "top_negatives": [n for n in str(negatives).split(_NEGATIVES_SEP) if n],
            }
        )
    return out
