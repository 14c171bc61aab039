# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Trunk features from the same forward pass as the joint embedding: the real surrogate, tiny open_clip towers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from encoder_test_configs import LOGIT_SCALE, TINY_CONFIG

from tanl_guard.encoders import ImageEncoding, resolve
from tanl_guard.encoders.base import ImagePreprocess

skdata = pytest.importorskip("skimage.data")

#: a timm image trunk with a linear head, as BiomedCLIP's (timm's smallest ViT; its input stays 224)
TIMM_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "image_size": 224},
    "text_cfg": TINY_CONFIG["text_cfg"],
}


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 72, 90, generator=torch.Generator().manual_seed(seed))


def test_surrogate_features_are_efficientnet_penultimate_layer(surrogate):
    photos = [skdata.chelsea() / 255.0, skdata.coffee() / 255.0, skdata.camera() / 255.0]
    encoded = surrogate.encode_images(photos, return_features=True)
    assert isinstance(encoded, ImageEncoding) and len(encoded) == 3
    assert surrogate.feature_dim == 1280 and encoded.features.shape == (3, 1280)
    # the embeddings are exactly those without features: one forward pass, split after the pool
    assert torch.equal(encoded.embeddings, surrogate.encode_images(photos))
    pp = surrogate.preprocess
    from tanl_guard.encoders._images import iter_pixel_batches

    (pixels,) = list(iter_pixel_batches(photos, size=pp.size, resize=pp.resize_to, interpolation=pp.interpolation,
                                        mean=pp.mean, std=pp.std, batch_size=8, device=surrogate.device))
    with torch.inference_mode():
        logits = surrogate._vision(pixels)
        torch.testing.assert_close(surrogate._vision.classifier(encoded.features), logits, atol=1e-4, rtol=1e-4)
    # the trunk features separate a cat from a cup far better than chance: they carry the image content
    cos = torch.nn.functional.normalize(encoded.features, dim=1) @ torch.nn.functional.normalize(
        encoded.features, dim=1).T
    assert float(cos[0, 1]) < 0.9


def _check_open_clip_features(encoder):
    images = _images(5, seed=2)
    encoded = encoder.encode_images(images, return_features=True)
    plain = encoder.encode_images(images)
    assert encoded.features.shape == (5, encoder.feature_dim)
    torch.testing.assert_close(encoded.embeddings, plain, atol=1e-6, rtol=1e-5)
    return encoded


def test_open_clip_vit_features_are_the_pooled_output_before_the_projection(tiny_clip):
    encoded = _check_open_clip_features(tiny_clip)
    visual = tiny_clip.model.visual
    assert tiny_clip.feature_dim == TINY_CONFIG["vision_cfg"]["width"] == 64
    projected = torch.nn.functional.normalize(encoded.features @ visual.proj.detach(), dim=1)
    torch.testing.assert_close(projected, encoded.embeddings, atol=1e-5, rtol=1e-5)
    alone = tiny_clip.encode_images(_images(5, seed=2)[3:4], return_features=True)
    torch.testing.assert_close(alone.features[0], encoded.features[3], atol=1e-5, rtol=1e-4)


def test_biomedclip_shaped_model_gives_features(biomed_dir):
    encoder = resolve(f"biomedclip:local-dir:{biomed_dir}")
    _check_open_clip_features(encoder)


def test_timm_trunk_features_are_the_trunk_output(tmp_path):
    import open_clip

    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TIMM_CONFIG}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{tmp_path}", load_weights=False)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(LOGIT_SCALE))
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    encoder = resolve(f"open_clip:local-dir:{tmp_path}")
    encoded = _check_open_clip_features(encoder)
    assert encoder.feature_dim == 192  # vit_tiny's width, before the linear head
    with torch.no_grad():
        head = encoder.model.visual.head(encoded.features)
    torch.testing.assert_close(torch.nn.functional.normalize(head, dim=1), encoded.embeddings, atol=1e-5, rtol=1e-5)


def test_encoding_rows_and_concatenation():
    a = ImageEncoding(torch.eye(3), torch.arange(6.0).view(3, 2))
    b = a.rows(torch.tensor([True, False, True]))
    assert b.embeddings.shape == (2, 3) and b.features.tolist() == [[0.0, 1.0], [4.0, 5.0]]
    both = ImageEncoding.cat([a, b])
    assert len(both) == 5 and both.features.shape == (5, 2)
    with pytest.raises(ValueError, match="with and without"):
        ImageEncoding.cat([a, ImageEncoding(torch.eye(3))])
    with pytest.raises(ValueError, match="differ in length"):
        ImageEncoding(torch.eye(3), torch.zeros(2, 2))


def test_an_encoder_without_trunk_features_says_so():
    from tanl_guard.encoders import BaseEncoder

    class PixelMean(BaseEncoder):
        """A real, trivial encoder: the mean colour as a 3-d embedding; no trunk to speak of."""

        def __init__(self):
            super().__init__(id="pixel-mean", embed_dim=3, logit_scale=10.0,
                             preprocess=ImagePreprocess(size=8, mean=(0.5,) * 3, std=(0.5,) * 3))

        def _compute_weights_sha256(self):
            return "0" * 64

        def _embed_pixels(self, pixels):
            return pixels.mean(dim=(2, 3))

        def _embed_texts(self, texts):
            return torch.ones(len(texts), 3)

    encoder = PixelMean()
    assert encoder.feature_dim is None
    assert encoder.encode_images([np.zeros((8, 8))]).shape == (1, 3)
    with pytest.raises(NotImplementedError, match="feature source 'embedding'"):
        encoder.encode_images([np.zeros((8, 8))], return_features=True)
