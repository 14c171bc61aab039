# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Corpus filtering against the ID anchors with the encoder in use: CSP's near-synonym pre-filter.

NegLabel's distance selection is the detectors' own (:mod:`tanl_guard.selection`, applied by the NegLabel and
AdaNeg detectors), so that there is one rule and one precedence of ``n_select`` over ``share``."""

from __future__ import annotations

import torch

from tanl_guard.corpora.corpus import Corpus

__all__ = ["max_similarity_to_id", "drop_near_id"]


def _check(corpus_embeddings: torch.Tensor, corpus: Corpus, id_embeddings: torch.Tensor) -> None:
    if corpus_embeddings.ndim != 2 or corpus_embeddings.shape[0] != len(corpus):
        raise ValueError(f"expected ({len(corpus)}, D) corpus embeddings, got {tuple(corpus_embeddings.shape)}")
    if id_embeddings.ndim != 2 or id_embeddings.shape[1] != corpus_embeddings.shape[1] or id_embeddings.shape[0] == 0:
        raise ValueError(f"expected (C, {corpus_embeddings.shape[1]}) ID embeddings, got {tuple(id_embeddings.shape)}")


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
