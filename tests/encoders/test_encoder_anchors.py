# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""ID anchors: template ensembles, image prototypes, and both kinds combined."""

from __future__ import annotations

import pytest
import torch

from tanl_guard.encoders import DEFAULT_TEMPLATES, IDAnchors, build_id_anchors


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_text_anchors_average_the_templates(tiny_clip):
    templates = ("a photo of a {}.", "a medical image of {}.", "{}")
    anchors = build_id_anchors(tiny_clip, ["brain MRI", "chest X-ray"], templates=templates)
    assert anchors.names == ("brain MRI", "chest X-ray")
    assert anchors.kinds == ("text", "text")
    assert anchors.label_of == ("brain MRI", "chest X-ray")
    assert anchors.support == (3, 3)
    assert anchors.templates == templates
    assert anchors.encoder_id == tiny_clip.id
    expected = _unit(tiny_clip.encode_texts([t.format("chest X-ray") for t in templates]).mean(dim=0))
    torch.testing.assert_close(anchors.embeddings[1], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(anchors.embeddings.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)


def test_text_and_image_anchors_combine(tiny_clip):
    g = torch.Generator().manual_seed(0)
    refs = {"brain MRI": torch.rand(3, 1, 70, 70, generator=g), "knee X-ray": [torch.rand(50, 90, generator=g)]}
    anchors = build_id_anchors(tiny_clip, ["brain MRI", "chest X-ray"], reference_images=refs)
    assert isinstance(anchors, IDAnchors)
    assert len(anchors) == 4 and anchors.embeddings.shape == (4, tiny_clip.embed_dim)
    assert anchors.kinds == ("text", "text", "image", "image")
    assert anchors.label_of == ("brain MRI", "chest X-ray", "brain MRI", "knee X-ray")
    assert anchors.names[2] == "brain MRI [image prototype]"
    assert anchors.labels == ("brain MRI", "chest X-ray", "knee X-ray")
    assert anchors.label_indices().tolist() == [0, 1, 0, 2]
    assert anchors.columns("image") == (2, 3)
    assert anchors.support == (len(DEFAULT_TEMPLATES), len(DEFAULT_TEMPLATES), 3, 1)
    prototype = _unit(tiny_clip.encode_images(refs["brain MRI"]).mean(dim=0))
    torch.testing.assert_close(anchors.embeddings[2], prototype, atol=1e-5, rtol=1e-4)
    only_images = build_id_anchors(tiny_clip, reference_images={"knee X-ray": refs["knee X-ray"]})
    assert only_images.kinds == ("image",) and only_images.templates == ()


def test_anchor_errors(tiny_clip):
    with pytest.raises(ValueError, match="needs ID labels"):
        build_id_anchors(tiny_clip)
    with pytest.raises(ValueError, match="duplicates"):
        build_id_anchors(tiny_clip, ["a", "a"])
    with pytest.raises(ValueError, match="exactly one"):
        build_id_anchors(tiny_clip, ["a"], templates=("no slot",))
    with pytest.raises(TypeError, match="not one string"):
        build_id_anchors(tiny_clip, "brain MRI")
    with pytest.raises(ValueError, match="no reference images"):
        build_id_anchors(tiny_clip, reference_images={"a": []})
    with pytest.raises(ValueError, match="one entry per column"):
        IDAnchors(embeddings=torch.zeros(2, 4), names=("a",), kinds=("text",), label_of=("a",))

