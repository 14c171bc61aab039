# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Image inputs: shapes, gray to RGB, resizing and cropping, tiny images, dtype and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tanl_guard.encoders import ImagePreprocess
from tanl_guard.encoders._images import resize_center_crop, to_rgb_chw


def test_to_rgb_chw_reads_every_layout():
    gray = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    expected = torch.from_numpy(gray).expand(3, 3, 4)
    for image in (gray, gray[:, :, None], np.repeat(gray[:, :, None], 3, 2), torch.from_numpy(gray)[None],
                  torch.from_numpy(gray).expand(3, 3, 4), (gray * 255).round().astype(np.uint8)):
        out = to_rgb_chw(image)
        assert out.shape == (3, 3, 4) and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=3e-3, rtol=0)
    rgba = np.zeros((5, 6, 4), dtype=np.float32)
    assert to_rgb_chw(rgba).shape == (3, 5, 6)
    with pytest.raises(ValueError, match="shape"):
        to_rgb_chw(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="channel axis"):
        to_rgb_chw(torch.zeros(5, 6, 7))
    with pytest.raises(TypeError):
        to_rgb_chw("not an image")


def test_resize_center_crop():
    x = torch.rand(2, 3, 30, 60)
    out = resize_center_crop(x, size=16, resize=20, interpolation="bicubic")
    assert out.shape == (2, 3, 16, 16)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert resize_center_crop(torch.rand(1, 3, 3, 3), 224, 224, "bilinear").shape == (1, 3, 224, 224)
    assert resize_center_crop(x, 16, 16, "bilinear", squash=True).shape == (2, 3, 16, 16)
    same = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(resize_center_crop(same, 8, 8, "bicubic"), same)


def test_preprocess_validation():
    with pytest.raises(ValueError, match="interpolation"):
        ImagePreprocess(size=8, mean=(0, 0, 0), std=(1, 1, 1), interpolation="lanczos")
    with pytest.raises(ValueError, match="at least size"):
        ImagePreprocess(size=8, mean=(0, 0, 0), std=(1, 1, 1), resize=4)
    assert ImagePreprocess(size=8, mean=(0, 0, 0), std=(1, 1, 1)).resize_to == 8


def test_encoder_accepts_mixed_sizes_and_rejects_bad_input(tiny_clip):
    rng = np.random.default_rng(1)
    images = [rng.random((3, 3)), rng.random((16, 16, 3)), torch.rand(1, 200, 50), (rng.random((9, 7)) * 255).astype(np.uint8)]
    out = tiny_clip.encode_images(images)
    assert out.shape == (4, tiny_clip.embed_dim)
    batch = torch.rand(3, 1, 20, 20)
    torch.testing.assert_close(
        tiny_clip.encode_images(batch), tiny_clip.encode_images(list(batch)), atol=1e-5, rtol=1e-4
    )
    assert tiny_clip.encode_images([]).shape == (0, tiny_clip.embed_dim)
    with pytest.raises(ValueError, match="NaN"):
        tiny_clip.encode_images(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        tiny_clip.encode_images(torch.rand(1, 2, 8, 8))
    with pytest.raises(TypeError):
        tiny_clip.encode_images("image.png")


def test_device_strings():
    from tanl_guard.encoders.base import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda:0")
