# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The pixel value range at the one place pixels enter the encoders: [0, 1] expected, anything else min-max scaled
per image with an ImageRangeWarning, NaN refused. Checked on a real (tiny, random-weight) open_clip encoder."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tanl_guard.encoders._images import UNIT_RANGE_TOLERANCE, ImageRangeWarning, to_unit_range


def _slice(seed: int = 0) -> np.ndarray:
    """A 2D float image in [0, 1] spanning the whole range."""
    a = np.random.default_rng(seed).random((24, 20)).astype(np.float32)
    return (a - a.min()) / (a.max() - a.min())


def test_in_range_images_are_untouched_and_silent(tiny_clip):
    image = _slice()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tiny_clip.encode_images([image, torch.from_numpy(image)[None]])
        edge = tiny_clip.encode_images([image + UNIT_RANGE_TOLERANCE / 2])  # a rounding overshoot
    torch.testing.assert_close(out[0], out[1])
    # within the tolerance the image is clipped to [0, 1], not rescaled
    torch.testing.assert_close(edge[0], tiny_clip.encode_images([np.clip(image + UNIT_RANGE_TOLERANCE / 2, 0, 1)])[0])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda a: a * 4000.0 + 200.0, id="raw-float-intensities"),
        pytest.param(lambda a: a * 2.0 - 1.0, id="float-in-minus1-1"),
        pytest.param(lambda a: (a * 4095).round().astype(np.uint16), id="uint16-pixels"),
    ],
)
def test_out_of_range_images_are_minmax_scaled_with_a_warning(tiny_clip, raw):
    image = _slice(1)
    with pytest.warns(ImageRangeWarning, match=r"outside \[0, 1\]"):
        got = tiny_clip.encode_images([raw(image)])
    expected = tiny_clip.encode_images([image])  # the same image scaled to [0, 1] by hand
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_batches_are_scaled_per_image(tiny_clip):
    """In a (B, C, H, W) batch only the out-of-range image is rescaled, by its own minimum and maximum."""
    a, b = _slice(2), _slice(3)
    batch = torch.stack([torch.from_numpy(a)[None], torch.from_numpy(b * 300.0 - 50.0)[None]])
    with pytest.warns(ImageRangeWarning):
        got = tiny_clip.encode_images(batch)
    expected = tiny_clip.encode_images([a, b])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_to_unit_range_rules():
    x = torch.stack([torch.full((1, 2, 2), 7.0), torch.tensor([[[0.2, 0.4], [0.6, 1.0 + UNIT_RANGE_TOLERANCE]]])])
    with pytest.warns(ImageRangeWarning):
        out = to_unit_range(x)
    assert torch.equal(out[0], torch.zeros(1, 2, 2)), "a constant out-of-range image becomes zeros"
    assert torch.equal(out[1], x[1].clamp(0, 1)), "an image within the tolerance is only clipped"
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_unit_range(torch.tensor([[[[0.5, float("inf")]]]]))
    assert to_unit_range(torch.empty(0, 3, 4, 4)).shape == (0, 3, 4, 4)
