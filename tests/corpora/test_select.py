# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch

from tanl_guard.corpora import Corpus, drop_near_id, embed_corpus, max_similarity_to_id
from tanl_guard.selection import distance_to_id, select_farthest


def select_negatives(corpus_embeddings, corpus, id_embeddings, share=None, n_select=None):
    """NegLabel's farthest-per-kind selection on a real corpus, as the NegLabel/AdaNeg detectors apply it."""
    if corpus_embeddings.shape[0] != len(corpus):
        raise ValueError("one embedding per label")
    distances = distance_to_id(corpus_embeddings, id_embeddings, 0.95)
    return select_farthest(distances, n_select=n_select, share=share, kinds=corpus.kind_ids())

NOUNS = ["dog", "puppy", "wolf", "cat", "kitten", "volcano", "spreadsheet", "tax return", "glacier", "violin",
         "mortgage", "algebra"]  # fmt: skip
ADJECTIVES = ["furry", "canine", "feline", "fiscal", "volcanic", "orchestral", "algebraic", "barking"]


@pytest.fixture(scope="module")
def encoded(text_encoder, tmp_path_factory):
    corpus = Corpus.from_labels(NOUNS + ADJECTIVES, kind=["noun"] * len(NOUNS) + ["adjective"] * len(ADJECTIVES))
    cache = tmp_path_factory.mktemp("cache")
    embeddings = embed_corpus(text_encoder, corpus, cache_dir=cache, progress=False)
    id_embeddings = torch.nn.functional.normalize(
        text_encoder.encode_texts(["The nice dog.", "The nice cat.", "The nice hamster."]).float(), dim=-1
    )
    return corpus, embeddings, id_embeddings


def test_select_keeps_farthest_per_kind(encoded):
    corpus, embeddings, id_embeddings = encoded
    kept = select_negatives(embeddings, corpus, id_embeddings, share=0.5)
    kinds = [corpus.kinds[i] for i in kept.tolist()]
    assert kinds.count("noun") == len(NOUNS) // 2 and kinds.count("adjective") == len(ADJECTIVES) // 2
    # brute force: 0.95-quantile over 3 anchors is the element at sorted index floor(0.95 * 3) = 2, the maximum
    distance = (embeddings @ id_embeddings.T).max(dim=1).values
    for kind in ("noun", "adjective"):
        members = [i for i, k in enumerate(corpus.kinds) if k == kind]
        expected = sorted(sorted(members, key=lambda i: distance[i].item())[: len(members) // 2])
        assert [i for i in kept.tolist() if corpus.kinds[i] == kind] == expected
    chosen = {corpus.labels[i] for i in kept.tolist()}
    assert not {"dog", "puppy", "cat", "kitten"} & chosen  # the pets are nearest to the pet anchors
    assert not {"feline", "canine"} & chosen


def test_select_by_count(encoded):
    corpus, embeddings, id_embeddings = encoded
    kept = select_negatives(embeddings, corpus, id_embeddings, n_select=10)
    kinds = [corpus.kinds[i] for i in kept.tolist()]
    assert len(kept) == 10 and kinds.count("noun") == 6 and kinds.count("adjective") == 4  # 12:8 split
    assert kept.tolist() == sorted(kept.tolist())
    with pytest.raises(ValueError):
        select_negatives(embeddings[:3], corpus, id_embeddings)


def test_drop_near_id(encoded, text_encoder):
    corpus, embeddings, id_embeddings = encoded
    sims = max_similarity_to_id(embeddings, id_embeddings)
    assert sims.shape == (len(corpus),)
    assert torch.allclose(sims, (embeddings @ id_embeddings.T).max(dim=1).values, atol=1e-6)
    dog = corpus.labels.index("dog")
    kept = drop_near_id(embeddings, corpus, id_embeddings, threshold=0.95)
    assert dog not in kept.tolist()  # "The nice dog." is the ID prompt itself (cosine 1)
    assert corpus.labels.index("spreadsheet") in kept.tolist()
    assert len(drop_near_id(embeddings, corpus, id_embeddings, threshold=-1.0)) == 0
    assert len(drop_near_id(embeddings, corpus, id_embeddings, threshold=1.01)) == len(corpus)


def test_select_on_real_corpus_slice(text_encoder, tmp_path):
    from tanl_guard.corpora import load_corpus

    full = load_corpus("wordnet+dicom:group=modalities")
    corpus = full.subset(list(range(0, len(full) - 74, 1200)) + list(range(len(full) - 74, len(full), 4)))
    assert set(corpus.kinds) == {"noun", "adjective", "concept"}
    embeddings = embed_corpus(text_encoder, corpus, cache_dir=tmp_path, progress=False)
    anchors = ["The nice brain MRI.", "The nice head CT.", "The nice skull."]
    id_embeddings = torch.nn.functional.normalize(text_encoder.encode_texts(anchors).float(), dim=-1)
    kept = select_negatives(embeddings, corpus, id_embeddings, share=0.15).tolist()
    distance = (embeddings @ id_embeddings.T).max(dim=1).values  # quantile index floor(0.95 * 3) = 2 -> max
    for kind, count in corpus.kind_counts().items():
        members = [i for i, k in enumerate(corpus.kinds) if k == kind]
        farthest = sorted(sorted(members, key=lambda i: distance[i].item())[: int(0.15 * count)])
        assert [i for i in kept if corpus.kinds[i] == kind] == farthest
