# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""``ToGuardViewd``: a stateless dictionary transform that makes encoder-ready 2D views in [0, 1]."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tanl_guard._optional import optional_import

from .views import guard_views, parse_view

__all__ = ["ToGuardViewd"]

monai_transforms = optional_import("monai.transforms", "monai", "the MONAI integration")


class ToGuardViewd(monai_transforms.MapTransform):
    """Make the 2D views the OOD gate scores, from channel-first 2D images or 3D volumes of a data dictionary.

    The transform is **stateless**: it holds no detector state, only the view rule, so it is safe in DataLoader
    workers. Use it to prepare reference (ID anchor) images and thumbnails with exactly the conversion that
    :class:`~tanl_guard.integrations.monai.GuardedInferer` applies; the gate itself never runs in a transform
    (the online detector state would be forked into every worker and lost).

    Per item (no batch dimension):

    - 2D ``(C, H, W)`` gives ``(C', H, W)``;
    - 3D ``(C, H, W, D)`` with ``view="mid"`` or ``"mip"`` gives ``(C', H, W)`` (the middle axial slice, or the
      maximum intensity projection along the last axis);
    - 3D with ``view="slices:K"`` gives ``(K', C', H, W)``, K' <= K evenly spaced axial slices (fewer when the
      volume has fewer than K slices).

    C' is 3 for a 3-channel (RGB) input, else 1 (channel 0). The input may have any intensity range: every view is
    min-max scaled to [0, 1] on its own, the range the encoders expect (``Guard.score_images``, reference images).
    The output is a float32 ``torch.Tensor`` (not a MetaTensor: a view has no valid affine).

    Example code::

        views = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ToGuardViewd("image", view="mid")])
        refs = [views({"image": path})["image_guard"] for path in reference_paths]
        guard = Guard.build(encoder="biomedclip", labels=["brain MRI"], reference_images={"brain MRI": refs})

    Args:
        keys: keys of the images to convert.
        view: ``"mid"`` (default), ``"slices:K"`` or ``"mip"``; applies to 3D images only.
        output_key: where to write the views: one key (with a single input key) or one per key. ``None`` writes
            ``"<key>_guard"``; giving the input key itself replaces the image.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: Any,
        view: str = "mid",
        output_key: str | Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.view = parse_view(view)
        if output_key is None:
            outputs: list[Hashable] = [f"{k}_guard" for k in self.keys]
        elif isinstance(output_key, str):
            outputs = [output_key]
        else:
            outputs = list(output_key)
        if len(outputs) != len(self.keys):
            raise ValueError(f"output_key gives {len(outputs)} keys for {len(self.keys)} input keys")
        self.output_keys = tuple(outputs)

    def view_of(self, image: Any) -> torch.Tensor:
        """The view(s) of one channel-first image (see the class docstring for the shapes).

        Args:
            image: a (C, H, W) or (C, H, W, D) array or tensor.
        """
        x = image.as_tensor() if hasattr(image, "as_tensor") else image
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.ndim not in (3, 4):
            raise ValueError(f"expected a channel-first (C, H, W) or (C, H, W, D) image, got shape {tuple(x.shape)}")
        views, k = guard_views(x.unsqueeze(0), self.view)
        if x.ndim == 4 and self.view.kind == "slices":
            return views  # (K', C', H, W)
        return views[0]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the views of every key to a copy of ``data``.

        Args:
            data: the data dictionary.
        """
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.view_of(d[key])
        return d
