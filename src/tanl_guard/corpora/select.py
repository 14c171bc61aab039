# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus selection against the ID anchors with the encoder in use: NegLabel's distance filter and CSP's
near-synonym pre-filter. The math lives in :mod:`tanl_guard.selection`."""

from __future__ import annotations

import torch

from tanl_guard.corpora.corpus import Corpus
from tanl_guard.selection import distance_to_id, select_farthest

__all__ = ["select_negatives", "max_similarity_to_id", "drop_near_id"]


def _check(corpus_embeddings: torch.Tensor, corpus: Corpus, id_embeddings: torch.Tensor) -> None:
    if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] != len(corpus):
        raise ValueError(f"expected ({len(corpus)}, D) corpus embeddings, got {tuple(corpus_embeddings.shape)}")
    if id_embeddings.ndim != 2 or id_embeddings.shape[1] != corpus_embeddings.shape[1] or id_embeddings.shape[0] == 0:
        raise ValueError(f"expected (C, {corpus_embeddings.shape[1]}) ID embeddings, got {tuple(id_embeddings.shape)}")


def select_negatives(
    corpus_embeddings: torch.Tensor,
    corpus: Corpus,
    id_embeddings: torch.Tensor,
    share: float | None = 0.15,
    n_select: int | None = None,
    quantile: float = 0.95,
) -> torch.Tensor:
    """NegLabel's static negative set: the labels farthest from the ID set, chosen separately within each kind.

    Distance of a label = the ``quantile`` of its cosine similarities to the ID embeddings (smaller = farther).
    Used for NegLabel's and AdaNeg's static set; TANL itself searches the whole de-duplicated pool.

    Args:
        corpus_embeddings: (N, D) unit-norm, row i for ``corpus.labels[i]`` (from :func:`embed_corpus`).
        corpus: the corpus (its kinds group the selection: nouns and adjectives separately).
        id_embeddings: (C, D) unit-norm ID anchors from the same encoder.
        share: keep this fraction of every kind (NegLabel official: 0.15). Ignored when ``n_select`` is given.
        n_select: keep this many in total, split over kinds in proportion to their sizes (OpenOOD-VLM: 10,000).
        quantile: eta of the distance (0.95).

    Returns:
        Sorted (ascending) indices into the corpus.
    """
    _check(corpus_embeddings, corpus, id_embeddings)
    distances = distance_to_id(corpus_embeddings.float(), id_embeddings.float().to(corpus_embeddings.device), quantile)
    if n_select is not None:
        share = None
    return select_farthest(distances, n_select=n_select, share=share, kinds=corpus.kind_ids().to(distances.device))


def max_similarity_to_id(
    corpus_embeddings: torch.Tensor, id_embeddings: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """(N,) the highest cosine similarity of each corpus label to any ID anchor.

    Args:
        corpus_embeddings: (N, D) unit-norm.
        id_embeddings: (C, D) unit-norm.
        chunk: rows per matrix product (bounds memory).
    """
    id_embeddings = id_embeddings.float().to(corpus_embeddings.device)
    out = torch.empty(corpus_embeddings.shape[0], dtype=torch.float32, device=corpus_embeddings.device)
    for start in range(0, corpus_embeddings.shape[0], chunk):
        out[start : start + chunk] = (corpus_embeddings[start : start + chunk].float() @ id_embeddings.T).amax(dim=1)
    return out


def drop_near_id(
    corpus_embeddings: torch.Tensor, corpus: Corpus, id_embeddings: torch.Tensor, threshold: float = 0.95
) -> torch.Tensor:
    """Indices of the labels to keep after dropping those too close to an ID anchor (CSP's rule).

    A label whose maximum cosine similarity to the ID anchors exceeds ``threshold`` is treated as a synonym of an
    ID class (e.g. a DICOM concept that names the ID anatomy) and dropped. Apply with
    ``corpus.subset(kept)`` and ``corpus_embeddings[kept]``.

    Args:
        corpus_embeddings: (N, D) unit-norm, row i for ``corpus.labels[i]``.
        corpus: the corpus.
        id_embeddings: (C, D) unit-norm ID anchors from the same encoder.
        threshold: the cosine above which a label is dropped (0.95).

    Returns:
        Sorted (ascending) indices of the kept labels.
    """
    _check(corpus_embeddings, corpus, id_embeddings)
    sims = max_similarity_to_id(corpus_embeddings, id_embeddings)
    return torch.nonzero(sims <= threshold).flatten()
