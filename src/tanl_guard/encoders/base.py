# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The protocol every vision-language encoder implements, its image preprocessing, and a shared base class."""

from __future__ import annotations

import abc
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from tanl_guard._optional import optional_import
from tanl_guard.encoders._images import iter_pixel_batches

__all__ = [
    "ImagePreprocess",
    "ImageEncoding",
    "VisionLanguageEncoder",
    "BaseEncoder",
    "resolve_device",
    "sha256_of_files",
    "sha256_of_state_dict",
]

_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True, kw_only=True)
class ImagePreprocess:
    """How an encoder turns an image in [0, 1] into network input.

    The short side is resized to ``resize`` (``size`` when None), the centre ``size`` x ``size`` is cropped, then
    ``(x - mean) / std`` is applied per RGB channel.

    Attributes:
        size: side of the square network input, in pixels.
        mean: per-channel RGB mean, on the [0, 1] scale.
        std: per-channel RGB standard deviation, on the [0, 1] scale.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        resize: short side before the centre crop (e.g. 256 for a 224 crop); None means ``size`` (crop only the
            long side, as CLIP does).
        resize_mode: ``"shortest"`` (resize the short side, centre-crop; CLIP) or ``"squash"`` (resize straight to
            ``size`` x ``size`` ignoring the aspect ratio; SigLIP).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize: int | None = None
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        if any(float(s) <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(f"resize_mode must be 'shortest' or 'squash', got {self.resize_mode!r}")
        if self.resize is not None and int(self.resize) < int(self.size):
            raise ValueError(f"resize ({self.resize}) must be at least size ({self.size})")

    @property
    def resize_to(self) -> int:
        """The short side before the centre crop."""
        return int(self.resize if self.resize is not None else self.size)


@dataclass(frozen=True)
class ImageEncoding:
    """Images through an encoder: the joint-space embeddings and, from the same forward pass, trunk features.

    Attributes:
        embeddings: (B, D) float32 L2-normalised joint image-text embeddings (what label detectors read).
        features: (B, F) float32 pooled image-trunk features before the projection into the joint space
            (surrogate: EfficientNet-Lite0's penultimate layer, F = 1280; open_clip / BiomedCLIP: the visual
            trunk's pooled output), not normalised; or any (B, F) features a caller supplies, e.g. a classifier's
            penultimate layer. None when not computed.
    """

    embeddings: torch.Tensor
    features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features is not None and self.features.shape[0] != self.embeddings.shape[0]:
            raise ValueError(
                f"embeddings ({self.embeddings.shape[0]}) and features ({self.features.shape[0]}) differ in length"
            )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def rows(self, index: Any) -> ImageEncoding:
        """The encoding of some images (a slice, index list or boolean mask).

        Args:
            index: anything a tensor accepts as a row index.
        """
        return ImageEncoding(self.embeddings[index], None if self.features is None else self.features[index])

    @staticmethod
    def cat(parts: Sequence[ImageEncoding]) -> ImageEncoding:
        """Concatenate encodings (all with features, or none).

        Args:
            parts: the encodings, at least one.
        """
        feats = [p.features for p in parts]
        if any(f is None for f in feats) and not all(f is None for f in feats):
            raise ValueError("cannot concatenate encodings with and without features")
        return ImageEncoding(
            torch.cat([p.embeddings for p in parts]),
            None if feats[0] is None else torch.cat(feats),  # type: ignore[arg-type]
        )


@runtime_checkable
class VisionLanguageEncoder(Protocol):
    """What the guard needs from a CLIP-style encoder: images and texts in one unit-norm embedding space.

    Attributes:
        id: the spec string the encoder was resolved from (provenance, logged with every audit run).
        weights_sha256: SHA-256 of the weights actually loaded (of the state dict for random-weight test models).
        logit_scale: the temperature-inverse the model was trained with (CLIP: 100).
        embed_dim: D, the embedding dimension.
        device: where embeddings are computed and returned.
        preprocess: the image preprocessing the model expects.
        batch_size: how many images are embedded per forward pass.
        feature_dim: F, the dimension of the trunk features (None when the encoder cannot give them).
    """

    id: str
    logit_scale: float
    embed_dim: int
    device: torch.device
    preprocess: ImagePreprocess
    batch_size: int
    feature_dim: int | None

    @property
    def weights_sha256(self) -> str: ...

    def encode_images(
        self, images: Any, *, normalize_input: bool = True, return_features: bool = False
    ) -> torch.Tensor | ImageEncoding:
        """Embed images: a (B, C, H, W) tensor in [0, 1] or a sequence of (H, W) / (H, W, 3) / (C, H, W) images.

        Args:
            images: the images, values in [0, 1] (uint8 is divided by 255), any size; gray images are repeated to
                RGB. An image with values outside [0, 1] is min-max scaled to [0, 1] on its own, with an
                ``ImageRangeWarning`` (see :mod:`tanl_guard.encoders._images`); NaN or infinite values raise
                ``ValueError``.
            normalize_input: apply the encoder's mean/std; False feeds the resized pixels as they are (TANL's
                synthetic noise images).
            return_features: also return the image trunk's pooled features from the same forward pass.

        Returns:
            (B, D) float32 L2-normalised embeddings on ``device``; with ``return_features`` an
            :class:`ImageEncoding` holding them and the (B, F) trunk features.
        """
        ...

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Embed texts.

        Args:
            texts: the prompts.
            batch_size: prompts per forward pass (encoder default when None).
            progress: show a tqdm progress bar on stderr.

        Returns:
            (T, D) float32 L2-normalised embeddings on ``device``.
        """
        ...


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, failing early when CUDA is asked for but absent.

    Args:
        device: the device string or object.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(dev)!r} was requested but CUDA is not available on this machine")
    return dev


def sha256_of_files(paths: Iterable[str]) -> str:
    """SHA-256 of one file, or of the sorted per-file digests of several (independent of where they lie).

    Args:
        paths: the weight files.
    """
    digests = []
    for path in paths:
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        digest = _FILE_DIGESTS.get(key)
        if digest is None:  # a 784 MB checkpoint takes seconds: hash each file version once per process
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(block)
            digest = _FILE_DIGESTS[key] = h.hexdigest()
        digests.append((str(path), digest))
    if len(digests) == 1:
        return digests[0][1]
    combined = hashlib.sha256()
    for _, digest in sorted(digests, key=lambda d: d[1]):
        combined.update(f"{digest}\n".encode())
    return combined.hexdigest()


def sha256_of_state_dict(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, shapes, dtypes and values), for weights not read from a file.

    Args:
        module: the model.
    """
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class BaseEncoder(abc.ABC):
    """Shared implementation of :class:`VisionLanguageEncoder`: input checks, preprocessing, batching, norms.

    Subclasses set the attributes in ``__init__`` and implement :meth:`_embed_pixels`, :meth:`_embed_texts` and
    :meth:`_compute_weights_sha256`.

    Args:
        id: the spec string (provenance).
        embed_dim: D.
        logit_scale: the model's logit scale.
        preprocess: the model's image preprocessing.
        device: where to compute.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass.
    """

    def __init__(
        self,
        *,
        id: str,
        embed_dim: int,
        logit_scale: float,
        preprocess: ImagePreprocess,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        text_batch_size: int = 256,
    ) -> None:
        if int(batch_size) < 1 or int(text_batch_size) < 1:
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {text_batch_size}")
        self.id = str(id)
        self.embed_dim = int(embed_dim)
        self.logit_scale = float(logit_scale)
        self.preprocess = preprocess
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.text_batch_size = int(text_batch_size)
        self.feature_dim: int | None = None  # set by encoders that implement _embed_pixels_with_features
        self._weights_sha256: str | None = None

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the loaded weights, computed on first use (hashing a large file takes a moment)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = self._compute_weights_sha256()
        return self._weights_sha256

    @abc.abstractmethod
    def _compute_weights_sha256(self) -> str:
        """Hash the weights this encoder loaded."""

    @abc.abstractmethod
    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 3, S, S) preprocessed pixels on ``device`` -> (b, D) embeddings (any norm)."""

    @abc.abstractmethod
    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        """A list of prompts -> (t, D) embeddings (any norm) on ``device``."""

    def _embed_pixels_with_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) preprocessed pixels -> ((b, D) embeddings, (b, F) trunk features), one forward pass."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.id}) cannot return image-trunk features; use the joint embeddings as "
            "features instead (feature source 'embedding')"
        )

    def encode_images(
        self, images: Any, *, normalize_input: bool = True, return_features: bool = False
    ) -> torch.Tensor | ImageEncoding:
        """Embed images; see :meth:`VisionLanguageEncoder.encode_images`.

        Args:
            images: a (B, C, H, W) tensor in [0, 1] (C = 1 or 3), or a sequence of numpy arrays / tensors of shape
                (H, W), (H, W, 3) or (1|3, H, W) in [0, 1] (uint8 is divided by 255), any size. Images outside
                [0, 1] are min-max scaled, each on its own, with an ``ImageRangeWarning``.
            normalize_input: apply the encoder's mean/std after resizing; False skips it.
            return_features: also return the trunk features (same forward pass) in an :class:`ImageEncoding`.

        Returns:
            (B, D) float32 L2-normalised embeddings on ``device``, or an :class:`ImageEncoding` with
            ``return_features``.

        Raises:
            NotImplementedError: ``return_features`` on an encoder without trunk features.
        """
        if return_features and self.feature_dim is None:
            self._embed_pixels_with_features(torch.empty(0))  # raises the explanation
        pp = self.preprocess
        outputs = []
        features = []
        with torch.inference_mode():
            for pixels in iter_pixel_batches(
                images,
                size=pp.size,
                resize=pp.resize_to,
                interpolation=pp.interpolation,
                squash=pp.resize_mode == "squash",
                mean=pp.mean if normalize_input else None,
                std=pp.std if normalize_input else None,
                batch_size=self.batch_size,
                device=self.device,
            ):
                if return_features:
                    embedded, trunk = self._embed_pixels_with_features(pixels)
                    outputs.append(self._normalize(embedded))
                    features.append(trunk.to(device=self.device, dtype=torch.float32))
                else:
                    outputs.append(self._normalize(self._embed_pixels(pixels)))
        if not outputs:
            embeddings = torch.empty(0, self.embed_dim, dtype=torch.float32, device=self.device)
            if not return_features:
                return embeddings
            return ImageEncoding(embeddings, torch.empty(0, int(self.feature_dim or 0), device=self.device))
        if not return_features:
            return torch.cat(outputs)
        return ImageEncoding(torch.cat(outputs), torch.cat(features))

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Embed texts; see :meth:`VisionLanguageEncoder.encode_texts`.

        Args:
            texts: the prompts (a sequence of strings, not one string).
            batch_size: prompts per forward pass; ``text_batch_size`` when None.
            progress: show a tqdm progress bar on stderr.

        Returns:
            (T, D) float32 L2-normalised embeddings on ``device``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string: wrap it in a list")
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must all be strings, got {sorted(set(bad))}")
        step = int(batch_size or self.text_batch_size)
        if step < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Batches of similar length pad little: about twice as fast on a 70,000-word corpus with a BERT tower.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        starts = range(0, len(texts), step)
        if progress:
            tqdm = optional_import("tqdm", "cli", "progress bars").tqdm
            starts = tqdm(starts, total=len(starts), desc="encode texts", unit="batch", file=sys.stderr)
        outputs = []
        with torch.inference_mode():
            for start in starts:
                outputs.append(self._normalize(self._embed_texts(ordered[start : start + step])))
        if not outputs:
            return torch.empty(0, self.embed_dim, dtype=torch.float32, device=self.device)
        embeddings = torch.cat(outputs)
        return embeddings[torch.argsort(torch.tensor(order, device=embeddings.device))].clone()

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.device, dtype=torch.float32)
        return torch.nn.functional.normalize(x, dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, embed_dim={self.embed_dim}, device={str(self.device)!r})"
