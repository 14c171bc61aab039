# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Vision-language encoders behind one protocol, a registry of spec strings, and ID anchors.

>>> from tanl_guard.encoders import resolve, build_id_anchors
>>> encoder = resolve("surrogate")                                # or "biomedclip", "open_clip:ViT-B-32:/path.pt"
>>> anchors = build_id_anchors(encoder, ["brain MRI"], reference_images={"brain MRI": images})
>>> encoded = encoder.encode_images(images, return_features=True)  # embeddings + trunk features, one pass

Importing this package loads neither open_clip, transformers nor timm: each encoder imports them when built.
"""

from __future__ import annotations

from tanl_guard.encoders._images import ImageRangeWarning
from tanl_guard.encoders.anchors import IDAnchors, build_id_anchors
from tanl_guard.encoders.base import BaseEncoder, ImageEncoding, ImagePreprocess, VisionLanguageEncoder
from tanl_guard.encoders.errors import EncoderNotAvailable
from tanl_guard.encoders.open_clip import OpenCLIPEncoder
from tanl_guard.encoders.registry import DEFAULT_ENCODER, list_encoders, register_encoder, resolve
from tanl_guard.encoders.surrogate import SurrogateEncoder
from tanl_guard.encoders.templates import BARE_TEMPLATES, DEFAULT_TEMPLATES

__all__ = [
    "resolve",
    "list_encoders",
    "register_encoder",
    "DEFAULT_ENCODER",
    "VisionLanguageEncoder",
    "BaseEncoder",
    "ImagePreprocess",
    "ImageEncoding",
    "EncoderNotAvailable",
    "ImageRangeWarning",
    "OpenCLIPEncoder",
    "SurrogateEncoder",
    "IDAnchors",
    "build_id_anchors",
    "DEFAULT_TEMPLATES",
    "BARE_TEMPLATES",
]
