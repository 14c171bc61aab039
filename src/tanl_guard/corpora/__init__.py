# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Negative-label corpora: WordNet (NegLabel's recipe, shipped), DICOM PS3.16 concepts (from pydicom), user files;
combination and de-duplication, prompts, a cached embedding, and selection against the ID anchors."""

from __future__ import annotations

from tanl_guard.corpora.cache import PART_SIZE, CacheWarning, cache_path, default_cache_dir, embed_corpus
from tanl_guard.corpora.corpus import KINDS, Corpus, combine_corpora, label_variants, normalize_label
from tanl_guard.corpora.dicom_concepts import dicom_groups, load_dicom_concepts
from tanl_guard.corpora.prompts import default_templates
from tanl_guard.corpora.report import build_corpus_report, format_corpus
from tanl_guard.corpora.select import drop_near_id, max_similarity_to_id
from tanl_guard.corpora.spec import load_corpus
from tanl_guard.corpora.user import load_user_corpus, read_label_file
from tanl_guard.corpora.wordnet import load_wordnet

__all__ = [
    "KINDS",
    "PART_SIZE",
    "Corpus",
    "CacheWarning",
    "build_corpus_report",
    "cache_path",
    "combine_corpora",
    "default_cache_dir",
    "default_templates",
    "dicom_groups",
    "drop_near_id",
    "embed_corpus",
    "format_corpus",
    "label_variants",
    "load_corpus",
    "load_dicom_concepts",
    "load_user_corpus",
    "load_wordnet",
    "max_similarity_to_id",
    "normalize_label",
    "read_label_file",
]
