# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""The shipped WordNet corpus (NegLabel's recipe; built by :mod:`tanl_guard.corpora.wordnet_build`)."""

from __future__ import annotations

import gzip
import io
from functools import lru_cache
from importlib import resources

from tanl_guard.corpora.corpus import Corpus, clean_label, deduplicate

__all__ = ["WORDNET_FILE_NAME", "wordnet_rows", "load_wordnet"]

WORDNET_FILE_NAME = "wordnet_words.tsv.gz"


@lru_cache(maxsize=1)
def wordnet_rows() -> tuple[tuple[str, str, str, bool], ...]:
    """The shipped rows ``(word, kind, lexfiles, head)`` as written by the builder (no de-duplication)."""
    blob = resources.files("tanl_guard.corpora").joinpath(f"data/{WORDNET_FILE_NAME}").read_bytes()
    rows = []
    with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(blob)), encoding="utf-8") as text:
        next(text)  # header
        for line in text:
            word, kind, lexfiles, head = line.rstrip("\n").split("\t")
            rows.append((word, kind, lexfiles, head == "1"))
    return tuple(rows)


def load_wordnet(nouns: bool = True, adjectives: bool = True, synonyms: bool = False) -> Corpus:
    """The WordNet corpus: nouns (all ``noun.*`` lexicographer files but ``noun.animal`` and ``noun.food``) and
    adjectives (``adj.all``, ``adj.pert``, ``adj.ppl``), de-duplicated case-insensitively, adjectives that also
    occur as nouns removed when both kinds are loaded.

    Args:
        nouns: include nouns (kind ``"noun"``).
        adjectives: include adjectives (kind ``"adjective"``).
        synonyms: include every lemma of each synset, not only its head word. False (default) gives NegLabel's
            pool (about 70k words); True about 120k.

    Returns:
        Nouns first, then adjectives; each label's source is ``"wordnet:<first lexicographer file>"``.
    """
    wanted = {k for k, on in (("noun", nouns), ("adjective", adjectives)) if on}
    if not wanted:
        raise ValueError("load_wordnet needs nouns, adjectives or both")
    labels, kinds, sources = [], [], []
    for word, kind, lexfiles, head in wordnet_rows():
        if kind in wanted and (head or synonyms):
            labels.append(clean_label(word))
            kinds.append(kind)
            sources.append("wordnet:" + lexfiles.split(",", 1)[0])
    name = "wordnet" if len(wanted) == 2 else ("wordnet:nouns" if nouns else "wordnet:adjectives")
    if synonyms:
        name += ",synonyms" if ":" in name else ":synonyms"
    return Corpus(*deduplicate(labels, kinds, sources), name=name)
