# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""ID anchors: the in-distribution columns a detector scores against, from label prompts and/or reference images.

Text anchors are zero-shot: each ID label's prompt-template ensemble, averaged and re-normalised (open_clip's
``build_zero_shot_classifier``). Image anchors are few-shot prototypes: the re-normalised mean embedding of a
handful of reference images of that label.

When image anchors help: whenever the encoder does not understand the ID labels' wording. A general VLM knows
"chest X-ray" only vaguely and site-specific labels ("post-op knee, lateral") not at all; the surrogate encoder
cannot read medical text at all (its text-prompted OOD scores on brain MRI are at chance, while image anchors
reached AUROC 0.94). A few reference images per label give the detector an ID direction the text tower cannot.
Text and image anchors combine: the same label may have one column of each kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tanl_guard.encoders.base import VisionLanguageEncoder
from tanl_guard.encoders.templates import DEFAULT_TEMPLATES

__all__ = ["IDAnchors", "build_id_anchors", "TEXT", "IMAGE"]

TEXT = "text"
IMAGE = "image"


@dataclass(frozen=True, kw_only=True)
class IDAnchors:
    """The ID columns: unit-norm embeddings with, per column, a name, a kind and the ID label it stands for.

    Attributes:
        embeddings: (C', D) float32 unit-norm anchor embeddings (the detector's ``id_text``).
        names: per column, a display name: the label for a text anchor, ``"<label> [image prototype]"`` for an
            image anchor.
        kinds: per column, ``"text"`` or ``"image"``.
        label_of: per column, the ID label it stands for (several columns may share one label).
        support: per column, how many prompts (text) or reference images (image) were averaged.
        encoder_id: the ``id`` of the encoder that made the embeddings (provenance).
        templates: the prompt templates of the text anchors.
    """

    embeddings: torch.Tensor
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    label_of: tuple[str, ...]
    support: tuple[int, ...] = ()
    encoder_id: str = ""
    templates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = int(self.embeddings.shape[0]) if self.embeddings.ndim == 2 else -1
        if n < 1:
            raise ValueError(f"embeddings must have shape (C', D) with C' >= 1, got {tuple(self.embeddings.shape)}")
        if not (len(self.names) == len(self.kinds) == len(self.label_of) == n):
            raise ValueError(
                f"names ({len(self.names)}), kinds ({len(self.kinds)}) and label_of ({len(self.label_of)}) must "
                f"each have one entry per column ({n})"
            )
        if self.support and len(self.support) != n:
            raise ValueError(f"support has {len(self.support)} entries for {n} columns")
        bad = sorted(set(self.kinds) - {TEXT, IMAGE})
        if bad:
            raise ValueError(f"kinds must be 'text' or 'image', got {bad}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def labels(self) -> tuple[str, ...]:
        """The distinct ID labels, in column order."""
        return tuple(dict.fromkeys(self.label_of))

    def label_indices(self) -> torch.Tensor:
        """(C',) index into :attr:`labels` of each column (to merge per-column predictions into labels)."""
        index = {label: i for i, label in enumerate(self.labels)}
        return torch.tensor([index[label] for label in self.label_of], dtype=torch.long)

    def columns(self, kind: str) -> tuple[int, ...]:
        """The column indices of one kind.

        Args:
            kind: ``"text"`` or ``"image"``.
        """
        return tuple(i for i, k in enumerate(self.kinds) if k == kind)

    def to(self, device: str | torch.device) -> IDAnchors:
        """A copy with the embeddings on ``device``.

        Args:
            device: the target device.
        """
        return IDAnchors(
            embeddings=self.embeddings.to(device), names=self.names, kinds=self.kinds, label_of=self.label_of,
            support=self.support, encoder_id=self.encoder_id, templates=self.templates,
        )


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        raise TypeError("templates must be a sequence of strings, not one string")
    out = tuple(templates)
    if not out:
        raise ValueError("templates is empty: text anchors need at least one template (e.g. '{}')")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ValueError(f"each template needs exactly one '{{}}' for the label, got {t!r}")
    return out


def _unique_labels(labels: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string")
    out = tuple(labels)
    for label in out:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{what} must be non-empty strings, got {label!r}")
    dupes = sorted({label for label in out if out.count(label) > 1})
    if dupes:
        raise ValueError(f"{what} contain duplicates: {dupes}")
    return out


def build_id_anchors(
    encoder: VisionLanguageEncoder,
    labels: Sequence[str] = (),
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    reference_images: Mapping[str, Any] | None = None,
    reference_embeddings: Mapping[str, torch.Tensor] | None = None,
) -> IDAnchors:
    """Embed ID labels (prompt ensembles) and/or reference images (prototypes) as ID anchor columns.

    Columns come in this order: one text column per entry of ``labels``, then one image column per key of
    ``reference_images``. A label may appear in both (two columns, one label) or in only one of them.

    Args:
        encoder: the encoder (any :class:`~tanl_guard.encoders.base.VisionLanguageEncoder`).
        labels: ID label names for text anchors, e.g. ``("brain MRI", "chest X-ray")``.
        templates: prompt templates, each with one ``{}``; every label's prompts are embedded, averaged and
            re-normalised. Defaults to :data:`~tanl_guard.encoders.templates.DEFAULT_TEMPLATES`.
        reference_images: label -> images of that label (anything ``encoder.encode_images`` accepts: a (N, C, H, W)
            tensor or a sequence of images); each label's embeddings are averaged and re-normalised.
        reference_embeddings: label -> (N, D) embeddings of its reference images, already computed with
            ``encoder`` (instead of ``reference_images``, when the caller encoded them for other uses too).

    Returns:
        the anchors, embeddings float32 on ``encoder.device``.

    Raises:
        ValueError: no labels and no reference images, duplicate labels, a template without ``{}``, or a label
            with no reference images.
    """
    labels = _unique_labels(labels, "labels")
    if reference_images and reference_embeddings:
        raise ValueError("give reference_images or reference_embeddings, not both")
    reference_images = dict(reference_images or reference_embeddings or {})
    image_labels = _unique_labels(tuple(reference_images), "reference image labels")
    if not labels and not image_labels:
        raise ValueError("build_id_anchors needs ID labels, reference images, or both")

    blocks: list[torch.Tensor] = []
    names: list[str] = []
    kinds: list[str] = []
    label_of: list[str] = []
    support: list[int] = []
    used_templates: tuple[str, ...] = ()

    if labels:
        used_templates = _check_templates(templates)
        prompts = [t.format(label) for label in labels for t in used_templates]
        emb = encoder.encode_texts(prompts).float()
        emb = emb.view(len(labels), len(used_templates), -1).mean(dim=1)
        blocks.append(torch.nn.functional.normalize(emb, dim=-1))
        names.extend(labels)
        kinds.extend([TEXT] * len(labels))
        label_of.extend(labels)
        support.extend([len(used_templates)] * len(labels))

    for label in image_labels:
        given = reference_images[label]
        emb = (given if reference_embeddings else encoder.encode_images(given)).float()
        if emb.shape[0] == 0:
            raise ValueError(f"no reference images for label {label!r}")
        blocks.append(torch.nn.functional.normalize(emb.mean(dim=0, keepdim=True), dim=-1))
        names.append(f"{label} [image prototype]")
        kinds.append(IMAGE)
        label_of.append(label)
        support.append(int(emb.shape[0]))

    device = getattr(encoder, "device", blocks[0].device)
    return IDAnchors(
        embeddings=torch.cat([b.to(device) for b in blocks]).contiguous(),
        names=tuple(names),
        kinds=tuple(kinds),
        label_of=tuple(label_of),
        support=tuple(support),
        encoder_id=str(getattr(encoder, "id", "")),
        templates=used_templates,
    )
