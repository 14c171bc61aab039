# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""MONAI integration: ``GuardedInferer`` (the gate, once per batch), ``OODAuditHandler`` (the audit trail),
``ToGuardViewd`` (stateless 2D views) and ``GuardedClassifier`` (for plain PyTorch).

Needs ``monai`` (and ``pytorch-ignite`` for the handler): ``pip install 'tanl-guard[monai]'``.
"""

from __future__ import annotations

from .gating import gate_batch, run_gated
from .handler import HashedFilenames, OODAuditHandler, default_batch_transform, default_output_transform
from .inferer import GuardedInferer
from .module import GuardedClassifier
from .transforms import ToGuardViewd
from .verdicts import (
    OOD_ACCEPTED,
    OOD_CLASSIFIED,
    OOD_FLAGGED,
    OOD_ID_SCORE,
    OOD_META_KEYS,
    OOD_PREDICTION,
    OOD_THRESHOLD,
    OOD_TOP_NEGATIVES,
    BatchVerdicts,
    items_from_meta,
)
from .views import guard_views, minmax_unit, parse_view

__all__ = [
    "GuardedInferer",
    "OODAuditHandler",
    "HashedFilenames",
    "ToGuardViewd",
    "GuardedClassifier",
    "BatchVerdicts",
    "items_from_meta",
    "gate_batch",
    "run_gated",
    "guard_views",
    "minmax_unit",
    "parse_view",
    "default_batch_transform",
    "default_output_transform",
    "OOD_ID_SCORE",
    "OOD_ACCEPTED",
    "OOD_THRESHOLD",
    "OOD_CLASSIFIED",
    "OOD_FLAGGED",
    "OOD_PREDICTION",
    "OOD_TOP_NEGATIVES",
    "OOD_META_KEYS",
]
