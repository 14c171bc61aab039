# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The error raised when an encoder spec cannot be loaded on this machine."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["EncoderNotAvailable", "ALTERNATIVES"]

#: What a user can pass instead when an encoder's weights are missing (shown in every EncoderNotAvailable message).
ALTERNATIVES: tuple[str, ...] = (
    "biomedclip:local-dir:PATH  (a local copy of BiomedCLIP: open_clip_config.json, open_clip_pytorch_model.bin "
    "and the PubMedBERT config/tokenizer files)",
    "open_clip:ARCH:PRETRAINED  (any open_clip architecture with a local checkpoint file, local-dir:PATH, "
    "or a tag/hf-hub: id already in the cache)",
    "surrogate  (the offline ConSE demo encoder; for demos and integration tests, not a medical model)",
)


class EncoderNotAvailable(RuntimeError):
    """An encoder spec names weights or files that are not on this machine.

    tanl-guard never downloads weights at run time and never falls back to another model: this error names the
    spec, where it looked, and the alternatives.

    Args:
        spec: the encoder spec that failed, e.g. ``"biomedclip"``.
        reason: what is missing, one sentence.
        searched: the places looked in (cache folders, local directories, files).
        alternatives: specs to try instead; defaults to :data:`ALTERNATIVES`.
    """

    def __init__(
        self,
        spec: str,
        reason: str,
        searched: Sequence[str] = (),
        alternatives: Sequence[str] = ALTERNATIVES,
    ) -> None:
        self.spec = spec
        self.reason = reason
        self.searched = tuple(str(s) for s in searched)
        self.alternatives = tuple(alternatives)
        lines = [f"encoder {spec!r} is not available: {reason}"]
        if self.searched:
            lines.append("Looked in:")
            lines.extend(f"  - {s}" for s in self.searched)
        lines.append("tanl-guard does not download weights at run time. Alternatives:")
        lines.extend(f"  - {a}" for a in self.alternatives)
        super().__init__("\n".join(lines))
