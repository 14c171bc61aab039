# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""How scores become verdicts: the threshold policy and the series/study rules."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ThresholdPolicy", "GuardPolicy", "STUDY_POLICIES", "VIEW_REDUCTIONS"]

STUDY_POLICIES = ("any", "all", "majority")
VIEW_REDUCTIONS = ("mean", "min")


@dataclass(frozen=True)
class ThresholdPolicy:
    """Which threshold decides accept/reject on the id_score.

    Attributes:
        mode: ``"adaptive"`` (the detector's own threshold: TANL's Otsu split of its score history; for detectors
            without one, the same Otsu rule over the guard's history of their scores), ``"fixed"``, or
            ``"calibrated"`` (the score that accepts ``value`` of the reference ID images).
        value: the fixed threshold, or the target ID acceptance rate for ``calibrated``.
    """

    mode: str = "adaptive"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("adaptive", "fixed", "calibrated"):
            raise ValueError(f"threshold mode must be adaptive, fixed or calibrated, got {self.mode!r}")
        if self.mode == "fixed" and not (self.value is not None and 0.0 <= self.value <= 1.0):
            raise ValueError(f"a fixed threshold must be in [0, 1], got {self.value}")
        if self.mode == "calibrated" and not (self.value is not None and 0.0 < self.value < 1.0):
            raise ValueError(f"a calibrated acceptance rate must be in (0, 1), got {self.value}")

    @classmethod
    def parse(cls, text: str) -> ThresholdPolicy:
        """``"adaptive"``, a float such as ``"0.42"``, or ``"calibrated:0.95"``."""
        text = text.strip().lower()
        if text == "adaptive":
            return cls("adaptive")
        if text.startswith("calibrated"):
            _, _, rate = text.partition(":")
            try:
                return cls("calibrated", float(rate) if rate else 0.95)
            except ValueError:
                raise ValueError(f"bad calibrated threshold {text!r}: use calibrated:RATE, e.g. calibrated:0.95") from None
        try:
            return cls("fixed", float(text))
        except ValueError:
            raise ValueError(f"threshold must be adaptive, a number in [0, 1] or calibrated:RATE, got {text!r}") from None

    def __str__(self) -> str:
        if self.mode == "adaptive":
            return "adaptive"
        return f"calibrated:{self.value}" if self.mode == "calibrated" else f"{self.value}"


@dataclass(frozen=True)
class GuardPolicy:
    """Verdict rules of a :class:`~tanl_guard.guard.Guard`.

    Attributes:
        threshold: see :class:`ThresholdPolicy`.
        study_policy: a study is rejected if ``any`` (default), ``all`` or a strict ``majority`` of its readable
            series are rejected.
        view_reduction: a series' id_score is the ``mean`` (default) or the ``min`` of its views' scores.
        top_negatives: how many activated negative labels to report per series and study.
    """

    threshold: ThresholdPolicy = ThresholdPolicy()
    study_policy: str = "any"
    view_reduction: str = "mean"
    top_negatives: int = 5

    def __post_init__(self) -> None:
        if self.study_policy not in STUDY_POLICIES:
            raise ValueError(f"study_policy must be one of {STUDY_POLICIES}, got {self.study_policy!r}")
        if self.view_reduction not in VIEW_REDUCTIONS:
            raise ValueError(f"view_reduction must be one of {VIEW_REDUCTIONS}, got {self.view_reduction!r}")
        if self.top_negatives < 0:
            raise ValueError(f"top_negatives must be >= 0, got {self.top_negatives}")
