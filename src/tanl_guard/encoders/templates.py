# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Prompt templates for ID text anchors, kept as data (as open_clip's ``zero_shot_metadata``)."""

from __future__ import annotations

__all__ = ["DEFAULT_TEMPLATES", "BARE_TEMPLATES", "BIOMEDCLIP_TEMPLATES"]

#: The default ensemble: general photo prompts (CLIP and the surrogate were trained on web captions) mixed with
#: medical wording (BiomedCLIP was trained on PubMed figure captions). Each ID label gets the mean of all six,
#: re-normalised, which is steadier than any single wording.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}.",
    "a photo of a {}.",
    "this is a photo of {}.",
    "an image of {}.",
    "a medical image of {}.",
    "a radiology image showing {}.",
)

#: The label alone, as NegLabel and TANL embed their corpora: use it when ID and corpus labels must be comparable.
BARE_TEMPLATES: tuple[str, ...] = ("{}",)

#: The single template of BiomedCLIP's own zero-shot examples.
BIOMEDCLIP_TEMPLATES: tuple[str, ...] = ("this is a photo of {}",)
