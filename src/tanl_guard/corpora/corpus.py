# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The :class:`Corpus` of negative labels: labels with their kind and source, de-duplication and ID-label removal.

Rules (documented in docs/corpora.md):

* Labels are compared by a key: Unicode NFKC, case-folded, underscores as spaces, runs of whitespace collapsed,
  surrounding whitespace stripped. Two labels with the same key are duplicates; the first one is kept.
* NegLabel's rule: an adjective whose key also occurs as a label of any other kind (noun, concept, user) is removed,
  wherever it stands.
* :meth:`Corpus.without_id_labels` removes every label whose key (or key with hyphens as spaces) equals an ID
  label or one of its simple variants (leading article dropped, hyphens as spaces, regular and common Latin/Greek plural and singular
  forms of the last word).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from tanl_guard.corpora.prompts import make_prompts

__all__ = [
    "KINDS",
    "Corpus",
    "normalize_label",
    "clean_label",
    "label_variants",
    "deduplicate",
    "combine_corpora",
]

KINDS: tuple[str, ...] = ("noun", "adjective", "concept", "user")

_SPACES = re.compile(r"\s+")
_ARTICLES = ("a ", "an ", "the ")
# (singular ending, plural ending), tried both ways on the last word.
_PLURALS: tuple[tuple[str, str], ...] = (
    ("", "s"),
    ("", "es"),
    ("y", "ies"),
    ("us", "i"),
    ("um", "a"),
    ("is", "es"),
    ("a", "ae"),
    ("ex", "ices"),
    ("ix", "ices"),
    ("on", "a"),
    ("f", "ves"),
    ("fe", "ves"),
)


def clean_label(label: str) -> str:
    """A label for display and prompting: NFKC, underscores as spaces, whitespace collapsed and stripped.

    Args:
        label: raw label text.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", label).replace("_", " ")).strip()


def normalize_label(label: str) -> str:
    """The comparison key of a label: :func:`clean_label`, case-folded.

    Args:
        label: raw label text.
    """
    return clean_label(label).casefold()


def label_variants(label: str) -> set[str]:
    """The keys treated as the same label as ``label`` when removing ID labels.

    The key itself, without a leading article, with hyphens as spaces, and with the last word turned into its
    regular or common Latin/Greek plural or singular ("tumor"/"tumors", "metastasis"/"metastases",
    "vertebra"/"vertebrae", "bronchus"/"bronchi", "body"/"bodies"). A few generated forms are not English words
    ("tumores"); they only matter if a corpus label happens to spell them.

    Args:
        label: an ID label.
    """
    key = normalize_label(label)
    bases = {key, key.replace("-", " ")}
    for base in list(bases):
        for article in _ARTICLES:
            if base.startswith(article) and len(base) > len(article):
                bases.add(base[len(article) :])
    out = set(bases)
    for base in bases:
        head, _, last = base.rpartition(" ")
        prefix = f"{head} " if head else ""
        for singular, plural in _PLURALS:
            if last.endswith(singular) and len(last) > len(singular) + 1:
                out.add(prefix + last[: len(last) - len(singular)] + plural)
            if last.endswith(plural) and len(last) > len(plural) + 1:
                out.add(prefix + last[: len(last) - len(plural)] + singular)
    return out


def deduplicate(
    labels: Sequence[str], kinds: Sequence[str], sources: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Remove duplicate labels (same key, first kept) and adjectives that also occur as another kind.

    Args:
        labels: cleaned labels.
        kinds: the kind of each label.
        sources: the source of each label.

    Returns:
        The kept ``(labels, kinds, sources)``, in their original order.
    """
    keys = [normalize_label(label) for label in labels]
    non_adjective = {key for key, kind in zip(keys, kinds) if kind != "adjective"}
    seen: set[str] = set()
    out_l, out_k, out_s = [], [], []
    for label, key, kind, source in zip(labels, keys, kinds, sources):
        if not key or key in seen or (kind == "adjective" and key in non_adjective):
            continue
        seen.add(key)
        out_l.append(label)
        out_k.append(kind)
        out_s.append(source)
    return tuple(out_l), tuple(out_k), tuple(out_s)


@dataclass(frozen=True)
class Corpus:
    """A de-duplicated list of negative labels.

    Args:
        labels: the labels, cleaned.
        kinds: the kind of each label (``"noun"``, ``"adjective"``, ``"concept"``, ``"user"``); it picks the
            prompt template and the group for per-kind selection.
        sources: where each label came from, e.g. ``"wordnet:noun.artifact"``, ``"dicom:SCT"``, ``"user:neg.txt"``.
        name: the spec the corpus was loaded from (informative; not part of :attr:`sha256`).
    """

    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    sources: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("labels", "kinds", "sources"):
            if not isinstance(getattr(self, field), tuple):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        if not len(self.labels) == len(self.kinds) == len(self.sources):
            raise ValueError(
                f"labels, kinds and sources differ in length: {len(self.labels)}, {len(self.kinds)}, {len(self.sources)}"
            )

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[str],
        kind: str | Sequence[str] = "user",
        source: str | Sequence[str] = "user",
        name: str = "",
    ) -> Corpus:
        """Build a corpus from raw labels: cleaned and de-duplicated.

        Args:
            labels: raw labels.
            kind: one kind for all, or one per label.
            source: one source for all, or one per label.
            name: the corpus name.
        """
        cleaned = [clean_label(label) for label in labels]
        kinds = [kind] * len(cleaned) if isinstance(kind, str) else list(kind)
        sources = [source] * len(cleaned) if isinstance(source, str) else list(source)
        return cls(*deduplicate(cleaned, kinds, sources), name=name)

    def __len__(self) -> int:
        return len(self.labels)

    def __add__(self, other: Corpus) -> Corpus:
        return combine_corpora(self, other)

    @cached_property
    def sha256(self) -> str:
        """Content hash over the ordered (kind, label) pairs; sources and name do not enter it."""
        digest = hashlib.sha256(b"tanl_guard.corpus.v1\n")
        for kind, label in zip(self.kinds, self.labels):
            digest.update(f"{kind}\t{label}\n".encode())
        return digest.hexdigest()

    def kind_counts(self) -> dict[str, int]:
        """Number of labels per kind."""
        return dict(Counter(self.kinds))

    def source_counts(self) -> dict[str, int]:
        """Number of labels per source."""
        return dict(Counter(self.sources))

    def kind_ids(self) -> torch.Tensor:
        """(N,) integer kind of each label, numbered in :data:`KINDS` order (others after), for
        :func:`tanl_guard.selection.select_farthest`."""
        order = list(KINDS) + sorted(set(self.kinds) - set(KINDS))
        index = {kind: i for i, kind in enumerate(order)}
        return torch.tensor([index[kind] for kind in self.kinds], dtype=torch.long)

    def subset(self, indices: Iterable[int] | torch.Tensor) -> Corpus:
        """The labels at ``indices``, in that order.

        Args:
            indices: positions into this corpus.
        """
        idx = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        return Corpus(
            tuple(self.labels[i] for i in idx),
            tuple(self.kinds[i] for i in idx),
            tuple(self.sources[i] for i in idx),
            name=self.name,
        )

    def prompts(self, templates: Mapping[str, str] | None = None) -> list[str]:
        """One prompt per label from its kind's template (defaults in ``data/prompts.json``).

        Args:
            templates: overrides, kind -> template with one ``{}``.
        """
        return make_prompts(self.labels, self.kinds, templates)

    def without_id_labels(self, id_labels: Iterable[str]) -> Corpus:
        """This corpus without the ID labels and their simple variants (see :func:`label_variants`).

        Args:
            id_labels: the in-distribution class names.
        """
        drop: set[str] = set()
        for label in id_labels:
            drop |= label_variants(label)
        keep = []
        for i, label in enumerate(self.labels):
            key = normalize_label(label)
            if key not in drop and key.replace("-", " ") not in drop:
                keep.append(i)
        return self.subset(keep)


def combine_corpora(*corpora: Corpus, name: str | None = None) -> Corpus:
    """Concatenate corpora in order and de-duplicate (see :func:`deduplicate`).

    Args:
        corpora: the parts.
        name: the combined name (default: the parts' names joined by ``+``).
    """
    labels = [label for c in corpora for label in c.labels]
    kinds = [kind for c in corpora for kind in c.kinds]
    sources = [source for c in corpora for source in c.sources]
    if name is None:
        name = "+".join(c.name for c in corpora if c.name)
    return Corpus(*deduplicate(labels, kinds, sources), name=name)
