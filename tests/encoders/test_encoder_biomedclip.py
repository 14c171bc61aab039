# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""BiomedCLIP loading offline: a local copy with an hf text tower, the HF cache layout, and the missing-cache error."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import torch
from encoder_test_configs import LOGIT_SCALE

from tanl_guard.encoders import EncoderNotAvailable, OpenCLIPEncoder, resolve
from tanl_guard.encoders.biomedclip import BIOMEDCLIP_HF_ID


def test_local_dir_with_hf_text_tower(biomed_dir):
    enc = resolve(f"biomedclip:local-dir:{biomed_dir}")
    assert isinstance(enc, OpenCLIPEncoder)
    assert enc.id == f"biomedclip:local-dir:{biomed_dir}"
    assert enc.embed_dim == 32
    assert enc.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-5)
    assert enc.weights_sha256 == hashlib.sha256((biomed_dir / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    # the PubMedBERT-style tokenizer with BiomedCLIP's context length, read from the folder
    tokens = enc.tokenizer(["a chest x-ray"])
    assert tokens.shape == (1, 256)
    txt = enc.encode_texts(["a chest X-ray", "a brain MRI", "an unrelated sentence about lunch"])
    img = enc.encode_images([torch.rand(100, 120), torch.rand(3, 64, 64)])
    assert txt.shape == (3, 32) and img.shape == (2, 32)
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert not torch.allclose(txt[0], txt[1])


def test_text_tower_from_a_separate_folder(biomed_dir, tmp_path):
    weights = tmp_path / "weights"
    text = tmp_path / "pubmedbert"
    weights.mkdir()
    text.mkdir()
    for f in biomed_dir.iterdir():
        target = weights if f.name in ("open_clip_config.json", "open_clip_pytorch_model.bin") else text
        shutil.copy(f, target / f.name)
    with pytest.raises(EncoderNotAvailable, match="neither a local folder nor in the Hugging Face cache"):
        resolve(f"biomedclip:local-dir:{weights}")
    enc = resolve(f"biomedclip:local-dir:{weights}", text_dir=str(text))
    reference = resolve(f"biomedclip:local-dir:{biomed_dir}")
    torch.testing.assert_close(enc.encode_texts(["pneumonia"]), reference.encode_texts(["pneumonia"]))


def test_from_the_hugging_face_cache_layout(biomed_dir, tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    repo = hub / ("models--" + BIOMEDCLIP_HF_ID.replace("/", "--"))
    shutil.copytree(biomed_dir, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    enc = resolve("biomedclip")
    assert enc.id == "biomedclip"
    assert enc.encode_texts(["x"]).shape == (1, 32)


def test_empty_cache_fails_fast_and_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    start = time.perf_counter()
    with pytest.raises(EncoderNotAvailable) as info:
        resolve("biomedclip")
    assert time.perf_counter() - start < 30.0  # no hub retries (those take minutes); generous for loaded CI
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.spec == "biomedclip"
    message = str(err)
    assert "'biomedclip'" in message
    assert str(tmp_path / "empty-hf" / "hub") in message  # where it looked
    for alternative in ("biomedclip:local-dir:PATH", "open_clip:ARCH:PRETRAINED", "surrogate"):
        assert alternative in message


def test_incomplete_local_copy(tmp_path):
    with pytest.raises(EncoderNotAvailable, match="does not exist"):
        resolve(f"biomedclip:local-dir:{tmp_path / 'missing'}")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(EncoderNotAvailable, match="open_clip_pytorch_model.bin"):
        resolve(f"biomedclip:local-dir:{tmp_path}")
    with pytest.raises(ValueError, match="expected 'biomedclip'"):
        resolve("biomedclip:ViT-B-16")
