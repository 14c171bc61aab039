# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""BiomedCLIP, the default encoder: from the local Hugging Face cache or a local copy, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tanl_guard.encoders.errors import EncoderNotAvailable
from tanl_guard.encoders.hf_cache import cached_snapshot, hf_repo_cache_dir

__all__ = ["BIOMEDCLIP_HF_ID", "BIOMEDCLIP_WEIGHT_FILES", "load_biomedclip"]

#: The Hugging Face repo of BiomedCLIP (MIT; ViT-B/16 image tower, PubMedBERT text tower, context length 256).
BIOMEDCLIP_HF_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"

#: Checkpoint names a BiomedCLIP folder may hold (open_clip's names).
BIOMEDCLIP_WEIGHT_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")


def load_biomedclip(
    spec_body: str = "",
    *,
    spec: str | None = None,
    device: str | torch.device = "cpu",
    text_dir: str | None = None,
    cache_dir: str | None = None,
    **kwargs: Any,
) -> Any:
    """Load BiomedCLIP as an :class:`~tanl_guard.encoders.open_clip.OpenCLIPEncoder`.

    ``spec_body`` is empty (``"biomedclip"``: the cached ``hf-hub:microsoft/BiomedCLIP-...`` snapshot),
    ``local-dir:PATH`` (a copy: ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` and the PubMedBERT
    ``config.json`` + tokenizer files) or ``hf-hub:ORG/REPO`` (a cached fine-tune laid out the same way). The
    PubMedBERT config/tokenizer are read from ``text_dir``, else the folder, else the cache of the
    ``hf_model_name`` the config names.

    Args:
        spec_body: the spec without its ``biomedclip`` prefix and colon.
        spec: the full spec (the encoder id).
        device: where to compute.
        text_dir: a folder with the PubMedBERT ``config.json`` and tokenizer files.
        cache_dir: the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME/hub`` when None).
        **kwargs: passed to :func:`~tanl_guard.encoders.open_clip.load_open_clip_dir` (precision, batch sizes).

    Raises:
        EncoderNotAvailable: the weights are not in the cache or the folder; the message names both places and
            the alternatives. There is no fallback to another model.
    """
    spec = spec or ("biomedclip" if not spec_body else f"biomedclip:{spec_body}")
    if spec_body.startswith("local-dir:"):
        folder = Path(spec_body[len("local-dir:") :]).expanduser()
        problems = []
        if not folder.is_dir():
            problems.append(f"folder {folder} does not exist")
        else:
            if not (folder / "open_clip_config.json").is_file():
                problems.append(f"no open_clip_config.json in {folder}")
            if not any((folder / name).is_file() for name in BIOMEDCLIP_WEIGHT_FILES):
                problems.append(f"no {' or '.join(BIOMEDCLIP_WEIGHT_FILES)} in {folder}")
        if problems:
            raise EncoderNotAvailable(spec, "; ".join(problems), searched=[str(folder)])
    elif spec_body == "" or spec_body.startswith("hf-hub:"):
        repo_id = spec_body[len("hf-hub:") :] if spec_body else BIOMEDCLIP_HF_ID
        found = None
        for weights in BIOMEDCLIP_WEIGHT_FILES:
            found = cached_snapshot(repo_id, required=("open_clip_config.json", weights), cache_dir=cache_dir)
            if found is not None:
                break
        if found is None:
            where = hf_repo_cache_dir(repo_id, cache_dir)
            raise EncoderNotAvailable(
                spec,
                f"hf-hub:{repo_id} (open_clip_config.json and open_clip_pytorch_model.bin) is not in the local "
                "Hugging Face cache. Download it once on a connected machine (huggingface-cli download "
                f"{repo_id}, plus its text tower's config) and copy the cache, or use biomedclip:local-dir:PATH",
                searched=[str(where), f"HF_HUB_CACHE={os.environ.get('HF_HUB_CACHE', '')!s}",
                          f"HF_HOME={os.environ.get('HF_HOME', '')!s}"],
            )
        folder = found
    else:
        raise ValueError(f"{spec!r}: expected 'biomedclip', 'biomedclip:local-dir:PATH' or 'biomedclip:hf-hub:ORG/REPO'")

    from tanl_guard.encoders.open_clip import load_open_clip_dir

    return load_open_clip_dir(folder, spec=spec, device=device, text_dir=text_dir, cache_dir=cache_dir, **kwargs)
