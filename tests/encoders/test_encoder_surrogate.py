# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The surrogate encoder with its real packaged weights: what it really knows about photos, and its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tanl_guard.encoders.surrogate as surrogate_module
from tanl_guard.encoders import SurrogateEncoder, VisionLanguageEncoder, build_id_anchors, resolve
from tanl_guard.encoders.imagenet_classnames import IMAGENET_CLASSNAMES
from tanl_guard.encoders.surrogate import SURROGATE_ID

skdata = pytest.importorskip("skimage.data")

WORDS = ("cat", "tiger", "dog", "car", "airplane", "house", "tree", "document", "boat", "pizza", "guitar", "chair")


def test_identity_and_protocol(surrogate):
    assert isinstance(surrogate, VisionLanguageEncoder)
    assert surrogate.id == SURROGATE_ID and "surrogate" in surrogate.id
    assert surrogate.embed_dim == 384
    assert surrogate.logit_scale == pytest.approx(30.0)
    assert len(surrogate.weights_sha256) == 64
    assert "not a medical model" in (surrogate_module.__doc__ or "")
    assert "not a medical model" in (SurrogateEncoder.__doc__ or "")


def test_class_names_match_open_clip():
    zero_shot_metadata = pytest.importorskip("open_clip.zero_shot_metadata")
    assert IMAGENET_CLASSNAMES == tuple(zero_shot_metadata.IMAGENET_CLASSNAMES)


def test_cat_photo_reads_as_cat(surrogate):
    cat = skdata.chelsea().astype(np.float32) / 255.0
    top = [name for name, _ in surrogate.top_classes([cat], k=5)[0]]
    assert any("cat" in name for name in top[:3]), top
    image = surrogate.encode_images([cat])
    words = surrogate.encode_texts(WORDS)
    ranked = [WORDS[i] for i in (image @ words.T)[0].argsort(descending=True).tolist()]
    assert {"cat", "tiger"} & set(ranked[:2]), ranked


def test_photo_closer_to_its_caption_than_to_a_document(surrogate):
    photos = [skdata.chelsea(), skdata.coffee()]  # uint8 arrays are scaled by 1/255
    captions = surrogate.encode_texts(["a photo of a cat", "a cup of coffee", "a document page"])
    sims = surrogate.encode_images(photos) @ captions.T
    assert sims[0, 0] > sims[0, 2] + 0.1
    assert sims[1, 1] > sims[1, 2] + 0.1
    assert surrogate.top_classes([skdata.coffee()], k=1)[0][0][0] == "espresso"


def test_input_forms_and_unnormalised_path(surrogate):
    rng = np.random.default_rng(0)
    gray = rng.random((40, 60), dtype=np.float32)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    tiny = rng.random((3, 3), dtype=np.float32)
    out = surrogate.encode_images([gray, rgb, chw, tiny, torch.from_numpy(gray)[None]])
    assert out.shape == (5, 384)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-4)  # gray -> RGB is channel repetition
    torch.testing.assert_close(out[1], out[2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[0], out[4], atol=1e-5, rtol=1e-4)
    noise = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    raw = surrogate.encode_images(noise, normalize_input=False)
    normed = surrogate.encode_images(noise)
    assert raw.shape == (2, 384) and torch.isfinite(raw).all()
    assert not torch.allclose(raw, normed)


def test_resolve_reuses_cached_class_embeddings(surrogate):
    again = resolve("surrogate")
    assert again.id == SURROGATE_ID
    torch.testing.assert_close(again.class_embeddings, surrogate.class_embeddings)
    with pytest.raises(ValueError, match="takes no options"):
        resolve("surrogate:bigger")


def test_surrogate_image_anchors_separate_what_its_text_cannot(surrogate):
    """The surrogate has no medical text semantics, but image prototypes still tell photos apart."""
    cat, coffee = skdata.chelsea(), skdata.coffee()
    anchors = build_id_anchors(surrogate, reference_images={"cat": [cat, cat[:, ::-1]], "coffee": [coffee]})
    sims = surrogate.encode_images([cat[50:250, 80:330], coffee[100:350, 100:450]]) @ anchors.embeddings.T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]


def test_image_embedding_is_the_conse_mixture(surrogate):
    from tanl_guard.encoders._images import iter_pixel_batches

    pp = surrogate.preprocess
    assert (pp.size, pp.resize_to, pp.mean, pp.std, pp.interpolation) == (224, 256, (0.5,) * 3, (0.5,) * 3, "bilinear")
    image = skdata.coffee()
    pixels = next(iter_pixel_batches([image], size=224, resize=256, interpolation="bilinear", mean=pp.mean,
                                     std=pp.std, batch_size=1, device=surrogate.device))
    with torch.inference_mode():
        probs = surrogate.class_probabilities(pixels)[0]
    p, idx = probs.topk(10)
    expected = torch.nn.functional.normalize((p[:, None] * surrogate.class_embeddings[idx]).sum(0) / p.sum(), dim=0)
    torch.testing.assert_close(surrogate.encode_images([image])[0], expected, atol=1e-5, rtol=1e-4)
