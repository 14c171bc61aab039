# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Turning the image inputs encoders accept into fixed-size RGB pixel batches (private helpers).

This is the one place where pixels enter the encoders, so the value range is settled here: encoders expect
values in [0, 1] (uint8 is divided by 255). An image with values outside [0, 1] (beyond a rounding tolerance of
:data:`UNIT_RANGE_TOLERANCE`) is min-max scaled to [0, 1] on its own, the rule the DICOM ingest and the MONAI view
adapter apply to every view, and an :class:`ImageRangeWarning` says so (Python's default filter shows it once per
process). Scaling instead of raising keeps a screening stream running on an input that has one obvious reading;
warning keeps it from passing silently, since the score of an image depends on the mapping: raw intensities fed
as they are would be cut off by the encoder's normalisation and scored as a different image. NaN and infinite
values are refused with a ``ValueError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "UNIT_RANGE_TOLERANCE",
    "ImageRangeWarning",
    "as_image_list",
    "to_rgb_chw",
    "to_unit_range",
    "resize_center_crop",
    "iter_pixel_batches",
]

#: How far outside [0, 1] values may lie and still count as in range (float rounding, resampling overshoot);
#: such images are clipped to [0, 1], not rescaled.
UNIT_RANGE_TOLERANCE = 1e-3

_RANGE_MESSAGE = (
    "images with values outside [0, 1] were min-max scaled to [0, 1], each on its own (encoders expect [0, 1]; "
    "uint8 is divided by 255); scale them yourself, e.g. with MONAI's ScaleIntensity, to choose the mapping"
)


class ImageRangeWarning(UserWarning):
    """Images outside [0, 1] reached an encoder and were min-max scaled to [0, 1], each on its own."""


def as_image_list(images: Any) -> list[Any] | torch.Tensor:
    """Check the container: a (B, C, H, W) tensor is kept whole, anything else becomes a list of single images."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"a tensor of images must have shape (B, C, H, W), got {tuple(images.shape)}; "
                "pass single images inside a list"
            )
        return images
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"a numpy array of images must have shape (B, H, W, C) or (B, C, H, W), got {images.shape}; "
                "pass single images inside a list"
            )
        return list(images)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(
            f"images must be a (B, C, H, W) tensor or a sequence of arrays/tensors, got {type(images).__name__}"
        )
    return list(images)


def to_rgb_chw(image: Any) -> torch.Tensor:
    """One image as a float32 (3, H, W) tensor.

    Accepts numpy arrays and tensors of shape (H, W), (H, W, 1|3|4) or (1|3, H, W), and PIL images. uint8 is
    divided by 255; other values are returned as they are (:func:`to_unit_range` settles the range). Where both readings are possible (e.g. a 3x3x3 array) numpy arrays are read as
    channels-last and tensors as channels-first, following each library's convention.
    """
    channels_last = True
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        image = np.asarray(image.convert("RGB"))  # a PIL image, duck-typed so PIL is not imported here
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        elif image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
            raise TypeError(f"image arrays must be numeric, got dtype {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    elif isinstance(image, torch.Tensor):
        channels_last = False
        x = image.detach()
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    else:
        raise TypeError(f"each image must be a numpy array or a torch tensor, got {type(image).__name__}")

    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif x.ndim == 3:
        first, last = x.shape[0] in (1, 3), x.shape[-1] in (1, 3, 4)
        if last and (channels_last or not first):
            x = x[..., :3].permute(2, 0, 1) if x.shape[-1] != 1 else x.permute(2, 0, 1)
        elif not first:
            raise ValueError(f"cannot tell the channel axis of an image of shape {tuple(x.shape)}")
    else:
        raise ValueError(f"an image must have shape (H, W), (H, W, C) or (C, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"empty image of shape {tuple(x.shape)}")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Bring each image of a (B, C, H, W) float batch into [0, 1] (see the module docstring for the rule).

    Images within [0, 1] up to :data:`UNIT_RANGE_TOLERANCE` are clipped; any other image is min-max scaled on its
    own (a constant one becomes zeros) and an :class:`ImageRangeWarning` is issued.

    Args:
        x: (B, C, H, W) float tensor.

    Raises:
        ValueError: for NaN or infinite values.
    """
    if x.numel() == 0:
        return x
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values")
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    outside = (lo < -UNIT_RANGE_TOLERANCE) | (hi > 1.0 + UNIT_RANGE_TOLERANCE)
    if bool(outside.any()):
        warnings.warn(_RANGE_MESSAGE, ImageRangeWarning, stacklevel=2)
        lo, span = lo.view(-1, 1, 1, 1), (hi - lo).view(-1, 1, 1, 1)
        scaled = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
        x = torch.where(outside.view(-1, 1, 1, 1), scaled, x)
    return x.clamp(0.0, 1.0)


def resize_center_crop(
    x: torch.Tensor, size: int, resize: int, interpolation: str, squash: bool = False
) -> torch.Tensor:
    """Resize a (B, 3, H, W) batch so its short side is ``resize``, then centre-crop ``size`` x ``size``.

    With ``squash`` the batch is resized straight to ``size`` x ``size`` instead, whatever its aspect ratio.

    Antialiased like PIL when shrinking; bicubic results are clamped back to [0, 1] when the input lay there, as
    PIL's 8-bit output is.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    short = min(h, w)
    if squash:
        new_h = new_w = size
    else:
        new_h = resize if h == short else max(resize, int(round(h * resize / short)))
        new_w = resize if w == short else max(resize, int(round(w * resize / short)))
    if (new_h, new_w) != (h, w):
        in_unit_range = bool(x.min() >= 0.0) and bool(x.max() <= 1.0)
        if interpolation in ("bilinear", "bicubic"):
            x = F.interpolate(x, size=(new_h, new_w), mode=interpolation, align_corners=False, antialias=True)
        else:
            x = F.interpolate(x, size=(new_h, new_w), mode="nearest-exact")
        if interpolation == "bicubic" and in_unit_range:
            x = x.clamp(0.0, 1.0)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def iter_pixel_batches(
    images: Any,
    *,
    size: int,
    resize: int,
    interpolation: str,
    squash: bool = False,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    batch_size: int,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Yield (b, 3, size, size) float32 batches on ``device``, normalised with mean/std unless they are None.

    Every image is brought into [0, 1] first (:func:`to_unit_range`): out-of-range images are min-max scaled with
    an :class:`ImageRangeWarning`; NaN or infinite values raise ``ValueError``.
    """
    items = as_image_list(images)
    n = int(items.shape[0]) if isinstance(items, torch.Tensor) else len(items)
    if isinstance(items, torch.Tensor) and items.shape[1] not in (1, 3):
        raise ValueError(f"image batches must have 1 or 3 channels, got shape {tuple(items.shape)}")
    mean_t = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = None if std is None else torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    for start in range(0, n, batch_size):
        if isinstance(items, torch.Tensor):
            chunk = items[start : start + batch_size].detach().to(device=device)
            chunk = to_unit_range(chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float())
            if chunk.shape[1] == 1:
                chunk = chunk.expand(-1, 3, -1, -1)
            pixels = resize_center_crop(chunk, size, resize, interpolation, squash)
        else:
            # sizes differ from image to image: resize one by one, then stack
            pixels = torch.cat(
                [
                    resize_center_crop(
                        to_unit_range(to_rgb_chw(im).to(device).unsqueeze(0)), size, resize, interpolation, squash
                    )
                    for im in items[start : start + batch_size]
                ]
            )
        if mean_t is not None and std_t is not None:
            pixels = (pixels - mean_t) / std_t
        yield pixels.contiguous()
