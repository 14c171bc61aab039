# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The open_clip path with tiny random-weight models written to disk: checkpoint files, JSON configs, local-dir."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from encoder_test_configs import LOGIT_SCALE, TINY_ARCH, TINY_CONFIG

from tanl_guard.encoders import (
    EncoderNotAvailable,
    ImagePreprocess,
    OpenCLIPEncoder,
    VisionLanguageEncoder,
    resolve,
)


def _images(n: int, size: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size + 16, generator=torch.Generator().manual_seed(seed))


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_file_shapes_norms_device_and_scale(tiny_clip, tiny_clip_files):
    enc = tiny_clip
    assert isinstance(enc, OpenCLIPEncoder)
    assert isinstance(enc, VisionLanguageEncoder)
    assert enc.id == f"open_clip:{TINY_ARCH}:{tiny_clip_files / 'a.pt'}"
    assert enc.embed_dim == TINY_CONFIG["embed_dim"]
    assert enc.device == torch.device("cpu")
    assert enc.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-5)  # from the checkpoint, not open_clip's 1/0.07
    assert enc.preprocess.size == 64
    img = enc.encode_images(_images(5))
    txt = enc.encode_texts(["a brain MRI", "a chest X-ray", "a cat"])
    for out, rows in ((img, 5), (txt, 3)):
        assert out.shape == (rows, 32)
        assert out.dtype == torch.float32
        assert out.device == enc.device
        assert not torch.is_inference(out)  # callers may update it in place
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(rows), atol=1e-5, rtol=0)


def test_same_image_alone_and_in_a_batch(tiny_clip):
    images = _images(6, seed=3)
    batched = tiny_clip.encode_images(images)  # batch_size 4: crosses an internal batch boundary
    for i in (0, 5):
        alone = tiny_clip.encode_images(images[i : i + 1])
        torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-4)
    texts = ["first prompt", "second", "a third, longer prompt"]
    torch.testing.assert_close(
        tiny_clip.encode_texts(texts)[2], tiny_clip.encode_texts(texts[2:])[0], atol=1e-5, rtol=1e-4
    )


def test_weights_sha256_is_the_checkpoint_hash_and_changes_with_the_weights(tiny_clip, tiny_clip_files):
    other = resolve(f"open_clip:{TINY_ARCH}:{tiny_clip_files / 'b.pt'}")
    assert tiny_clip.weights_sha256 == _sha256(tiny_clip_files / "a.pt")
    assert other.weights_sha256 == _sha256(tiny_clip_files / "b.pt")
    assert other.weights_sha256 != tiny_clip.weights_sha256
    assert not torch.allclose(other.encode_texts(["x"]), tiny_clip.encode_texts(["x"]))


def test_random_weights_hash_the_state_dict(tiny_clip_files):
    torch.manual_seed(7)
    a = resolve(f"open_clip:{TINY_ARCH}:random")
    torch.manual_seed(7)
    b = resolve(f"open_clip:{TINY_ARCH}:random")
    torch.manual_seed(8)
    c = resolve(f"open_clip:{TINY_ARCH}:random")
    assert len(a.weights_sha256) == 64
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256


def test_model_config_kwarg_and_json_beside_the_checkpoint(tiny_clip, tiny_clip_files, tmp_path):
    arch = "tanl-tiny-vit-beside"
    shutil.copy(tiny_clip_files / "a.pt", tmp_path / "weights.pt")
    (tmp_path / f"{arch}.json").write_text(json.dumps(TINY_CONFIG))
    beside = resolve(f"open_clip:{arch}:{tmp_path / 'weights.pt'}")  # found beside the checkpoint
    x = _images(2, seed=5)
    torch.testing.assert_close(beside.encode_images(x), tiny_clip.encode_images(x))

    arch2 = "tanl-tiny-vit-kwarg"
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / f"{arch2}.json").write_text(json.dumps(TINY_CONFIG))
    via_kwarg = resolve(f"open_clip:{arch2}:{tmp_path / 'weights.pt'}", model_config=cfg_dir / f"{arch2}.json")
    torch.testing.assert_close(via_kwarg.encode_texts(["y"]), tiny_clip.encode_texts(["y"]))
    with pytest.raises(ValueError, match="rename it"):
        resolve(f"open_clip:other-name:{tmp_path / 'weights.pt'}", model_config=cfg_dir / f"{arch2}.json")


def test_local_dir_forms(tiny_clip, tiny_clip_dir):
    enc = resolve(f"open_clip:local-dir:{tiny_clip_dir}")
    assert enc.id == f"open_clip:local-dir:{tiny_clip_dir}"
    # the preprocess comes from the folder's open_clip_config.json
    assert enc.preprocess == ImagePreprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert enc.logit_scale == pytest.approx(LOGIT_SCALE, rel=1e-5)
    assert enc.weights_sha256 == tiny_clip.weights_sha256  # the same bytes
    torch.testing.assert_close(enc.encode_texts(["z", "w"]), tiny_clip.encode_texts(["z", "w"]))
    # ARCH:local-dir:PATH takes the checkpoint from the folder and the architecture from the registry
    arch_form = resolve(f"open_clip:{TINY_ARCH}:local-dir:{tiny_clip_dir}")
    x = _images(1, seed=9)
    torch.testing.assert_close(
        arch_form.encode_images(x, normalize_input=False), tiny_clip.encode_images(x, normalize_input=False)
    )


def test_missing_weights_fail_clearly(tiny_clip_files, tmp_path):
    with pytest.raises(EncoderNotAvailable, match="neither an existing checkpoint file"):
        resolve(f"open_clip:{TINY_ARCH}:{tmp_path / 'nope.pt'}")
    with pytest.raises(EncoderNotAvailable, match="open_clip_config.json"):
        resolve(f"open_clip:local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG}))
    with pytest.raises(EncoderNotAvailable, match="refusing random weights"):
        resolve(f"open_clip:local-dir:{tmp_path}")
    with pytest.raises(EncoderNotAvailable, match="not in the Hugging Face cache"):
        resolve("open_clip:hf-hub:nobody/nothing")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        resolve(f"open_clip:no-such-arch:{tiny_clip_files / 'a.pt'}")
    with pytest.raises(ValueError, match="ARCH:PRETRAINED"):
        resolve(f"open_clip:{TINY_ARCH}")


def test_uncached_pretrained_tag_is_not_downloaded():
    with pytest.raises(EncoderNotAvailable) as info:
        resolve("open_clip:ViT-B-32:laion2b_s34b_b79k")
    message = str(info.value)
    assert "not cached" in message and "laion" in message.lower()
    assert "surrogate" in message  # the alternatives are named


def test_texts_in_batches_with_progress_on_stderr(tiny_clip, capsys):
    texts = [f"prompt number {i}" for i in range(7)]
    full = tiny_clip.encode_texts(texts)
    chunked = tiny_clip.encode_texts(texts, batch_size=3, progress=True)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-4)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "encode texts" in captured.err
    with pytest.raises(TypeError, match="not one string"):
        tiny_clip.encode_texts("a single string")
    assert tiny_clip.encode_texts([]).shape == (0, 32)


def test_cached_pretrained_tag_is_found_without_network(tmp_path, monkeypatch):
    import open_clip

    from tanl_guard.encoders.open_clip import _tag_checkpoint

    repo = tmp_path / "hf" / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "snapshots" / "rev1").mkdir(parents=True)
    (repo / "snapshots" / "rev1" / "open_clip_model.safetensors").write_bytes(b"stand-in")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path, cfg = _tag_checkpoint(open_clip, "ViT-B-32", "openai", "open_clip:ViT-B-32:openai", None)
    assert path == str(repo / "snapshots" / "rev1" / "open_clip_model.safetensors")
    assert cfg["quick_gelu"] is True  # the tag's settings travel with the file
