# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""open_clip models (CLIP, OpenCLIP, SigLIP, BiomedCLIP, custom JSON architectures) behind the encoder protocol.

Weights are only ever read from local files: a checkpoint path, a ``local-dir:`` folder, or the local Hugging Face
cache. A Hugging Face text tower (``hf_model_name`` in the model config, as in BiomedCLIP) is pointed at a local
folder too, so loading never touches the network.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tanl_guard._optional import optional_import
from tanl_guard.encoders._quiet import quiet_transformers
from tanl_guard.encoders.base import BaseEncoder, ImagePreprocess, sha256_of_files, sha256_of_state_dict
from tanl_guard.encoders.errors import EncoderNotAvailable
from tanl_guard.encoders.hf_cache import cached_snapshot, has_tokenizer_files, hf_repo_cache_dir

__all__ = ["OpenCLIPEncoder", "load_open_clip", "load_open_clip_dir", "RANDOM_WEIGHTS"]

#: The PRETRAINED value that asks for random weights (``open_clip:ARCH:random``): tests and speed checks only.
RANDOM_WEIGHTS = "random"

_CHECKPOINT_PREFERENCE = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


def _open_clip() -> Any:
    return optional_import("open_clip", "clip", "open_clip encoders")


def _preprocess_from_model(model: torch.nn.Module) -> ImagePreprocess:
    cfg = _open_clip().get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square model input {tuple(size)} is not supported")
        size = size[0]
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear", "nearest"):
        interpolation = "bicubic"
    resize_mode = cfg.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        # "longest" pads to a square; cropping the short side keeps the model's scale, which matters more here
        logging.getLogger(__name__).warning("resize_mode %r is approximated by 'shortest'", resize_mode)
        resize_mode = "shortest"
    return ImagePreprocess(
        size=int(size),
        mean=tuple(float(m) for m in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),  # type: ignore[arg-type]
        std=tuple(float(s) for s in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),  # type: ignore[arg-type]
        interpolation=interpolation,
        resize_mode=resize_mode,
    )


def _embed_dim(model: torch.nn.Module) -> int | None:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return int(projection.shape[1])
    for tower in ("text", "visual"):
        dim = getattr(getattr(model, tower, None), "output_dim", None)
        if isinstance(dim, int):
            return dim
    return None


class OpenCLIPEncoder(BaseEncoder):
    """An open_clip model and its tokenizer as a :class:`~tanl_guard.encoders.base.VisionLanguageEncoder`.

    Build it with :func:`tanl_guard.encoders.resolve` (``"open_clip:ARCH:PRETRAINED"``, ``"biomedclip"``, ...) or
    wrap a model you already hold.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (moved to ``device`` and put in eval mode here).
        tokenizer: the matching open_clip tokenizer (callable: list of str -> token tensor).
        id: the spec string, for provenance.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        checkpoint_files: the weight files the model was loaded from; ``weights_sha256`` hashes them, or the
            state dict when empty (random weights).
        preprocess: image preprocessing; the model's own open_clip preprocess config when None.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        id: str,
        device: str | torch.device = "cpu",
        checkpoint_files: tuple[str, ...] = (),
        preprocess: ImagePreprocess | None = None,
        batch_size: int = 32,
        text_batch_size: int = 256,
    ) -> None:
        logit_scale = getattr(model, "logit_scale", None)
        if not isinstance(logit_scale, torch.Tensor):
            raise ValueError("model has no logit_scale parameter; is it an open_clip CLIP model?")
        super().__init__(
            id=id,
            embed_dim=0,
            logit_scale=float(logit_scale.detach().float().exp().item()),
            preprocess=preprocess if preprocess is not None else _preprocess_from_model(model),
            device=device,
            batch_size=batch_size,
            text_batch_size=text_batch_size,
        )
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.checkpoint_files = tuple(str(f) for f in checkpoint_files)
        self._dtype = next(model.parameters()).dtype
        dim = _embed_dim(model)
        if dim is None:  # an unusual tower: ask the model
            dim = int(self.encode_texts([""]).shape[1])
        self.embed_dim = int(dim)
        self.feature_dim = _trunk_dim(self.model.visual)

    def _compute_weights_sha256(self) -> str:
        if self.checkpoint_files:
            return sha256_of_files(self.checkpoint_files)
        return sha256_of_state_dict(self.model)

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self._dtype))

    def _embed_pixels_with_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the visual tower's own forward, split before its projection into the joint space
        visual, x = self.model.visual, pixels.to(self._dtype)
        if _is_timm_tower(visual):  # BiomedCLIP and other timm trunks: trunk (pooled) -> its classifier -> head
            trunk = visual.trunk
            pre = trunk.forward_head(trunk.forward_features(x), pre_logits=True)
            if pre.ndim == 2:  # the classifier is the projection when open_clip adds none (proj "none")
                return visual.head(trunk.get_classifier()(pre)), pre
            # tokens or a feature map for an attention-pooling head: average them
            return visual.head(pre), (pre.mean(dim=1) if pre.ndim == 3 else pre.flatten(2).mean(dim=2))
        if _is_vit_tower(visual):  # open_clip's VisionTransformer: embeds -> transformer -> pool -> @ proj
            pooled, _ = visual._pool(visual.transformer(visual._embeds(x)))
            return (pooled @ visual.proj if visual.proj is not None else pooled), pooled
        if _is_resnet_tower(visual):  # ModifiedResNet: its attention pool projects, so average-pool layer4
            x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
            return visual.attnpool(x), x.mean(dim=(2, 3))
        return super()._embed_pixels_with_features(pixels)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts)
        return self.model.encode_text(tokens.to(self.device))


def _is_timm_tower(visual: torch.nn.Module) -> bool:
    trunk = getattr(visual, "trunk", None)
    return hasattr(visual, "head") and all(
        hasattr(trunk, name) for name in ("forward_features", "forward_head", "get_classifier", "num_features")
    )


def _is_vit_tower(visual: torch.nn.Module) -> bool:
    return all(hasattr(visual, name) for name in ("_embeds", "transformer", "_pool", "proj")) and not getattr(
        visual, "output_tokens", False
    )


def _is_resnet_tower(visual: torch.nn.Module) -> bool:
    return all(hasattr(visual, name) for name in ("stem", "layer4", "attnpool"))


def _trunk_dim(visual: torch.nn.Module) -> int | None:
    """F of the trunk features, or None for a visual tower whose forward is not split here."""
    if _is_timm_tower(visual):
        return int(visual.trunk.num_features)
    if _is_vit_tower(visual):
        return int(visual.proj.shape[0]) if visual.proj is not None else int(visual.output_dim)
    if _is_resnet_tower(visual):
        return int(visual.layer4[-1].bn3.num_features) if hasattr(visual.layer4[-1], "bn3") else None
    return None


# -- loading --------------------------------------------------------------------------------------------------


def _find_checkpoint(folder: Path) -> Path | None:
    files = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(ext) if p.is_file()]
    for name in _CHECKPOINT_PREFERENCE:
        for p in files:
            if p.name == name:
                return p
    # a folder with a single other checkpoint is unambiguous; several are not
    return files[0] if len(files) == 1 else None


def _register_config(open_clip: Any, arch: str, config: Any, spec: str) -> None:
    """Make ``arch`` known to open_clip from a JSON file (named ARCH.json) or a folder of them."""
    path = Path(config)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: model config {path} does not exist")
    if path.is_file():
        if path.stem != arch:
            raise ValueError(
                f"{spec}: open_clip names an architecture after its config file, so {path.name} defines "
                f"{path.stem!r}, not {arch!r}; rename it to {arch}.json"
            )
        cfg = json.loads(path.read_text())
        if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            raise ValueError(f"{spec}: {path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    open_clip.add_model_config(path)
    if arch not in open_clip.list_models():
        raise ValueError(f"{spec}: no config named {arch}.json in {path}")


def _hf_dir(name: str, kind: str, spec: str, cache_dir: str | None, required: tuple[str, ...]) -> Path:
    """A local folder for a Hugging Face id: the path itself, or its snapshot in the local cache."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    snap = cached_snapshot(name, required=required, cache_dir=cache_dir)
    if snap is None:
        raise EncoderNotAvailable(
            spec,
            f"the text tower's {kind} {name!r} is neither a local folder nor in the Hugging Face cache; "
            f"pass text_dir=PATH (a folder with the text model's config.json and tokenizer files)",
            searched=[str(hf_repo_cache_dir(name, cache_dir))],
        )
    return snap


def _local_text_tower(
    text_cfg: Mapping[str, Any], folder: Path | None, text_dir: str | None, cache_dir: str | None, spec: str
) -> tuple[dict[str, Any], Path | None]:
    """Rewrite an hf text tower's model/tokenizer names to local folders; returns (text_cfg, tokenizer folder)."""
    cfg = copy.deepcopy(dict(text_cfg))
    if "hf_model_name" not in cfg:
        return cfg, None
    candidates = [Path(text_dir).expanduser()] if text_dir else []
    if folder is not None:
        candidates.append(folder)
    model_dir = next((c for c in candidates if (c / "config.json").is_file()), None)
    if model_dir is None:
        model_dir = _hf_dir(cfg["hf_model_name"], "model config", spec, cache_dir, ("config.json",))
    tok_dir = next((c for c in candidates if has_tokenizer_files(c)), None)
    if tok_dir is None:
        tok_name = cfg.get("hf_tokenizer_name") or cfg["hf_model_name"]
        tok_dir = _hf_dir(tok_name, "tokenizer", spec, cache_dir, ())
        if not has_tokenizer_files(tok_dir):
            raise EncoderNotAvailable(spec, f"no tokenizer files in {tok_dir}", searched=[str(tok_dir)])
    cfg["hf_model_name"] = str(model_dir)
    cfg["hf_tokenizer_name"] = str(tok_dir)
    # the full checkpoint holds the text weights; the bare config only shapes the tower
    cfg["hf_model_pretrained"] = False
    return cfg, tok_dir


def _tokenizer(open_clip: Any, text_cfg: Mapping[str, Any], tok_dir: Path | None, fallback_name: str) -> Any:
    if tok_dir is None:
        return open_clip.get_tokenizer(fallback_name)
    with quiet_transformers():
        return open_clip.tokenizer.HFTokenizer(
            str(tok_dir),
            context_length=text_cfg.get("context_length", 77),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **dict(text_cfg.get("tokenizer_kwargs", {})),
        )


def _create(open_clip: Any, name: str, pretrained: str | None, text_cfg: dict[str, Any] | None, **kwargs: Any) -> Any:
    extra = {"text_cfg": text_cfg} if text_cfg is not None and "hf_model_name" in text_cfg else {}
    with quiet_transformers():
        return open_clip.create_model(name, pretrained=pretrained, **kwargs, **extra)


def load_open_clip_dir(
    folder: str | os.PathLike[str],
    *,
    spec: str,
    device: str | torch.device = "cpu",
    text_dir: str | None = None,
    cache_dir: str | None = None,
    precision: str = "fp32",
    batch_size: int = 32,
    text_batch_size: int = 256,
) -> OpenCLIPEncoder:
    """Load an open_clip model from a folder laid out like a Hugging Face open_clip repo.

    The folder holds ``open_clip_config.json`` (``model_cfg`` and optional ``preprocess_cfg``) and a checkpoint
    (``open_clip_pytorch_model.bin``, ``open_clip_model.safetensors``, ...). A Hugging Face text tower reads its
    config/tokenizer from ``text_dir``, else from the folder itself, else from the local HF cache.

    Args:
        folder: the model folder.
        spec: the spec string, for the encoder id and error messages.
        device: where to compute.
        text_dir: a folder with the HF text tower's ``config.json`` and tokenizer files.
        cache_dir: the Hugging Face hub cache to look in (environment default when None).
        precision: open_clip precision (``"fp32"``, ``"fp16"``, ``"bf16"``, ...).
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass.
    """
    open_clip = _open_clip()
    path = Path(folder).expanduser()
    config_path = path / "open_clip_config.json"
    if not config_path.is_file():
        raise EncoderNotAvailable(spec, f"no open_clip_config.json in {path}", searched=[str(path)])
    checkpoint = _find_checkpoint(path)
    if checkpoint is None:
        raise EncoderNotAvailable(
            spec, f"no checkpoint (e.g. open_clip_pytorch_model.bin) in {path}; refusing random weights",
            searched=[str(path)],
        )
    raw = json.loads(config_path.read_text())
    model_cfg = raw.get("model_cfg", raw)
    text_cfg, tok_dir = _local_text_tower(model_cfg.get("text_cfg", {}), path, text_dir, cache_dir, spec)
    # build without weights, then load the checkpoint chosen above (strictly), so what is hashed is what is loaded
    model = _create(
        open_clip, f"local-dir:{path}", None, text_cfg, device="cpu", precision=precision,
        load_weights=False, pretrained_text=False,
    )
    with quiet_transformers():
        open_clip.load_checkpoint(model, str(checkpoint), strict=True)
    tokenizer = _tokenizer(open_clip, text_cfg, tok_dir, f"local-dir:{path}")
    return OpenCLIPEncoder(
        model, tokenizer, id=spec, device=device, checkpoint_files=(str(checkpoint),),
        batch_size=batch_size, text_batch_size=text_batch_size,
    )


def _tag_checkpoint(open_clip: Any, arch: str, tag: str, spec: str, cache_dir: str | None) -> tuple[str, dict]:
    """The cached file of a pretrained tag, and the preprocess/quick_gelu settings the tag implies."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    searched = []
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"]), cfg
    hub = cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/" means the default file, "org/repo/name.bin" a given one
        repo_id, filename = (hub.rstrip("/"), "") if hub.endswith("/") else tuple(hub.rsplit("/", 1))
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            snap = cached_snapshot(repo_id, required=(name,), cache_dir=cache_dir)
            if snap is not None:
                return str(snap / name), cfg
        searched.append(str(hf_repo_cache_dir(repo_id, cache_dir)))
    url = cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file():
            return str(target), cfg
        searched.append(str(target))
    raise EncoderNotAvailable(spec, f"the weights of pretrained tag {arch}/{tag} are not cached", searched=searched)


def _pretrained_folder(pretrained: str, spec: str, cache_dir: str | None) -> Path:
    if pretrained.startswith("local-dir:"):
        folder = Path(pretrained[len("local-dir:") :]).expanduser()
        if not folder.is_dir():
            raise EncoderNotAvailable(spec, f"folder {folder} does not exist", searched=[str(folder)])
        return folder
    repo_id = pretrained[len("hf-hub:") :]
    found = cached_snapshot(repo_id, cache_dir=cache_dir)
    if found is None:
        raise EncoderNotAvailable(
            spec, f"{repo_id} is not in the Hugging Face cache", searched=[str(hf_repo_cache_dir(repo_id, cache_dir))]
        )
    return found


def load_open_clip(
    spec_body: str,
    *,
    spec: str | None = None,
    device: str | torch.device = "cpu",
    model_config: str | os.PathLike[str] | None = None,
    text_dir: str | None = None,
    cache_dir: str | None = None,
    precision: str = "fp32",
    batch_size: int = 32,
    text_batch_size: int = 256,
) -> OpenCLIPEncoder:
    """Load the model an ``open_clip:...`` spec names (the part after ``open_clip:``).

    Accepted forms of ``spec_body``:

    - ``local-dir:PATH``: a folder with ``open_clip_config.json`` and a checkpoint (see :func:`load_open_clip_dir`);
    - ``hf-hub:ORG/REPO``: such a folder in the local Hugging Face cache;
    - ``ARCH:PRETRAINED``: an open_clip architecture (built in, or added from ``model_config`` or an ``ARCH.json``
      beside the checkpoint) with PRETRAINED one of: a checkpoint file; ``local-dir:PATH`` (a folder holding the
      checkpoint, and optionally ``ARCH.json`` or ``open_clip_config.json``); ``hf-hub:ORG/REPO``; a pretrained tag
      whose weights are already cached (e.g. ``laion2b_s34b_b79k``); or ``random`` (random weights, tests only).

    Args:
        spec_body: the spec without its ``open_clip:`` prefix.
        spec: the full spec, for the encoder id (``"open_clip:" + spec_body`` when None).
        device: where to compute.
        model_config: an architecture JSON file named ``ARCH.json`` (or a folder of them) to register with open_clip.
        text_dir: a folder with an HF text tower's ``config.json`` and tokenizer files.
        cache_dir: the Hugging Face hub cache to look in (environment default when None).
        precision: open_clip precision.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass.
    """
    open_clip = _open_clip()
    spec = spec or f"open_clip:{spec_body}"
    common: dict[str, Any] = dict(
        device=device, text_dir=text_dir, cache_dir=cache_dir, precision=precision,
        batch_size=batch_size, text_batch_size=text_batch_size,
    )
    if spec_body.startswith("local-dir:"):
        return load_open_clip_dir(spec_body[len("local-dir:") :], spec=spec, **common)
    if spec_body.startswith("hf-hub:"):
        repo_id = spec_body[len("hf-hub:") :]
        snap = cached_snapshot(repo_id, required=("open_clip_config.json",), cache_dir=cache_dir)
        if snap is None:
            raise EncoderNotAvailable(
                spec, f"{repo_id} is not in the Hugging Face cache",
                searched=[str(hf_repo_cache_dir(repo_id, cache_dir))],
            )
        return load_open_clip_dir(snap, spec=spec, **common)

    arch, sep, pretrained = spec_body.partition(":")
    if not arch or not sep or not pretrained:
        raise ValueError(
            f"{spec!r}: expected open_clip:ARCH:PRETRAINED (a checkpoint file, local-dir:PATH, hf-hub:ORG/REPO, a "
            f"cached pretrained tag, or '{RANDOM_WEIGHTS}'), open_clip:local-dir:PATH or open_clip:hf-hub:ORG/REPO"
        )
    if model_config is not None:
        _register_config(open_clip, arch, model_config, spec)

    checkpoint: Path | None = None
    if pretrained.startswith(("local-dir:", "hf-hub:")):
        folder = _pretrained_folder(pretrained, spec, cache_dir)
        if arch not in open_clip.list_models() and (folder / f"{arch}.json").is_file():
            _register_config(open_clip, arch, folder / f"{arch}.json", spec)
        if arch not in open_clip.list_models() and (folder / "open_clip_config.json").is_file():
            return load_open_clip_dir(folder, spec=spec, **common)
        checkpoint = _find_checkpoint(folder)
        if checkpoint is None:
            raise EncoderNotAvailable(spec, f"no single checkpoint file in {folder}", searched=[str(folder)])
    elif pretrained != RANDOM_WEIGHTS and Path(pretrained).expanduser().is_file():
        checkpoint = Path(pretrained).expanduser()
        if arch not in open_clip.list_models() and (checkpoint.parent / f"{arch}.json").is_file():
            _register_config(open_clip, arch, checkpoint.parent / f"{arch}.json", spec)
    if arch not in open_clip.list_models():
        raise ValueError(
            f"{spec!r}: unknown open_clip architecture {arch!r}; pass model_config=PATH/{arch}.json or put "
            f"{arch}.json beside the checkpoint"
        )

    file_arg: str | None = str(checkpoint) if checkpoint is not None else None
    kwargs: dict[str, Any] = {}
    if checkpoint is None and pretrained != RANDOM_WEIGHTS:
        if not open_clip.get_pretrained_cfg(arch, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise EncoderNotAvailable(
                spec,
                f"{pretrained!r} is neither an existing checkpoint file nor a pretrained tag of {arch}"
                + (f" (tags: {', '.join(tags)})" if tags else ""),
                searched=[str(Path(pretrained).expanduser().resolve())],
            )
        file_arg, tag_cfg = _tag_checkpoint(open_clip, arch, pretrained, spec, cache_dir)
        # loading the tag's file by path loses what the tag implied: keep its preprocessing and activation
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        kwargs["force_preprocess_cfg"] = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }

    model_cfg = open_clip.get_model_config(arch)
    text_cfg, tok_dir = _local_text_tower(model_cfg.get("text_cfg", {}), None, text_dir, cache_dir, spec)
    model = _create(
        open_clip, arch, file_arg, text_cfg, device="cpu", precision=precision, pretrained_text=False, **kwargs
    )
    tokenizer = _tokenizer(open_clip, text_cfg, tok_dir, arch)
    return OpenCLIPEncoder(
        model, tokenizer, id=spec, device=device, checkpoint_files=(file_arg,) if file_arg else (),
        batch_size=batch_size, text_batch_size=text_batch_size,
    )
